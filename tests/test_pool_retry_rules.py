"""decide_retry: every retry rule, as a pure function, without sockets or clocks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._pool.policies import (
    MAX_DRAIN_RETRIES,
    RetryAction,
    RetryDecision,
    Tries,
    decide_retry,
)

POLICY = h2pool.RetryPolicy(jitter=0.0)  # backoff 0.05, 0.1, ... exactly
FRESH = Tries()


def decide(
    outcome: h2pool.H2PoolError | int,
    method: str = "GET",
    *,
    replayable: bool = True,
    tries: Tries = FRESH,
    now: float = 0.0,
    deadline: float | None = None,
    policy: h2pool.RetryPolicy = POLICY,
    retry_after: float | None = None,
) -> RetryDecision:
    return decide_retry(
        outcome,
        method=method,
        replayable=replayable,
        tries=tries,
        now=now,
        deadline=deadline,
        policy=policy,
        retry_after=retry_after,
        rng=random.Random(0),
    )


RETRY, STOP = RetryAction.RETRY, RetryAction.STOP


@pytest.mark.parametrize(
    ("error", "method", "replayable", "action", "counted"),
    [
        # Never processed: one transparent retry whatever the method.
        (h2pool.StreamRefused("goaway"), "POST", True, RETRY, False),
        (h2pool.ConnectError("refused"), "PATCH", True, RETRY, False),
        (h2pool.ConnectTimeout("slow"), "POST", True, RETRY, False),
        (h2pool.StreamRefused("goaway"), "POST", False, STOP, False),
        # Cut off by the server's own drain: idempotent only, not counted.
        (h2pool.DrainInterrupted("cut"), "GET", True, RETRY, False),
        (h2pool.DrainInterrupted("cut"), "POST", True, STOP, False),
        # May have been processed: idempotent only, counted.
        (h2pool.ConnectionLost("lost"), "GET", True, RETRY, True),
        (h2pool.ConnectionDead("silent"), "PUT", True, RETRY, True),
        (h2pool.StreamReset("reset"), "DELETE", True, RETRY, True),
        (h2pool.ConnectionLost("lost"), "POST", True, STOP, False),
        (h2pool.ConnectionLost("lost"), "GET", False, STOP, False),
        # Never retried.
        (h2pool.H2ProtocolError("bad"), "GET", True, STOP, False),
        (h2pool.LocalProtocolError("bad header"), "GET", True, STOP, False),
        (h2pool.H2ProtocolError("bad", never_processed=True), "GET", True, STOP, False),
        (h2pool.PoolOverloaded("full"), "GET", True, STOP, False),
        (h2pool.PoolClosed("closed"), "GET", True, STOP, False),
        (h2pool.PoolTimeout("no slot"), "GET", True, STOP, False),
        (h2pool.ReadTimeout("slow"), "GET", True, STOP, False),
        (h2pool.WriteTimeout("slow"), "PUT", True, STOP, False),
        (h2pool.ReadTimeout("slow"), "POST", True, STOP, False),
        (h2pool.StreamClosed("closed"), "GET", True, STOP, False),
    ],
)
def test_failure_rules(
    error: h2pool.H2PoolError, method: str, replayable: bool, action: RetryAction, counted: bool
) -> None:
    decision = decide(error, method, replayable=replayable)
    assert decision.action is action, decision.reason
    if action is RETRY:
        assert (decision.tries.attempts == 2) is counted


def test_one_transparent_retry_then_backoff_and_attempts() -> None:
    refused = h2pool.StreamRefused("refused")
    first = decide(refused, "POST")
    assert (first.action, first.delay) == (RETRY, 0.0)
    assert first.tries == Tries(1, transparent=True)
    second = decide(refused, "POST", tries=first.tries)
    assert second.action is RETRY
    assert second.delay == pytest.approx(0.05)
    assert second.tries.attempts == 2
    third = decide(refused, "POST", tries=second.tries)
    assert third.delay == pytest.approx(0.1)
    assert decide(refused, "POST", tries=third.tries).action is STOP  # 3 attempts made


def test_backoff_grows_and_stops_at_max_attempts() -> None:
    policy = h2pool.RetryPolicy(max_attempts=3, backoff_initial=0.1, jitter=0.0)
    lost = h2pool.ConnectionLost("lost")
    assert decide(lost, policy=policy).delay == pytest.approx(0.1)
    assert decide(lost, policy=policy, tries=Tries(2)).delay == pytest.approx(0.2)
    assert decide(lost, policy=policy, tries=Tries(3)).action is STOP


def test_a_retry_past_the_deadline_is_not_made() -> None:
    lost = h2pool.ConnectionLost("lost")
    assert decide(lost, now=10.0, deadline=10.04).action is STOP  # backoff 0.05
    assert decide(lost, now=10.0, deadline=10.06).action is RETRY
    refused = h2pool.StreamRefused("refused")
    assert decide(refused, tries=Tries(1, True), now=10.0, deadline=10.04).action is STOP


def test_statuses() -> None:
    assert decide(503).action is RETRY
    assert decide(500).action is STOP  # not in statuses
    assert decide(503, "POST").action is STOP  # not idempotent
    assert decide(503, replayable=False).action is STOP
    assert decide(503, tries=Tries(3)).action is STOP


def test_retry_after_is_honoured_up_to_its_bound() -> None:
    policy = h2pool.RetryPolicy(max_retry_after=5)
    assert decide(503, policy=policy, retry_after=3).delay == 3
    assert decide(503, policy=policy, retry_after=60).action is STOP
    ignoring = h2pool.RetryPolicy(respect_retry_after=False, jitter=0.0)
    assert decide(503, policy=ignoring, retry_after=3).delay == pytest.approx(0.05)


def test_drain_retries_are_bounded() -> None:
    cut = h2pool.DrainInterrupted("cut")
    tries = Tries()
    for _ in range(MAX_DRAIN_RETRIES):
        decision = decide(cut, tries=tries)
        assert decision.action is RETRY
        assert decision.delay == pytest.approx(0.05)
        tries = decision.tries
    assert decide(cut, tries=tries).action is STOP


ERRORS = st.sampled_from(
    [
        h2pool.StreamRefused("x"),
        h2pool.ConnectError("x"),
        h2pool.ConnectTimeout("x"),
        h2pool.DrainInterrupted("x"),
        h2pool.ConnectionLost("x"),
        h2pool.ConnectionDead("x"),
        h2pool.StreamReset("x"),
        h2pool.ReadTimeout("x"),
        h2pool.H2ProtocolError("x"),
        h2pool.PoolTimeout("x"),
    ]
)
OUTCOMES = st.one_of(ERRORS, st.sampled_from([200, 404, 500, 503]))


@given(
    outcomes=st.lists(OUTCOMES, min_size=1, max_size=60),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH"]),
    max_attempts=st.integers(1, 5),
    deadline=st.one_of(st.none(), st.floats(0.0, 5.0)),
)
def test_any_sequence_of_outcomes_is_bounded(
    outcomes: list[h2pool.H2PoolError | int], method: str, max_attempts: int, deadline: float | None
) -> None:
    """Whatever happens, a request makes a bounded number of attempts, within its deadline."""
    policy = h2pool.RetryPolicy(max_attempts=max_attempts)
    tries, now, made = Tries(), 0.0, 1
    for outcome in outcomes:
        decision = decide(outcome, method, tries=tries, now=now, deadline=deadline, policy=policy)
        if decision.action is STOP:
            break
        assert decision.delay >= 0
        now += decision.delay
        assert deadline is None or now < deadline
        assert decision.tries.attempts <= max_attempts
        if isinstance(outcome, h2pool.H2PoolError) and not outcome.never_processed:
            assert method in policy.methods  # only idempotent requests after maybe-processed
        tries, made = decision.tries, made + 1
    assert made <= max_attempts + 1 + MAX_DRAIN_RETRIES
