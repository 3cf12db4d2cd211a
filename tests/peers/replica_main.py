"""A replica of a service for resilience tests: h2pool's own server in its own process.

Run as ``python -m tests.peers.replica_main PORT [--delay S] [--stall-every N] [--stall S]
[--status CODE]``. Every request is answered ``status`` (default 200) with the body
``b"ok"`` after ``delay`` seconds; every ``stall_every``-th request (counted from 1) waits
``stall`` seconds instead (a deterministic share: 20 is 5%). Two paths are not counted:
``/_replica/count`` answers the number of requests served so far (as text), and
``/_replica/set?status=503&delay=0.1`` changes the behaviour of the requests that follow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import urllib.parse
from dataclasses import dataclass

import h2pool


@dataclass
class Behaviour:
    """How the replica answers (changed at run time by ``/_replica/set``)."""

    status: int = 200
    delay: float = 0.0
    stall_every: int = 0
    stall: float = 0.0
    requests: int = 0


async def answer(
    behaviour: Behaviour, proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
) -> None:
    """Answer one request as ``behaviour`` says."""
    path = dict(headers).get(":path", "/")
    if path.startswith("/_replica/"):
        body = b""
        if path == "/_replica/count":
            body = str(behaviour.requests).encode()
        elif path.startswith("/_replica/set?"):
            for name, value in urllib.parse.parse_qsl(path.partition("?")[2]):
                setattr(behaviour, name, type(getattr(behaviour, name))(value))
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, body, end_stream=True)
        return
    while await proto.read_stream(stream_id, 1 << 20):
        pass  # the body, if any, is read and dropped
    behaviour.requests += 1
    stalled = behaviour.stall_every and behaviour.requests % behaviour.stall_every == 0
    pause = behaviour.stall if stalled else behaviour.delay
    if pause:
        await asyncio.sleep(pause)
    await proto.start_response(stream_id, {":status": str(behaviour.status)})
    await proto.send_data(stream_id, b"ok", end_stream=True)


async def serve(port: int, behaviour: Behaviour) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    tasks: set[asyncio.Task[None]] = set()

    async def connected(proto: h2pool.H2Protocol) -> None:
        with contextlib.suppress(h2pool.H2PoolError):
            while True:
                stream_id, headers = await proto.recv_request()
                task = asyncio.create_task(answer(behaviour, proto, stream_id, headers))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    server = await h2pool.start_server(connected, "127.0.0.1", port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--stall-every", type=int, default=0)
    parser.add_argument("--stall", type=float, default=0.0)
    args = parser.parse_args()
    behaviour = Behaviour(args.status, args.delay, args.stall_every, args.stall)
    asyncio.run(serve(args.port, behaviour))


if __name__ == "__main__":
    main()
