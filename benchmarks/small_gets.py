"""Small GETs at 100 concurrent requests against nghttpd (h2c), side by side.

Clients, in one run:

* a plain ``h2`` client on one connection: the minimal asyncio protocol
  around h2's state machine, the reference every Python HTTP/2 client pays
  at least;
* h2pool's core ``H2Protocol`` on one connection;
* h2pool's ``Pool`` (routing, health, retries; one endpoint);
* httpx with ``http2=True``, if installed.

Prints requests per second and the ratio to the plain h2 client.

Run: python benchmarks/small_gets.py [--requests 20000] [--concurrency 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h2pool
from tests.peers import Nghttpd

BODY = b"x" * 100


class PlainH2(asyncio.Protocol):
    """The least a client can do with h2: send, receive, acknowledge, resolve."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.transport: asyncio.Transport | None = None
        self.waiters: dict[int, asyncio.Future[bytes]] = {}
        self.bodies: dict[int, list[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id].append(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.waiters.pop(event.stream_id).set_result(
                    b"".join(self.bodies.pop(event.stream_id))
                )
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())

    async def get(self, path: str) -> bytes:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "b")]
        self.conn.send_headers(stream_id, headers, end_stream=True)
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiters[stream_id] = waiter
        self.bodies[stream_id] = []
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())
        return await waiter


async def run_plain(port: int, requests: int, concurrency: int) -> float:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(PlainH2, "127.0.0.1", port)
    await asyncio.sleep(0.05)  # let SETTINGS arrive
    return await measure(lambda: client.get("/small"), requests, concurrency)


async def run_core(port: int, requests: int, concurrency: int) -> float:
    client = await h2pool.open_connection("127.0.0.1", port)
    await client.wait_functional()

    request = {":method": "GET", ":path": "/small"}

    async def get() -> bytes:
        stream_id = await client.start_request(request, end_stream=True)
        await client.recv_response(stream_id)
        return await client.read_stream(stream_id, -1)

    try:
        return await measure(get, requests, concurrency)
    finally:
        client.close_connection()


async def run_pool(port: int, requests: int, concurrency: int) -> float:
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:
        await pool.request("GET", "/small")  # connected

        async def get() -> bytes:
            return (await pool.request("GET", "/small")).content

        return await measure(get, requests, concurrency)


async def run_httpx(port: int, requests: int, concurrency: int) -> float:
    import httpx

    async with httpx.AsyncClient(http1=False, http2=True) as client:
        url = f"http://127.0.0.1:{port}/small"

        async def get() -> bytes:
            return (await client.get(url)).content

        return await measure(get, requests, concurrency)


async def measure(get: Callable[[], Awaitable[bytes]], requests: int, concurrency: int) -> float:
    """Requests per second of ``concurrency`` workers sharing ``requests`` GETs."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            assert await get() == BODY

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    clients: dict[str, Callable[[int, int, int], Coroutine[Any, Any, float]]] = {
        "plain h2, one connection": run_plain,
        "h2pool core H2Protocol": run_core,
        "h2pool Pool": run_pool,
    }
    try:
        import httpx  # noqa: F401

        clients["httpx http2=True"] = run_httpx
    except ImportError:
        pass
    results: dict[str, list[float]] = {name: [] for name in clients}
    with tempfile.TemporaryDirectory() as docroot:
        Path(docroot, "small").write_bytes(BODY)
        with Nghttpd(Path(docroot)) as server:
            for _ in range(args.rounds):
                for name, run in clients.items():
                    rate = asyncio.run(run(server.port, args.requests, args.concurrency))
                    results[name].append(rate)
    baseline = max(results["plain h2, one connection"])
    print(
        f"{args.requests} GETs of {len(BODY)} bytes, {args.concurrency} concurrent,"
        f" nghttpd h2c, best of {args.rounds}:"
    )
    for name, rates in results.items():
        best = max(rates)
        print(f"  {name:28s} {best:9.0f} req/s  {best / baseline:5.2f}x plain h2")


if __name__ == "__main__":
    main()
