"""The pool's policies as frozen values, and the pure decisions they drive.

Retries, connection backoff and ejection are each a validated frozen
dataclass (like urllib3's ``Retry``) plus small functions that turn a policy
and the current state into a decision, so that every rule can be tested
without sockets or clocks. :func:`decide_retry` owns every retry rule.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

import tenacity

from .._exceptions import (
    ConnectionClosed,
    ConnectTimeout,
    DrainInterrupted,
    H2ConnectionError,
    H2PoolError,
    H2ProtocolError,
    H2TimeoutError,
    PoolClosed,
    PoolOverloaded,
    PoolTimeout,
    StreamReset,
)
from .checks import check_count, check_fraction, check_seconds

__all__ = [
    "IDEMPOTENT_METHODS",
    "MAX_DRAIN_RETRIES",
    "ConnectionBackoff",
    "EjectionPolicy",
    "RetryAction",
    "RetryDecision",
    "RetryPolicy",
    "Tries",
    "backoff_delay",
    "decide_retry",
    "ejection_duration",
    "is_endpoint_failure",
    "may_eject",
    "parse_retry_after",
]

#: Retries of one request after GOAWAY drains cut it off, on top of its attempts: a
#: server that drains often (hypercorn every ``keep_alive_max_requests``) may cut
#: the same request a few times in a row; more than this is pathological.
MAX_DRAIN_RETRIES = 10

#: Methods that may be sent twice without changing the result (RFC 9110 section 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def _check_multiplier(name: str, value: object) -> float:
    number = check_seconds(name, value)
    assert number is not None
    if not number >= 1:
        raise ValueError(f"{name} must be >= 1, not {value!r}")
    return number


def _check_max(name: str, value: float, low: float, low_name: str) -> None:
    check_seconds(name, value, unbounded=True)
    if not value >= low:
        raise ValueError(f"{name} must be >= {low_name}, not {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how a failed request is tried again (see :func:`decide_retry`).

    Attributes:
        max_attempts: Attempts in all, the first included; 1 disables retries
            (a request refused as never processed still gets its one
            transparent retry on another connection).
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
        per_try_timeout: Bound on each attempt once it has a connection (its
            whole response for ``request()``, its response headers for
            ``stream()``), in seconds, as Envoy's ``per_try_timeout``; an
            attempt that runs out fails with ``ReadTimeout``. Setting it makes
            timeouts of an attempt retryable (for ``methods``, within the
            total timeout); None (the default): every timeout is final.
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
    per_try_timeout: float | None = None

    def __post_init__(self) -> None:
        check_count("max_attempts", self.max_attempts, 1)
        check_seconds("backoff_initial", self.backoff_initial, zero=True)
        _check_multiplier("backoff_multiplier", self.backoff_multiplier)
        _check_max("backoff_max", self.backoff_max, self.backoff_initial, "backoff_initial")
        check_fraction("jitter", self.jitter, 0, 1, closed=False)
        check_seconds("max_retry_after", self.max_retry_after, zero=True, unbounded=True)
        check_seconds("per_try_timeout", self.per_try_timeout, optional=True)


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
        check_seconds("initial", self.initial)
        _check_multiplier("multiplier", self.multiplier)
        check_fraction("jitter", self.jitter, 0, 1, closed=False)
        _check_max("max", self.max, self.initial, "initial")


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
        consecutive_gateway_failures: Answers in a row with a status of
            ``gateway_statuses`` (or gRPC calls ending UNAVAILABLE) that
            eject an endpoint (Envoy's ``consecutive_gateway_failure``); any
            other answer resets the count; 0 turns this off.
        gateway_statuses: The statuses that count as gateway errors.
    """

    consecutive_failures: int = 5
    base_time: float = 30.0
    max_time: float = 300.0
    max_ejected_percent: float = 50.0
    consecutive_gateway_failures: int = 5
    gateway_statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 503, 504}))

    def __post_init__(self) -> None:
        check_count("consecutive_failures", self.consecutive_failures, 1)
        check_seconds("base_time", self.base_time)
        _check_max("max_time", self.max_time, self.base_time, "base_time")
        check_fraction("max_ejected_percent", self.max_ejected_percent, 0, 100, closed=True)
        check_count("consecutive_gateway_failures", self.consecutive_gateway_failures, 0)
        if not isinstance(self.gateway_statuses, frozenset) or not all(
            isinstance(status, int) and 100 <= status <= 599 for status in self.gateway_statuses
        ):
            raise ValueError(
                f"gateway_statuses must be a frozenset of statuses (100-599), "
                f"not {self.gateway_statuses!r}"
            )


