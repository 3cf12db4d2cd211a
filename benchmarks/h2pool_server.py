"""h2pool's own server as a separate process, for the benchmarks that need one.

Run as ``python -m benchmarks.h2pool_server MODE [--concurrency N]``; it listens on a free port
of 127.0.0.1, prints that port on a line of its own, and serves until SIGTERM. Modes:

* ``small``: answer every request with 200 and the 12-byte ``SMALL_BODY``;
* ``discard``: read the request body, throw it away, answer 200 with no body;
* ``hold``: never answer (streams stay open until the client goes away or the server stops),
  except ``/now``, answered 200 at once (a client can prove its connection up with it).

Every request gets its own task, as in ``tests/servers.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine

import h2pool

__all__ = ["MODES", "SMALL_BODY"]

SMALL_BODY = b"hello world\n"
"""The small response body, 12 bytes (the same as the small file the other peers serve)."""

Handler = Callable[[h2pool.H2Protocol, int, h2pool.HeaderList], Coroutine[None, None, None]]


async def small(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
    """Answer 200 with ``SMALL_BODY``."""
    await proto.start_response(stream_id, {":status": "200", "content-length": "12"})
    await proto.send_data(stream_id, SMALL_BODY, end_stream=True)


async def discard(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
    """Read the body to its end, keeping none of it, then answer 200."""
    while await proto.read_stream(stream_id, 1 << 20):
        pass
    await proto.start_response(stream_id, {":status": "200"}, end_stream=True)


async def hold(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
    """Never answer (the stream stays open until the server stops and cancels this), but
    answer ``/now`` at once."""
    if (":path", "/now") in headers:
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)
        return
    await asyncio.Event().wait()


MODES: dict[str, Handler] = {"small": small, "discard": discard, "hold": hold}
"""The handlers by mode name."""


async def serve(handler: Handler, concurrency: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    tasks: set[asyncio.Task[None]] = set()

    async def connected(proto: h2pool.H2Protocol) -> None:
        with contextlib.suppress(h2pool.H2PoolError):
            while True:
                stream_id, headers = await proto.recv_request()
                task = asyncio.create_task(handler(proto, stream_id, headers))
                tasks.add(task)
                task.add_done_callback(_discard_outcome(tasks))

    server = await h2pool.start_server(
        connected, "127.0.0.1", 0, concurrency=concurrency, backlog=1024
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _discard_outcome(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback forgetting a handler task and its outcome (a client may leave early)."""

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()

    return done


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(serve(MODES[args.mode], args.concurrency))


if __name__ == "__main__":
    main()
