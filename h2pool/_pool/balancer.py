"""Which endpoint takes a request: the balancers' pure decisions and the latency score.

Three balancers pick among the endpoints in rotation (``Pool(balancer=...)``):

- ``"p2c"`` (the default), Finagle's and Linkerd's balancer: the power of two
  choices, each endpoint scored by a peak-EWMA of its latency times its
  outstanding requests plus one (:func:`cost`). Of two endpoints sampled,
  the cheaper takes the request: a slow replica gets little traffic, a busy
  one less, and no request reads more than a few endpoints.
- ``"round_robin"``: each endpoint in turn.
- ``"least_request"``: the fewest outstanding requests (Envoy's
  LEAST_REQUEST): exact over small pools, the better of two samples over
  larger ones, as Envoy does.

Everything here is synchronous and reads no clock: the time is passed in.
The pickers only see indices and a ``rank`` callback (what routing knows of
each endpoint), so that each is tested without endpoints or sockets.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

__all__ = [
    "DECAY",
    "EXACT_LEAST_REQUEST",
    "MAX_EFFORT",
    "Balancer",
    "Key",
    "PeakEwma",
    "check_balancer",
    "cost",
    "pick",
    "scan",
]

#: Seconds over which latency observations fade: Finagle's ``decayTime`` and
#: Linkerd's decay (both 10 s). An idle endpoint's score decays toward zero,
#: so that an endpoint that was slow is tried again after a while.
DECAY = 10.0

#: Pairs sampled (p2c, least_request) or endpoints stepped over (round_robin)
#: before the pickers fall back to reading every endpoint (Finagle's
#: ``maxEffort``): only when most endpoints cannot take the request now.
MAX_EFFORT = 5

#: ``least_request`` reads every endpoint of pools up to this size (exact);
#: larger pools take the better of two samples (Envoy's ``choice_count``).
EXACT_LEAST_REQUEST = 16

# Cost of an endpoint without a latency sample yet that has requests
# outstanding (Finagle's penalty): it took one request, and waits for its
# answer before taking more. Plus the outstanding count, which stays exact.
_PENALTY = float(1 << 47)

# Latencies are floored here, so that a score of zero (a clock that did not
# move) never hides outstanding requests.
_FLOOR = 1e-6

#: How routing ranks an endpoint that can take the request now, lowest first:
#: (avoided, stale, score). ``avoided``: the request's earlier attempts were
#: there, so it goes there only if no other endpoint can take it; ``stale``:
#: its connection's liveness is unproven; ``score``: the balancer's measure.
Key = tuple[bool, bool, float]

#: Reads what an endpoint of the rotation can offer: None if it cannot take
#: the request now (no free slot), else its :data:`Key`.
Rank = Callable[[int], Key | None]


class Balancer(enum.Enum):
    """The balancers of ``Pool(balancer=...)``; their values are the public names."""

    P2C = "p2c"  #: power of two choices over peak-EWMA latency x outstanding requests
    ROUND_ROBIN = "round_robin"  #: each endpoint in turn
    LEAST_REQUEST = "least_request"  #: the fewest outstanding requests


def check_balancer(value: object) -> Balancer:
    """The balancer named ``value``, or a one-line error naming the choices.

    Raises:
        ValueError: ``value`` is not one of the names.
    """
    try:
        return Balancer(value)
    except ValueError:
        names = ", ".join(repr(kind.value) for kind in Balancer)
        raise ValueError(f"balancer must be one of {names}, not {value!r}") from None


class PeakEwma:
    """An endpoint's latency estimate: a moving average that jumps to every peak.

    As Finagle's ``PeakEwma``: a latency above the current estimate replaces
    it at once (slowness is believed at once), a lower one moves it down by
    a weight that grows with the time since the previous sample (the
    samples are unevenly spaced), and without samples the estimate decays
    toward zero over :data:`DECAY` seconds (recovery is believed slowly, by
    trying the endpoint again). All times are passed in.

    Attributes:
        estimate: The estimate at ``stamp``, in seconds; None before any sample.
        stamp: When ``estimate`` was last set (event-loop time).
    """

    __slots__ = ("estimate", "stamp")

    def __init__(self) -> None:
        self.estimate: float | None = None
        self.stamp = 0.0

    def value(self, now: float) -> float | None:
        """The estimate at ``now``, decayed since the last sample; None before any."""
        estimate = self.estimate
        if estimate is None or now <= self.stamp:
            return estimate
        return estimate * math.exp((self.stamp - now) / DECAY)

    def observe(self, latency: float, now: float, *, lower: bool = True) -> None:
        """Record a latency measured at ``now``.

        ``lower=False`` for a failure: it may raise the estimate (a timeout
        is slow), never lower it, nor make the first one, so that an
        endpoint that fails fast does not look fast.
        """
        latency = max(latency, _FLOOR)
        estimate = self.estimate
        if estimate is None:
            if lower:  # a failure is no measure of speed: it stays unmeasured (probed)
                self.estimate, self.stamp = latency, now
            return
        elapsed = now - self.stamp
        weight = math.exp(-elapsed / DECAY) if elapsed > 0 else 1.0
        current = estimate * weight  # decayed since the last sample
        if latency >= current:
            self.estimate = latency  # the peak, at once
        elif lower:
            self.estimate = latency + (current - latency) * weight
        else:
            self.estimate = current
        if elapsed > 0:
            self.stamp = now


def cost(latency: float | None, outstanding: int) -> float:
    """The p2c score of an endpoint: its latency estimate x (outstanding + 1).

    An endpoint never measured costs nothing while idle (it takes one request
    at once, as Finagle's probe) and a penalty while that request is out,
    so that it is measured before it takes more.
    """
    if latency is None:
        return _PENALTY + outstanding if outstanding else 0.0
    return max(latency, _FLOOR) * (outstanding + 1)


def scan(count: int, first: int, rank: Rank) -> int | None:
    """The lowest-ranked of all ``count`` endpoints, ties to the first after ``first``.

    O(count): the fallback when sampling found no endpoint that is not avoided.
    """
    best: int | None = None
    best_key: tuple[Key, int] | None = None
    for index in range(count):
        key = rank(index)
        if key is None:
            continue
        ordered = (key, (index - first) % count)
        if best_key is None or ordered < best_key:
            best, best_key = index, ordered
    return best


def pick(
    balancer: Balancer, count: int, first: int, rank: Rank, rng: Callable[[], float]
) -> int | None:
    """The index of the endpoint that takes the request, or None if none can now.

    O(1) whatever ``count`` while sampling finds an endpoint that can take the
    request and is not avoided (:data:`MAX_EFFORT` tries); otherwise every
    endpoint is read (:func:`scan`), which then finds the best there is.

    Args:
        balancer: The pool's balancer.
        count: Endpoints in rotation (indices ``0 .. count - 1``).
        first: This request's turn: round robin's endpoint, p2c's first
            sample, and the winner of ties (so that ties rotate).
        rank: What an endpoint can offer (see :data:`Rank`).
        rng: A uniform random number in [0, 1) (the second samples).
    """
    if count <= 1:
        return 0 if count and rank(0) is not None else None
    if balancer is Balancer.LEAST_REQUEST and count <= EXACT_LEAST_REQUEST:
        return scan(count, first, rank)
    if balancer is Balancer.ROUND_ROBIN:
        for step in range(min(count, MAX_EFFORT)):
            index = (first + step) % count
            key = rank(index)
            if key is not None and not key[0]:
                return index
        return scan(count, first, rank)
    index = first % count
    for _ in range(MAX_EFFORT if count > 2 else 1):  # two: one pair reads both
        # The second sample is distinct from the first, uniformly.
        other = (index + 1 + int(rng() * (count - 1))) % count
        key, other_key = rank(index), rank(other)
        if other_key is not None and (key is None or other_key < key):
            index, key = other, other_key
        if key is not None and not key[0]:
            return index
        index = int(rng() * count)
    return scan(count, first, rank)