def _exponential(initial: float, multiplier: float, cap: float, step: int) -> float:
    """``initial * multiplier ** (step - 1)``, capped: tenacity's schedule, which copes
    with huge exponents. The retry loop itself is plain code (see attempts.py)."""
    if not initial:
        return 0.0
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), None, (), {})
    state.attempt_number = step
    return tenacity.wait_exponential(multiplier=initial, exp_base=multiplier, max=cap)(state)


def _jittered(delay: float, jitter: float, rng: random.Random | None) -> float:
    return delay * (rng or random).uniform(1 - jitter, 1 + jitter)


def backoff_delay(
    policy: ConnectionBackoff, failures: int, rng: random.Random | None = None
) -> float:
    """Delay before the next connection attempt after ``failures`` consecutive failures."""
    if failures <= 0:
        return 0.0
    base = _exponential(policy.initial, policy.multiplier, policy.max, failures)
    return _jittered(base, policy.jitter, rng)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` field given in delay-seconds (dates are ignored)."""
    if value is None:
        return None
    value = value.strip()
    return float(value) if value.isdigit() else None


@dataclass(frozen=True, slots=True)
class Tries:
    """What a request has used of its retries so far.

    Attributes:
        attempts: Counted attempts made, the first included.
        transparent: Whether its one transparent retry (of a request refused
            as never processed) was used.
        drained: Retries after a GOAWAY drain cut the request off.
    """

    attempts: int = 1
    transparent: bool = False
    drained: int = 0


class RetryAction(enum.Enum):
    """What the retry loop does with an attempt's outcome."""

    STOP = "stop"  #: raise the error, or return the response
    RETRY = "retry"  #: try again after ``delay``


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The answer of :func:`decide_retry`.

    Attributes:
        action: Stop or retry.
        delay: Seconds to wait before the retry.
        tries: The request's use of retries, once this retry is made.
        reason: Why, for logs.
        budgeted: Whether the retry spends the pool's retry budget: every
            retry counted as an attempt does; the transparent retry of a
            request the server never processed, and the retries of streams
            cut off by a GOAWAY drain, do not (the server did no work for
            them, or chose to stop it: they multiply no load).
    """

    action: RetryAction
    delay: float = 0.0
    tries: Tries = Tries()
    reason: str = ""
    budgeted: bool = False


def _backoff(policy: RetryPolicy, step: int, rng: random.Random | None) -> float:
    base = _exponential(policy.backoff_initial, policy.backoff_multiplier, policy.backoff_max, step)
    return _jittered(base, policy.jitter, rng)


def _stop(reason: str) -> RetryDecision:
    return RetryDecision(RetryAction.STOP, reason=reason)


def _counted(
    policy: RetryPolicy,
    tries: Tries,
    now: float,
    deadline: float | None,
    retry_after: float | None,
    rng: random.Random | None,
    reason: str,
) -> RetryDecision:
    """A retry that counts as an attempt: within max_attempts, the deadline and Retry-After."""
    if tries.attempts >= policy.max_attempts:
        return _stop(f"{reason}; {policy.max_attempts} attempts made")
    if retry_after is not None and policy.respect_retry_after:
        if retry_after > policy.max_retry_after:
            return _stop(f"{reason}; Retry-After {retry_after:g}s is beyond max_retry_after")
        delay = retry_after
    else:
        delay = _backoff(policy, tries.attempts, rng)
    if deadline is not None and now + delay >= deadline:
        return _stop(f"{reason}; no time left for another attempt")
    counted = Tries(tries.attempts + 1, tries.transparent, tries.drained)
    return RetryDecision(RetryAction.RETRY, delay, counted, reason, budgeted=True)


def decide_retry(
    outcome: H2PoolError | int,
    *,
    method: str,
    replayable: bool,
    tries: Tries,
    now: float,
    deadline: float | None,
    policy: RetryPolicy,
    retry_after: float | None = None,
    rng: random.Random | None = None,
    connected: bool = True,
) -> RetryDecision:
    """Decide whether and when an attempt is made again. Every retry rule is here.

    The rules, in order (the table in docs/pool.md says the same):

    1. A response: retried only if its status is in ``policy.statuses``, the
       method in ``policy.methods`` and the body replayable; as a counted
       attempt, after ``Retry-After`` (if respected) or the backoff.
    2. A body that cannot be sent again (a streamed upload already started)
       is never retried; nor are the pool's own refusals (closed,
       overloaded, pool timeout) and protocol errors (a retry would break
       the same way); nor is an attempt that got no connection (not
       ``connected``): the pool waited for one as the request allowed
       (``wait_for_ready``, the connect and pool timeouts) and found no
       endpoint reachable, which a retry would only find again.
    3. Never processed by the server (GOAWAY above the stream, REFUSED_STREAM,
       a connection that never opened): one transparent retry at once, on
       another connection, not counted (gRFC A6); after it, counted retries
       with backoff, whatever the method (a refusing server must not get a
       flood of attempts).
    4. Any other failure may have been processed: only ``policy.methods``
       are retried. A timeout is final (the server may be busy processing
       the request: retrying multiplies its load), unless the policy sets
       ``per_try_timeout``: then it is a counted retry. A stream cut off by the
       server's own GOAWAY drain is retried after the backoff without
       counting, at most ``MAX_DRAIN_RETRIES`` (10) times. Other connection failures
       and stream resets are counted retries.

    A retry whose delay would end past ``deadline`` is not made. Counted
    retries are ``budgeted``: the pool makes them only if its retry budget
    allows (see :mod:`.budget`).

    Args:
        outcome: The attempt's error, or the status of its response.
        method: The request method.
        replayable: Whether the body can be sent again.
        tries: What the request used of its retries so far.
        now: The event-loop time.
        deadline: The request's total deadline, or None.
        policy: The retry policy.
        retry_after: The response's ``Retry-After`` in seconds, if any.
        rng: Random source for the jitter (tests pass a seeded one).
        connected: Whether the attempt got a connection (False: it failed
            waiting for one).
    """
    if isinstance(outcome, int):
        if outcome not in policy.statuses or method not in policy.methods:
            return _stop(f"status {outcome} is final")
        if not replayable:
            return _stop(f"status {outcome}: the body cannot be sent again")
        return _counted(policy, tries, now, deadline, retry_after, rng, f"status {outcome}")
    error = outcome
    if not replayable:
        return _stop("the body cannot be sent again")
    if isinstance(error, PoolClosed | PoolOverloaded | PoolTimeout | H2ProtocolError):
        return _stop(type(error).__name__)
    if not connected:
        return _stop(f"no endpoint reachable: {type(error).__name__}")
    if error.never_processed:
        if not tries.transparent and (deadline is None or now < deadline):
            transparent = Tries(tries.attempts, True, tries.drained)
            return RetryDecision(RetryAction.RETRY, 0.0, transparent, "never processed")
        return _counted(policy, tries, now, deadline, None, rng, "never processed")
    if method not in policy.methods:
        return _stop(f"{method} is not retried after a failure that may have been processed")
    if isinstance(error, H2TimeoutError):
        if policy.per_try_timeout is None:
            return _stop("timeouts are final (RetryPolicy.per_try_timeout retries them)")
        return _counted(policy, tries, now, deadline, None, rng, type(error).__name__)
    if isinstance(error, DrainInterrupted):
        # Spaced by the first backoff step, so the streams a drain cut off
        # do not all land together on the next connection.
        if tries.drained >= MAX_DRAIN_RETRIES:
            return _stop("cut off by GOAWAY drains too often")
        delay = _backoff(policy, 1, rng)
        if deadline is not None and now + delay >= deadline:
            return _stop("drain interrupted; no time left for another attempt")
        drained = Tries(tries.attempts, tries.transparent, tries.drained + 1)
        return RetryDecision(RetryAction.RETRY, delay, drained, "drain interrupted")
    if isinstance(error, H2ConnectionError | StreamReset):
        return _counted(policy, tries, now, deadline, None, rng, type(error).__name__)
    return _stop(type(error).__name__)


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
