"""Benchmarks 1 and 7: small GETs against nghttpd (h2c) at several concurrency levels.

Each client runs closed loop (``concurrency`` requests in flight, the next one started when
one ends) for a bounded count and time, on a fresh event loop; aiohttp runs the same against
nginx over HTTP/1.1. The clients alternate level by level, so a burst of noise on the machine
hits them all alike; with several rounds the best run of each client counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from .clients import AIOHTTP, CALLBACK, CLIENTS, CORE, FUTURE, HTTPX, POOL, Origins, run_callback
from .h2pool_server import SMALL_BODY
from .load import LoopKind, closed_loop, run_on, uvloop_available
from .results import Results, Table
from .sizes import Budget, Size

__all__ = ["NAMES", "RATIO_LEVEL", "measure_gets", "run_small_gets", "run_uvloop"]

NAMES = (CALLBACK, FUTURE, CORE, POOL, HTTPX, AIOHTTP)
"""The clients, in table order."""

RATIO_LEVEL = 100
"""The concurrency of the ratio table and of the uvloop comparison."""

# Seconds a run may overrun its budget (requests in flight finishing, set-up) before it fails.
_GRACE = 5.0


async def _bounded(main: Coroutine[Any, Any, float], seconds: float) -> float:
    async with asyncio.timeout(seconds):
        return await main


async def _closed(name: str, origins: Origins, concurrency: int, budget: Budget) -> float:
    async with CLIENTS[name](origins, concurrency) as get:
        return await closed_loop(get, SMALL_BODY, concurrency, budget)


def measure_gets(
    name: str, origins: Origins, concurrency: int, budget: Budget, kind: LoopKind = "asyncio"
) -> float:
    """Requests per second of one client at one concurrency, on a fresh loop of ``kind``.

    Raises:
        Exception: Whatever the client raised, or TimeoutError if it overran its budget.
    """
    if name == CALLBACK:
        main = run_callback(origins, SMALL_BODY, concurrency, budget)
    else:
        main = _closed(name, origins, concurrency, budget)
    return run_on(kind, _bounded(main, budget.seconds + _GRACE))


def run_small_gets(origins: Origins, size: Size, results: Results) -> None:
    """Benchmark 1: throughput against concurrency for every client; ratios at 100."""
    best: dict[str, dict[int, float]] = {name: {} for name in NAMES}
    errors: dict[str, dict[int, str]] = {name: {} for name in NAMES}
    for _ in range(size.rounds):
        for concurrency in size.concurrencies:
            for name in NAMES:
                try:
                    rate = measure_gets(name, origins, concurrency, size.gets)
                except Exception as exc:
                    errors[name][concurrency] = f"{type(exc).__name__}: {exc}"
                    continue
                best[name][concurrency] = max(rate, best[name].get(concurrency, 0.0))
    levels = ", ".join(map(str, size.concurrencies))
    table = Table(
        key="small_gets",
        title=f"Small GETs, {RATIO_LEVEL} concurrent (12-byte body, nghttpd h2c)",
        columns=["req/s"],
        reference=CALLBACK,
        ratio_of="req/s",
        note=(
            f"Closed loop, at most {size.gets.requests:,} requests or {size.gets.seconds:g} s"
            f" per run, best of {size.rounds} round(s). aiohttp: HTTP/1.1 to nginx serving the"
            " same file, connection limit = concurrency."
        ),
    )
    curve = Table(
        key="small_gets_curve",
        title=f"Small GETs: req/s at each concurrency ({levels})",
        columns=[f"c={level}" for level in size.concurrencies],
        note="One connection for the plain and core clients (nghttpd allows 100 streams on it).",
    )
    for name in NAMES:
        rates = best[name]
        if RATIO_LEVEL in rates:
            table.add(name, **{"req/s": rates[RATIO_LEVEL]})
        else:
            table.fail(name, errors[name].get(RATIO_LEVEL, "not measured"))
        if rates:
            curve.add(name, **{f"c={level}": rate for level, rate in rates.items()})
        else:
            curve.fail(name, next(iter(errors[name].values()), "not measured"))
    table.compute_ratios()
    results.tables += [table, curve]
    results.series["small_gets"] = {
        name: {str(level): rate for level, rate in sorted(rates.items())}
        for name, rates in best.items()
    }


def run_uvloop(origins: Origins, size: Size, results: Results) -> None:
    """Benchmark 7: every small-GET client at 100 concurrent on asyncio's loop and on uvloop."""
    table = Table(
        key="uvloop",
        title=f"Small GETs, {RATIO_LEVEL} concurrent: asyncio's default loop and uvloop",
        columns=["asyncio req/s", "uvloop req/s", "uvloop / asyncio"],
        reference=CALLBACK,
        ratio_of="uvloop req/s",
        note="Both loops measured one after the other for each client; ratios are under uvloop.",
    )
    results.tables.append(table)
    if not uvloop_available():
        for name in NAMES:
            table.fail(name, "uvloop is not installed (pip install 'h2pool[uvloop]')")
        return
    for name in NAMES:
        try:
            kinds: tuple[LoopKind, ...] = ("asyncio", "uvloop")
            rates = [
                max(
                    measure_gets(name, origins, RATIO_LEVEL, size.gets, kind)
                    for _ in range(size.rounds)
                )
                for kind in kinds
            ]
        except Exception as exc:
            table.fail(name, exc)
            continue
        table.add(
            name,
            **{
                "asyncio req/s": rates[0],
                "uvloop req/s": rates[1],
                "uvloop / asyncio": rates[1] / rates[0],
            },
        )
    table.compute_ratios()
