"""The memory benchmark's measuring process: a fresh interpreter that imports only h2pool.

Run as ``python -m benchmarks.memory_probe PORT --connections N --streams M`` against h2pool's
server in ``hold`` mode (advertising at least M streams). It prints one JSON object:

* ``baseline_kib``: RSS after imports, before any connection;
* ``idle_kib``: RSS holding N idle client connections (each proven alive by a PING);
* ``stream_traced_bytes`` / ``stream_rss_bytes``: growth of the Python heap (tracemalloc) and
  of RSS while M streams are open on one more connection (requests sent, responses awaited),
  divided by M;
* ``pool_request_traced_bytes``: growth of the Python heap per ``Pool.request`` in flight (its
  task included), with ``POOL_REQUESTS`` of them on one connection of a warmed-up pool.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import tracemalloc
from pathlib import Path

import h2pool

__all__ = ["rss_kib"]

# Connections opened at once (the server's listen backlog is larger).
_BATCH = 100

POOL_REQUESTS = 100
"""Requests held in flight through the pool: as many as one connection takes by default."""

# Seconds the pool's requests may take to be sent.
_SEND_TIMEOUT = 10.0


def rss_kib() -> int:
    """This process's resident set size now, in KiB (Linux)."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("no VmRSS in /proc/self/status")
    return int(match.group(1))


async def _idle(port: int, count: int) -> list[h2pool.H2Protocol]:
    """Open ``count`` connections and prove each alive."""
    connections: list[h2pool.H2Protocol] = []
    while len(connections) < count:
        batch = min(_BATCH, count - len(connections))
        connections += await asyncio.gather(
            *(h2pool.open_connection("127.0.0.1", port) for _ in range(batch))
        )
    await asyncio.gather(*(connection.wait_functional() for connection in connections))
    return connections


async def probe(port: int, connections: int, streams: int) -> dict[str, float]:
    """Measure, as described in the module docstring."""
    gc.collect()
    baseline = rss_kib()
    idle = await _idle(port, connections)
    gc.collect()
    idle_kib = rss_kib()
    for connection in idle:
        connection.close_connection()

    holder = await h2pool.open_connection("127.0.0.1", port, concurrency=streams)
    await holder.wait_functional()
    request = {":method": "GET", ":path": "/hold"}
    gc.collect()
    tracemalloc.start()
    traced_before, rss_before = tracemalloc.get_traced_memory()[0], rss_kib()
    for _ in range(streams):
        await holder.start_request(request, end_stream=True)
    await asyncio.sleep(0)  # the HEADERS are flushed
    traced_after, rss_after = tracemalloc.get_traced_memory()[0], rss_kib()
    tracemalloc.stop()
    holder.close_connection()
    return {
        **await _pool_requests(port),
        "baseline_kib": baseline,
        "idle_kib": idle_kib,
        "stream_traced_bytes": (traced_after - traced_before) / streams,
        "stream_rss_bytes": (rss_after - rss_before) * 1024 / streams,
    }


async def _pool_requests(port: int) -> dict[str, float]:
    """Heap growth per ``Pool.request`` in flight (held by the server, never answered)."""
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:
        await pool.request("GET", "/now")  # connected, and the request path warmed up
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tasks = [
            asyncio.create_task(pool.request("GET", "/hold", timeout=None))
            for _ in range(POOL_REQUESTS)
        ]
        async with asyncio.timeout(_SEND_TIMEOUT):
            # Polled: the pool has no event for "all sent".
            while pool.stats().active < POOL_REQUESTS:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.aclose(timeout=1.0)
    return {"pool_request_traced_bytes": (after - before) / POOL_REQUESTS}


def main() -> None:
    """Parse the command line, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--connections", type=int, default=1_000)
    parser.add_argument("--streams", type=int, default=1_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(probe(args.port, args.connections, args.streams))))


if __name__ == "__main__":
    main()
