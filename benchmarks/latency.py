"""Benchmark 2: latency at a fixed offered load (open loop), Pool.request against httpx and aiohttp.

Requests start on a schedule (``rate`` per second, a task each, for every client alike),
whether or not earlier ones have finished, and each latency runs from the request's scheduled
start: a client that falls behind shows it as queueing in its percentiles.
"""

from __future__ import annotations

import asyncio

from .clients import AIOHTTP, CLIENTS, HTTPX, POOL, Origins
from .h2pool_server import SMALL_BODY
from .load import PERCENTILES, OpenLoopResult, open_loop, percentile, run_on, summarize
from .results import Results, Table
from .sizes import Size

__all__ = ["LATENCY_CLIENTS", "run_latency"]

LATENCY_CLIENTS = (POOL, HTTPX, AIOHTTP)
"""The clients compared, in table order."""

# aiohttp's connection limit here: its default (100), as a user would run it.
_AIOHTTP_LIMIT = 100

# Seconds after the schedule for the last requests to finish.
_DRAIN = 5.0

# Seconds of load a client may fall behind before further requests are dropped.
_BACKLOG_SECONDS = 1.0

# Percentiles drawn in the plot (more than the table's).
PLOT_PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0)


async def _run(name: str, origins: Origins, rate: float, seconds: float) -> OpenLoopResult:
    async with (
        asyncio.timeout(seconds + _DRAIN + 20),
        CLIENTS[name](origins, _AIOHTTP_LIMIT) as get,
    ):
        backlog = max(1, round(rate * _BACKLOG_SECONDS))
        return await open_loop(get, SMALL_BODY, rate, seconds, _DRAIN, backlog)


def run_latency(origins: Origins, size: Size, results: Results) -> None:
    """Run each client on the same schedule; tabulate percentiles and keep a curve to plot."""
    rate, seconds = size.latency_rate, size.latency_seconds
    table = Table(
        key="latency",
        title=f"Latency at {rate:,.0f} requests/s offered for {seconds:g} s (open loop)",
        columns=[
            *(f"{'max' if p == 100 else f'p{p:g}'} ms" for p in PERCENTILES),
            "done/s",
            "failed",
            "dropped",
        ],
        reference=POOL,
        ratio_of="p50 ms",
        note=(
            "Latency from each request's scheduled start to its end, so queueing counts;"
            " the ratio is of p50 (lower is better). aiohttp: HTTP/1.1 to nginx, its default"
            f" limit of {_AIOHTTP_LIMIT} connections. 'failed' counts errors and requests"
            f" unfinished {_DRAIN:g} s after the schedule; 'dropped', requests not started"
            f" because the client was already {_BACKLOG_SECONDS:g} s of load behind"
            " (then the percentiles flatter it)."
        ),
    )
    curves: dict[str, dict[str, float]] = {}
    for name in LATENCY_CLIENTS:
        try:
            result = run_on("asyncio", _run(name, origins, rate, seconds))
            if not result.latencies:
                raise RuntimeError(f"no request completed ({result.failed} failed)")
        except Exception as exc:
            table.fail(name, exc)
            continue
        table.add(name, **summarize(result))
        curves[name] = {f"{p:g}": percentile(result.latencies, p) * 1000 for p in PLOT_PERCENTILES}
    table.compute_ratios()
    results.tables.append(table)
    results.series["latency"] = curves
