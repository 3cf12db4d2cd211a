"""Benchmark 5: h2pool's server against hypercorn, both driven by h2load.

h2load (C, ``-c 4 -m 50``: 4 connections, 50 streams each) asks each server for a small
response; the servers are the bottleneck. h2pool's server runs a task per request with a
12-byte answer (``benchmarks.h2pool_server small``); hypercorn runs ``tests.asgi_app``,
answering ``hello /`` (7 bytes), with its access log off and no GOAWAY every 1,000 requests.
"""

from __future__ import annotations

import asyncio
import re

from tests.peers import run_h2load

from .peers import bench_hypercorn, h2pool_server
from .results import Results, Table
from .sizes import Size

__all__ = ["h2load_rate", "run_server"]

H2POOL = "h2pool server"
HYPERCORN = "hypercorn"

_RATE = re.compile(r"^finished in [\d.]+\w*, ([\d.]+) req/s", re.MULTILINE)

# Requests of the warm-up run of each server.
_WARM_UP = 2_000


def h2load_rate(output: str) -> float:
    """The requests per second h2load reports in its summary.

    Raises:
        ValueError: The summary has no ``finished in ...`` line.
    """
    match = _RATE.search(output)
    if match is None:
        raise ValueError(f"no rate in h2load's output: {output[-500:]!r}")
    return float(match.group(1))


async def _load(port: int, requests: int) -> float:
    """Run h2load against 127.0.0.1:``port`` and return its rate; every request must succeed."""
    result = await run_h2load(
        f"http://127.0.0.1:{port}/",
        requests=requests,
        clients=4,
        streams=50,
        timeout=30 + requests / 500,
    )
    if result.succeeded != requests:
        raise RuntimeError(f"h2load: {result.succeeded} of {requests} requests succeeded")
    return h2load_rate(result.output)


def run_server(size: Size, results: Results) -> None:
    """Load each server in turn (after a warm-up), best of the size's rounds."""
    table = Table(
        key="server",
        title=f"Server: h2load -n {size.h2load_requests:,} -c 4 -m 50, small responses",
        columns=["req/s"],
        reference=HYPERCORN,
        ratio_of="req/s",
        note=__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() if __doc__ else "",
    )
    results.tables.append(table)
    best: dict[str, float] = {}
    error: Exception | None = None
    try:
        with h2pool_server("small") as h2pool_port, bench_hypercorn() as hypercorn:
            ports = {H2POOL: h2pool_port, HYPERCORN: hypercorn.port}
            for port in ports.values():
                asyncio.run(_load(port, _WARM_UP))
            for _ in range(size.rounds):
                for name, port in ports.items():
                    rate = asyncio.run(_load(port, size.h2load_requests))
                    best[name] = max(rate, best.get(name, 0.0))
    except Exception as exc:
        error = exc
    for name in (H2POOL, HYPERCORN):
        if name in best:
            table.add(name, **{"req/s": best[name]})
        else:
            table.fail(name, error or "not measured")
    table.compute_ratios()
