"""Retries of calls that got a retryable status (gRFC A6), as pure decisions.

These are the retries a service config asks for, of calls the server
answered. Calls the server never processed (GOAWAY, REFUSED_STREAM) are the
pool's transparent retries, and are not decided here.

Two bounds hold together. The service config's ``retryThrottling`` is A6's
token bucket, kept exactly as gRPC defines it (a service config shared with
grpcio clients throttles the same way): it watches the share of *failures*,
and stops retries while they outnumber successes by more than the config
says. The pool's :class:`~h2pool.RetryBudget` watches the share of
*retries*, and bounds the rpc calls' retries with the pool's own: one budget
for everything the channel's pool sends again.
"""

from __future__ import annotations

import random

from .._pool.budget import Spending
from .config import MethodRetry, Throttling
from .status import StatusCode

__all__ = ["RetryThrottle", "decide_rpc_retry", "refused_by_stopping_server"]

_RNG = random.Random()


class RetryThrottle:
    """A channel's retry throttle: A6's token bucket, and the pool's retry budget.

    The token bucket (when the service config has ``retryThrottling``) is
    drained by retryable failures: retries stop while ``tokens`` is at or
    below half of ``max_tokens``, so a failing server does not get every
    call several times over. The pool's budget (``spending``, None when the
    pool has none) is spent by each retry made.
    """

    __slots__ = ("_max_tokens", "_spending", "_token_ratio", "tokens")

    def __init__(self, throttling: Throttling | None, spending: Spending | None = None) -> None:
        self._max_tokens = 0.0 if throttling is None else throttling.max_tokens
        self._token_ratio = 0.0 if throttling is None else throttling.token_ratio
        self._spending = spending
        self.tokens: float = self._max_tokens
        """The tokens left, between 0 and ``max_tokens`` (0 without ``retryThrottling``)."""

    def record_failure(self) -> None:
        """A response whose status is one of the policy's retryable codes: one token less."""
        self.tokens = max(0.0, self.tokens - 1)

    def record_success(self) -> None:
        """Any other completed response: ``token_ratio`` tokens back."""
        self.tokens = min(self._max_tokens, self.tokens + self._token_ratio)

    @property
    def allows_retry(self) -> bool:
        """Whether A6 lets retries happen: more than half the tokens are left (or no bucket)."""
        return not self._max_tokens or self.tokens > self._max_tokens / 2

    def spend(self, now: float) -> bool:
        """Whether the pool's retry budget allows a retry at ``now`` (counted if so)."""
        return self._spending is None or self._spending.try_spend(now)


def parse_pushback(value: str) -> float | None:
    """The delay of a ``grpc-retry-pushback-ms`` value, in seconds; None means do not retry.

    A6: a non-negative integer of milliseconds; anything else (negative,
    malformed) is the server asking the client not to retry.
    """
    if value.isascii() and value.isdigit():
        return int(value) / 1000
    return None


def decide_rpc_retry(
    code: StatusCode,
    *,
    committed: bool,
    attempts: int,
    policy: MethodRetry | None,
    throttle: RetryThrottle | None,
    pushback: str | None,
    now: float,
    deadline: float | None,
    rng: random.Random | None = None,
) -> float | None:
    """The delay before the next attempt of a call, or None when it must not be retried.

    Record the response in the throttle first (``record_failure`` for a
    retryable status, as A6 counts it before deciding); this only reads it.

    Args:
        code: The status of the attempt that just ended.
        committed: Whether response headers or messages were already given to
            the caller: a committed call is never retried (A6).
        attempts: The attempts made so far, the one that just ended included.
        policy: The method's retry policy, if any.
        throttle: The channel's retry throttle, if any; a retry decided
            here spends the pool's retry budget through it.
        pushback: The ``grpc-retry-pushback-ms`` trailer, if any: a valid
            value is the delay to use, an invalid or negative one says stop.
        now: The current time, on the clock of ``deadline``.
        deadline: When the call must end, or None.
        rng: The source of the backoff's jitter (tests pass a seeded one).

    Returns:
        Seconds to wait, or None.
    """
    if (
        policy is None
        or committed
        or code not in policy.retryable
        or attempts >= policy.max_attempts
        or (throttle is not None and not throttle.allows_retry)
    ):
        return None
    if pushback is not None:
        delay = parse_pushback(pushback)
        if delay is None:
            return None
    else:
        # A6: the n-th retry waits random(0, min(initial * multiplier**(n-1), max)).
        bound = policy.initial_backoff * policy.backoff_multiplier ** (attempts - 1)
        delay = (rng or _RNG).uniform(0, min(bound, policy.max_backoff))
    if deadline is not None and now + delay >= deadline:
        return None
    if throttle is not None and not throttle.spend(now):
        return None  # the pool's retry budget is spent
    return delay


def refused_by_stopping_server(code: StatusCode, *, draining: bool) -> bool:
    """Whether a status says a stopping server never ran the call: sent again transparently.

    grpcio's graceful stop (``server.stop(grace)``) sends GOAWAY with last_stream_id
    2^31-1, then GOAWAY with the real last id; the calls that reached it after the stop
    began (in flight as the first GOAWAY left, or opened between the two) are not run,
    yet are not refused either: each gets a Trailers-Only CANCELLED, below the last id.
    A call this client did not cancel, answered CANCELLED before any response headers
    by a server draining the connection, is such a call: the server never processed it,
    and it gets one transparent retry, as a call refused by GOAWAY does (gRFC A6).

    Args:
        code: The status of a Trailers-Only response (no response headers
            before it: the call was not committed).
        draining: Whether the connection was draining when it arrived.
    """
    return draining and code is StatusCode.CANCELLED
