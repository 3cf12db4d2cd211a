"""Load generators: closed loop (a fixed number of workers) and open loop (a fixed schedule).

The decisions are pure functions (:func:`due`, :func:`percentile`, :func:`summarize`); the
coroutines around them only wait and count. Every run is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .sizes import Budget

__all__ = [
    "LoopKind",
    "OpenLoopResult",
    "closed_loop",
    "due",
    "open_loop",
    "percentile",
    "run_on",
    "summarize",
    "uvloop_available",
]

Get = Callable[[], Awaitable[bytes]]
"""One request: returns the response body."""

LoopKind = Literal["asyncio", "uvloop"]
"""Which event loop a run uses."""

T = TypeVar("T")

PERCENTILES = (50.0, 90.0, 99.0, 100.0)
"""The percentiles tabulated by the latency benchmark (100 is the maximum)."""


class WrongBody(AssertionError):
    """A client returned another body than the file served: its figure would be meaningless."""


def uvloop_available() -> bool:
    """Whether uvloop can be imported."""
    return importlib.util.find_spec("uvloop") is not None


def run_on(kind: LoopKind, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a fresh event loop of the given kind.

    Raises:
        ImportError: ``kind`` is ``"uvloop"`` and uvloop is not installed.
    """
    factory = None
    if kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    # Errors the loop would log (in callbacks, in tasks nobody awaits) are kept and reported
    # with the run's failure instead: a client stuck in a loop of them would flood the output.
    errors: list[str] = []

    def collect(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.get_loop().set_exception_handler(collect)
        try:
            return runner.run(main)
        except Exception as exc:
            if errors:
                raise RuntimeError(
                    f"{type(exc).__name__}: {exc}; the loop reported {len(errors)} error(s),"
                    f" the first: {errors[0]}"
                ) from exc
            raise


async def closed_loop(get: Get, expected: bytes, concurrency: int, budget: Budget) -> float:
    """Requests per second of ``concurrency`` workers sharing at most ``budget.requests``.

    Workers start no new request once ``budget.seconds`` have passed; the rate counts the
    requests completed over the time until the last one finished.

    Raises:
        WrongBody: A response body differed from ``expected``.
    """
    remaining = budget.requests
    completed = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget.seconds

    async def worker() -> None:
        nonlocal remaining, completed
        while remaining > 0 and loop.time() < deadline:
            remaining -= 1
            if await get() != expected:
                raise WrongBody("unexpected response body")
            completed += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return completed / (time.perf_counter() - start)


def due(elapsed: float, rate: float, total: int) -> int:
    """How many requests of an open-loop schedule have been due by ``elapsed`` seconds.

    Request ``i`` (from 0) is scheduled at ``i / rate`` seconds; so one is due at 0.

    Args:
        elapsed: Seconds since the schedule began (negative: before it).
        rate: Requests per second.
        total: Length of the schedule.
    """
    if elapsed < 0:
        return 0
    return min(total, math.floor(elapsed * rate) + 1)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of a sorted, non-empty sequence (100: the maximum)."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    """What an open-loop run saw.

    Attributes:
        latencies: Seconds from each completed request's scheduled start to its end, sorted.
        scheduled: Requests in the schedule.
        failed: Requests that raised, returned a wrong body, or had not finished in time.
        dropped: Requests never started: when they were due, ``max_in_flight`` were in flight.
        seconds: Length of the run, from the first scheduled start to the last completion.
    """

    latencies: list[float]
    scheduled: int
    failed: int
    dropped: int
    seconds: float


def summarize(result: OpenLoopResult) -> dict[str, float]:
    """Table values of an open-loop run: percentiles in ms, achieved rate, failures."""
    values = {
        f"{'max' if p == 100 else f'p{p:g}'} ms": percentile(result.latencies, p) * 1000
        for p in PERCENTILES
    }
    values["done/s"] = len(result.latencies) / result.seconds
    values["failed"] = float(result.failed)
    values["dropped"] = float(result.dropped)
    return values


async def open_loop(
    get: Get, expected: bytes, rate: float, seconds: float, drain: float, max_in_flight: int
) -> OpenLoopResult:
    """Start requests on a fixed schedule, whether earlier ones finished or not.

    Latency is measured from each request's *scheduled* start, so time spent queued behind a
    slow client counts (no coordinated omission).

    Args:
        get: One request.
        expected: The body every response must have.
        rate: Requests started per second.
        seconds: Length of the schedule.
        drain: Seconds allowed after the schedule for the last requests to finish; those
            still running are cancelled and counted as failed.
        max_in_flight: Requests due while this many are in flight are dropped (counted, not
            started): a saturated client's backlog, and the time to cancel it, stay bounded.
    """
    loop = asyncio.get_running_loop()
    total = max(1, round(rate * seconds))
    latencies: list[float] = []
    failed = dropped = 0

    async def one(scheduled: float) -> None:
        nonlocal failed
        try:
            body = await get()
        except Exception:
            failed += 1
            return
        if body == expected:
            latencies.append(loop.time() - scheduled)
        else:
            failed += 1

    tasks: set[asyncio.Task[None]] = set()
    start = loop.time()
    started = 0
    while started < total:
        now_due = due(loop.time() - start, rate, total)
        for index in range(started, now_due):
            if len(tasks) >= max_in_flight:
                dropped += 1
                continue
            task = asyncio.create_task(one(start + index / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        started = now_due
        if started < total:
            await asyncio.sleep(max(0.0, start + started / rate - loop.time()))
    if tasks:
        await asyncio.wait(tasks, timeout=drain)
    unfinished = list(tasks)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    end = loop.time()
    return OpenLoopResult(sorted(latencies), total, failed + len(unfinished), dropped, end - start)
