"""The pure parts of ``h2pool bench``: the open-loop schedule, percentiles, the report."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Tally", "is_late", "percentile", "report", "start_time"]

# The percentiles the report shows, as h2load's and wrk's latency lines do.
PERCENTILES = (50.0, 90.0, 99.0)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of ``ordered`` (sorted ascending, not empty).

    Nearest rank: always a value that was measured, never an interpolation.
    """
    if not ordered:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile out of (0, 100]: {q}")
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[rank - 1]


def start_time(index: int, rate: float) -> float:
    """Seconds after the run's start at which request ``index`` (from 0) is due, at ``rate``/s.

    Open loop: the schedule does not wait for answers, so a slow server
    cannot slow the offered load down (no coordinated omission).
    """
    return index / rate


def is_late(due: float, started: float, rate: float) -> bool:
    """Whether a request started ``started`` s after the run's start, due at ``due``, was late.

    Late: started after the next request was due, i.e. more than one
    interval behind its schedule (the generator could not keep the rate).
    """
    return started - due > 1 / rate


@dataclass
class Tally:
    """What a run counted.

    Attributes:
        latencies: Seconds of each answered request (any status).
        statuses: Answers by HTTP status.
        errors: Failed requests by error class name.
        endpoints: Answers by the endpoint that served them.
        late: Open loop only: requests started more than an interval late.
        first_error: The message of the first failure, None before any.
    """

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    endpoints: Counter[str] = field(default_factory=Counter)
    late: int = 0
    first_error: str | None = None

    @property
    def done(self) -> int:
        """Requests finished, answered or failed."""
        return len(self.latencies) + sum(self.errors.values())


def _counts(counter: Counter[str] | Counter[int]) -> str:
    return ", ".join(f"{key} {count:,}" for key, count in sorted(counter.items())) or "none"


def report(
    tally: Tally,
    seconds: float,
    *,
    retries: int,
    connections: Counter[str],
    rate: float | None,
) -> list[str]:
    """The lines printed after a run (``connections``: open at the end, by endpoint)."""
    done = tally.done
    lines = [
        f"{done:,} requests in {seconds:.2f} s: {done / seconds if seconds else 0:,.1f} req/s, "
        f"{sum(tally.errors.values()):,} failed",
    ]
    if rate is not None:
        lines.append(f"offered {rate:,.1f} req/s (open loop), {tally.late:,} started late")
    if tally.latencies:
        ordered = sorted(tally.latencies)
        shown = [f"p{q:g} {percentile(ordered, q) * 1000:.2f}" for q in PERCENTILES]
        lines.append(f"latency ms: {', '.join(shown)}, max {ordered[-1] * 1000:.2f}")
    lines.append(f"status: {_counts(tally.statuses)}")
    lines.append(f"errors: {_counts(tally.errors)}")
    lines.append(f"retries: {retries:,}")
    lines.append(f"connections: {sum(connections.values())} ({_counts(connections)})")
    lines.append(f"endpoints: {_counts(tally.endpoints)}")
    return lines
