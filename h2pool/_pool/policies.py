"""The pool's policies as frozen values, and the pure decisions they drive.

Retries, connection backoff and ejection are each a validated frozen
dataclass (like urllib3's ``Retry``) plus small functions that turn a policy
and the current state into a decision, so that every rule can be tested
without sockets or clocks.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from .._exceptions import (
    ConnectionClosed,
    ConnectTimeout,
    DrainInterrupted,
    H2ConnectionError,
    H2PoolError,
    H2TimeoutError,
    PoolClosed,
    PoolOverloaded,
    PoolTimeout,
    StreamReset,
)

__all__ = [
    "IDEMPOTENT_METHODS",
    "ConnectionBackoff",
    "EjectionPolicy",
    "RetryKind",
    "RetryPolicy",
    "backoff_delay",
    "classify_failure",
    "ejection_duration",
    "is_endpoint_failure",
    "may_eject",
    "parse_retry_after",
    "retry_delay",
]

#: Methods that may be sent twice without changing the result (RFC 9110 section 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how a failed request is tried again.

    Requests the server provably never processed (GOAWAY above their stream,
    REFUSED_STREAM, a connection that never opened) are always retried on
    another connection and never count here. This policy covers the rest:
    failures after which the request may have been processed, retried only
    for ``methods`` (idempotent ones by default), and responses whose status
    is in ``statuses``.

    Attributes:
        max_attempts: Attempts in all, the first included; 1 disables retries.
        backoff_initial: Delay before the second attempt, in seconds.
        backoff_multiplier: Growth of the delay per further attempt.
        backoff_max: Largest delay between attempts.
        jitter: Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
        methods: Methods retried after a failure that may have been processed.
        statuses: Response statuses that are retried (for ``methods``); the
            last response is returned when attempts run out.
        respect_retry_after: Wait as long as a ``Retry-After`` header asks,
            up to ``max_retry_after``.
        max_retry_after: Longest ``Retry-After`` honoured, in seconds; a
            longer one ends the retries.
    """

    max_attempts: int = 3
    backoff_initial: float = 0.05
    backoff_multiplier: float = 2.0
    backoff_max: float = 2.0
    jitter: float = 0.2
    methods: frozenset[str] = IDEMPOTENT_METHODS
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({503}))
    respect_retry_after: bool = True
    max_retry_after: float = 10.0

    def __post_init__(self) -> None:
        _check(self.max_attempts >= 1, "max_attempts must be at least 1")
        _check(self.backoff_initial >= 0, "backoff_initial must be >= 0")
        _check(self.backoff_multiplier >= 1, "backoff_multiplier must be >= 1")
        _check(self.backoff_max >= self.backoff_initial, "backoff_max must be >= backoff_initial")
        _check(0 <= self.jitter < 1, "jitter must be in [0, 1)")
        _check(self.max_retry_after >= 0, "max_retry_after must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionBackoff:
    """Delays between connection attempts to a failing endpoint (gRPC's connection backoff).

    Attributes:
        initial: Delay after the first failure, in seconds.
        multiplier: Growth per further consecutive failure.
        jitter: Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
        max: Largest delay.
    """

    initial: float = 1.0
    multiplier: float = 1.6
    jitter: float = 0.2
    max: float = 120.0

    def __post_init__(self) -> None:
        _check(self.initial > 0, "initial must be positive")
        _check(self.multiplier >= 1, "multiplier must be >= 1")
        _check(0 <= self.jitter < 1, "jitter must be in [0, 1)")
        _check(self.max >= self.initial, "max must be >= initial")


@dataclass(frozen=True, slots=True, kw_only=True)
class EjectionPolicy:
    """When an endpoint is taken out of rotation (outlier ejection, as in Envoy).

    Attributes:
        consecutive_failures: Failures in a row (connection attempts, or
            connections lost or declared dead) that eject an endpoint.
        base_time: The first ejection lasts this long, in seconds; the n-th
            lasts n times as long.
        max_time: Longest ejection.
        max_ejected_percent: Ejections stop when this share of endpoints is
            out; at least one endpoint is always left in, whatever the share.
    """

    consecutive_failures: int = 5
    base_time: float = 30.0
    max_time: float = 300.0
    max_ejected_percent: float = 50.0

    def __post_init__(self) -> None:
        _check(self.consecutive_failures >= 1, "consecutive_failures must be at least 1")
        _check(self.base_time > 0, "base_time must be positive")
        _check(self.max_time >= self.base_time, "max_time must be >= base_time")
        _check(0 <= self.max_ejected_percent <= 100, "max_ejected_percent must be 0..100")


def _jittered(delay: float, jitter: float, rng: random.Random | None) -> float:
    factor = (rng or random).uniform(1 - jitter, 1 + jitter)
    return delay * factor


def backoff_delay(
    policy: ConnectionBackoff, failures: int, rng: random.Random | None = None
) -> float:
    """Delay before the next connection attempt after ``failures`` consecutive failures."""
    if failures <= 0:
        return 0.0
    base = min(policy.initial * policy.multiplier ** (failures - 1), policy.max)
    return _jittered(base, policy.jitter, rng)


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Delay before attempt ``attempt + 1``, or None when it must not happen.

    ``retry_after`` is the server's ``Retry-After`` in seconds, if it gave one.
    """
    if attempt >= policy.max_attempts:
        return None
    if retry_after is not None and policy.respect_retry_after:
        return retry_after if retry_after <= policy.max_retry_after else None
    base = min(
        policy.backoff_initial * policy.backoff_multiplier ** (attempt - 1), policy.backoff_max
    )
    return _jittered(base, policy.jitter, rng)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` field given in delay-seconds (dates are ignored)."""
    if value is None:
        return None
    value = value.strip()
    return float(value) if value.isdigit() else None


class RetryKind(enum.Enum):
    """How a failed attempt may be retried (see :func:`classify_failure`)."""

    NO = "no"  #: raise the error
    AT_ONCE = "at_once"  #: never processed: retry now on another connection, not counted
    SPACED = "spaced"  #: cut off by the server's own drain: retry after a backoff, not counted
    COUNTED = "counted"  #: may have been processed but idempotent: counts as an attempt


def classify_failure(
    error: H2PoolError, method: str, replayable: bool, policy: RetryPolicy
) -> RetryKind:
    """Decide whether and how a failed attempt is retried.

    Args:
        error: Why the attempt failed.
        method: The request method.
        replayable: Whether the body can be sent again (bytes, or a stream
            not yet started).
        policy: The retry policy (its ``methods`` are the idempotent ones).

    Returns:
        ``AT_ONCE`` for requests the server provably never processed,
        whatever the method; ``SPACED`` for idempotent requests cut off by a
        GOAWAY drain the server announced itself; ``COUNTED`` for other
        connection or stream failures of idempotent requests; else ``NO``.
    """
    if not replayable or isinstance(error, PoolClosed | PoolOverloaded | PoolTimeout):
        return RetryKind.NO
    if error.never_processed:
        return RetryKind.AT_ONCE
    if method not in policy.methods:
        return RetryKind.NO
    if isinstance(error, DrainInterrupted):
        return RetryKind.SPACED
    if isinstance(error, H2ConnectionError | H2TimeoutError | StreamReset):
        return RetryKind.COUNTED
    return RetryKind.NO


def is_endpoint_failure(error: BaseException) -> bool:
    """Whether a failure counts against the endpoint's health (for ejection)."""
    if isinstance(error, ConnectionClosed):
        return False  # closed on purpose: GOAWAY or shutdown
    return isinstance(error, H2ConnectionError | ConnectTimeout)


def ejection_duration(policy: EjectionPolicy, ejections: int) -> float:
    """How long the ``ejections``-th ejection of an endpoint lasts."""
    return min(policy.base_time * max(ejections, 1), policy.max_time)


def may_eject(policy: EjectionPolicy, endpoints: int, ejected: int) -> bool:
    """Whether one more endpoint may be ejected; never the last one in rotation."""
    if ejected + 1 >= endpoints:
        return False
    return (ejected + 1) * 100 <= policy.max_ejected_percent * endpoints
