"""Retry budgets: how many retries and hedges the pool allows itself (Envoy's retry_budget).

A retry policy bounds the attempts of one request; a budget bounds the
retries of all of them together, so that an outage of every replica cannot
multiply the load on them by ``max_attempts`` (a retry storm). As Finagle's
``RetryBudget`` (whose defaults these are: 20% of requests on top of 10
retries per second, over 10 seconds), the pool counts requests and retries
in a sliding window of one-second buckets; a retry or a hedge is allowed
while the retries in the window stay under ``ratio`` of its requests, or
while fewer than ``min_per_second`` were made in the current second (a
floor for pools that send few requests). Counting is O(1) per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .checks import check_fraction

__all__ = ["BUCKETS", "DEFAULT_RETRY_BUDGET", "RetryBudget", "Spending", "allows_retry"]

#: One-second buckets in the sliding window (its length, in seconds): Finagle's ttl.
BUCKETS = 10

# Largest ratio accepted: ten retries per request is beyond any sensible budget.
_MAX_RATIO = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudget:
    """Retries and hedges of the whole pool, as a share of its recent requests.

    Attributes:
        ratio: Retries and hedges allowed per request sent in the last 10
            seconds (0.2: at most one in five requests is sent again).
        min_per_second: Retries and hedges allowed in any second whatever
            the ratio says, so that a pool sending few requests can still
            retry them (0: none).
    """

    ratio: float = 0.2
    min_per_second: float = 10.0

    def __post_init__(self) -> None:
        check_fraction("ratio", self.ratio, 0, _MAX_RATIO, closed=True)
        check_fraction("min_per_second", self.min_per_second, 0, math.inf, closed=False)


#: The pool's budget unless told otherwise.
DEFAULT_RETRY_BUDGET = RetryBudget()


def allows_retry(budget: RetryBudget, requests: int, retries: int, this_second: int) -> bool:
    """Whether one more retry (or hedge) is allowed: the budget's rule, pure.

    Args:
        budget: The budget.
        requests: Requests sent in the window.
        retries: Retries and hedges made in the window.
        this_second: Retries and hedges made in the current second.
    """
    return retries + 1 <= budget.ratio * requests or this_second < budget.min_per_second


class Spending:
    """The counts a budget is judged on: requests and retries in one-second buckets.

    Times are the caller's clock (the event loop's, in seconds), passed to
    each call: no clock of its own, so the counts can be tested exactly.
    Each call is O(1): buckets that fell out of the window are cleared as
    time moves on (at most :data:`BUCKETS` of them).
    """

    __slots__ = ("_budget", "_requests", "_retries", "_second", "refused", "requests", "retries")

    def __init__(self, budget: RetryBudget) -> None:
        self._budget = budget
        self._requests = [0] * BUCKETS
        self._retries = [0] * BUCKETS
        self._second = 0  # the bucket of the latest call, as whole seconds
        self.requests = 0
        """Requests counted in the window."""
        self.retries = 0
        """Retries and hedges counted in the window."""
        self.refused = 0
        """Retries and hedges refused since the start."""

    def _slot(self, now: float) -> int:
        """The bucket of ``now``, the window moved on to it (the buckets it left cleared)."""
        second = int(now)
        if second > self._second:
            for passed in range(self._second + 1, min(second, self._second + BUCKETS) + 1):
                slot = passed % BUCKETS
                self.requests -= self._requests[slot]
                self.retries -= self._retries[slot]
                self._requests[slot] = self._retries[slot] = 0
            self._second = second
        return self._second % BUCKETS

    def deposit(self, now: float) -> None:
        """Count a request (its first attempt) sent at ``now``."""
        self._requests[self._slot(now)] += 1
        self.requests += 1

    def try_spend(self, now: float) -> bool:
        """Count a retry or hedge at ``now`` if the budget allows it; whether it does."""
        slot = self._slot(now)
        if not allows_retry(self._budget, self.requests, self.retries, self._retries[slot]):
            self.refused += 1
            return False
        self._retries[slot] += 1
        self.retries += 1
        return True
