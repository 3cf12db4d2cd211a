"""The pool failing over: three replicas on loopback, one of them crashes mid-run.

Starts three h2pool servers on 127.0.0.1, sends GETs through one Pool from 20
concurrent workers for three seconds, and kills one replica after one second
(its connections are aborted, new ones refused). Prints how the requests
were spread and that none of them failed.

Run: python examples/pool.py
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import h2pool


class Replica:
    """An h2pool server answering "hello from <name>" until it crashes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: asyncio.Server | None = None
        self.connections: list[h2pool.H2Protocol] = []

    async def start(self) -> str:
        self.server = await h2pool.start_server(self.serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, proto: h2pool.H2Protocol) -> None:
        self.connections.append(proto)
        while True:
            stream_id, _ = await proto.recv_request()
            await proto.start_response(stream_id, {":status": "200"})
            await proto.send_data(stream_id, f"hello from {self.name}".encode(), end_stream=True)

    def crash(self) -> None:
        assert self.server is not None
        self.server.close()  # refuse new connections
        for proto in self.connections:
            proto.close_connection()  # and drop the open ones


async def main() -> None:
    replicas = [Replica(name) for name in ("a", "b", "c")]
    endpoints = [await replica.start() for replica in replicas]
    served: Counter[str] = Counter()
    failed = 0
    async with h2pool.Pool(
        "http://hello.local", endpoints=endpoints, functional_timeout=0.5, timeout=5
    ) as pool:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + 3
        loop.call_later(1, replicas[2].crash)

        async def worker() -> None:
            nonlocal failed
            while loop.time() < stop_at:
                try:
                    response = await pool.request("GET", "/")
                    served[response.content.decode()] += 1
                except h2pool.H2PoolError:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(20)))
        for endpoint in pool.stats().endpoints:
            print(f"{endpoint.address}: {endpoint.state.value}")
    for text, count in sorted(served.items()):
        print(f"{text}: {count} requests")
    print(f"failed: {failed}")


if __name__ == "__main__":
    # h2pool logs connection failures and ejections as warnings.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
