"""The retry budget and hedging as pure decisions: no sockets, no clock."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._pool.budget import BUCKETS, Spending, allows_retry
from h2pool._pool.endpoint import rotation
from h2pool._pool.hedging import Verdict, avoided, hedge_for, judge
from h2pool._pool.outgoing import OutgoingRequest, build_request
from h2pool._pool.policies import IDEMPOTENT_METHODS
from tests import test_pool_retry_rules as retry_rules
from tests.test_pool_decisions import FakeConnection, decide, endpoint, free_slots

# --- Retry budget ----------------------------------------------------------------------------

# An event: (seconds since the previous one, whether it is a retry rather than a request).
events = st.lists(
    st.tuples(st.floats(0, 3, allow_nan=False), st.booleans()), min_size=1, max_size=300
)
budgets = st.builds(
    h2pool.RetryBudget,
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    min_per_second=st.sampled_from([0.0, 1.0, 2.5, 10.0]),
)


class Reference:
    """The budget as its definition says, with every event kept: the O(1) one must agree."""

    def __init__(self, budget: h2pool.RetryBudget) -> None:
        self.budget = budget
        self.requests: list[int] = []  # the second of each
        self.retries: list[int] = []

    def window(self, times: list[int], now: float) -> int:
        second = int(now)
        return sum(1 for t in times if second - BUCKETS < t <= second)

    def deposit(self, now: float) -> None:
        self.requests.append(int(now))

    def try_spend(self, now: float) -> bool:
        this_second = sum(1 for t in self.retries if t == int(now))
        if not allows_retry(
            self.budget,
            self.window(self.requests, now),
            self.window(self.retries, now),
            this_second,
        ):
            return False
        self.retries.append(int(now))
        return True


@given(budgets, events)
def test_the_budget_counts_as_its_definition_says(
    budget: h2pool.RetryBudget, sequence: list[tuple[float, bool]]
) -> None:
    spending, reference = Spending(budget), Reference(budget)
    now = 1000.0
    for step, retry in sequence:
        now += step
        if retry:
            assert spending.try_spend(now) == reference.try_spend(now)
        else:
            spending.deposit(now)
            reference.deposit(now)
        assert spending.requests == reference.window(reference.requests, now)
        assert spending.retries == reference.window(reference.retries, now)
        assert len(spending._requests) == len(spending._retries) == BUCKETS  # O(1) state


@given(budgets, events)
def test_the_budget_never_allows_more_than_its_bound_over_any_window(
    budget: h2pool.RetryBudget, sequence: list[tuple[float, bool]]
) -> None:
    """In any window of the budget's length, the retries allowed stay under ``ratio`` of
    the requests of that window and the one before it (the window slides: requests that
    allowed a retry may have left it since), plus ``min_per_second`` for each second."""
    spending = Spending(budget)
    now = 1000.0
    requests: list[float] = []
    retries: list[float] = []
    for step, retry in sequence:
        now += step
        if not retry:
            spending.deposit(now)
            requests.append(now)
        elif spending.try_spend(now):
            retries.append(now)
    for start in {int(t) for t in retries}:
        end = start + BUCKETS
        inside = sum(1 for t in retries if start <= t < end)
        earned = sum(1 for t in requests if start - BUCKETS < t < end)
        floor = -(-budget.min_per_second // 1) * BUCKETS  # per second, rounded up
        assert inside <= budget.ratio * earned + floor


def test_an_outage_is_held_to_the_ratio_and_the_floor() -> None:
    # 500 requests in one second, each wanting four retries: 100 (20%) are allowed.
    spending = Spending(h2pool.RetryBudget())
    for _ in range(500):
        spending.deposit(5.0)
    allowed = sum(spending.try_spend(5.5) for _ in range(2000))
    assert allowed == 100
    # The floor: 10 a second, with no request at all.
    idle = Spending(h2pool.RetryBudget())
    assert sum(idle.try_spend(100.2) for _ in range(50)) == 10
    assert sum(idle.try_spend(101.2) for _ in range(50)) == 10
    # Requests leave the window after 10 seconds, and what they allowed with them.
    assert spending.try_spend(16.0)
    assert spending.requests == 0


# --- Transparent retries do not spend the budget ----------------------------------------------


def test_only_retries_counted_as_attempts_spend_the_budget() -> None:
    refused = retry_rules.decide(h2pool.StreamRefused("refused"))
    assert (refused.reason, refused.budgeted) == ("never processed", False)
    assert not retry_rules.decide(h2pool.DrainInterrupted("cut")).budgeted
    again = retry_rules.decide(h2pool.StreamRefused("refused"), tries=refused.tries)
    assert again.budgeted  # after the transparent retry, refusals are counted
    assert retry_rules.decide(503).budgeted
    assert retry_rules.decide(h2pool.StreamReset("reset")).budgeted
    assert not retry_rules.decide(404).budgeted


# --- Which requests are hedged ---------------------------------------------------------------

HEDGE = h2pool.HedgePolicy(delay=0.05)
OTHER = h2pool.HedgePolicy(delay=0.2, max_attempts=3)


@pytest.mark.parametrize(
    ("method", "streamed", "given_", "pool", "expected"),
    [
        (method, streamed, given_, pool, expected)
        for method, streamed, given_, pool in itertools.product(
            ["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH"],
            [False, True],
            [None, OTHER],
            [None, HEDGE],
        )
        if not (streamed and given_ is not None)
        for expected in [
            given_
            if given_ is not None
            else (pool if method in IDEMPOTENT_METHODS and not streamed else None)
        ]
    ],
)
def test_which_requests_are_hedged(
    method: str,
    streamed: bool,
    given_: h2pool.HedgePolicy | None,
    pool: h2pool.HedgePolicy | None,
    expected: h2pool.HedgePolicy | None,
) -> None:
    assert hedge_for(method, streamed=streamed, given=given_, pool=pool) is expected


def test_a_streamed_body_cannot_be_hedged_even_when_asked() -> None:
    with pytest.raises(ValueError, match="body in memory"):
        hedge_for("GET", streamed=True, given=HEDGE, pool=None)


@given(st.integers(100, 599))
def test_statuses_end_a_hedged_request_unless_not_final(status: int) -> None:
    policy = h2pool.HedgePolicy(delay=0.05, statuses=frozenset({502, 503}))
    assert judge(status, policy) is (Verdict.NEXT if status in (502, 503) else Verdict.WIN)


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (h2pool.StreamReset("reset"), Verdict.NEXT),
        (h2pool.ConnectionLost("lost"), Verdict.NEXT),
        (h2pool.ReadTimeout("per try"), Verdict.NEXT),
        (h2pool.StreamRefused("refused"), Verdict.NEXT),
        (h2pool.PoolClosed("closed"), Verdict.WAIT),
        (h2pool.PoolOverloaded("overloaded"), Verdict.WAIT),
        (h2pool.PoolTimeout("no slot"), Verdict.WAIT),
        (h2pool.H2ProtocolError("broken"), Verdict.WAIT),
    ],
)
def test_errors_never_end_a_hedged_request_while_copies_may_answer(
    error: h2pool.H2PoolError, verdict: Verdict
) -> None:
    assert judge(error, HEDGE) is verdict


# --- Hedges go to different endpoints -------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.booleans()),  # (streams open of 3, ejected)
        min_size=1,
        max_size=5,
    ),
    st.integers(2, 5),
)
def test_hedges_never_go_to_the_same_endpoint_while_another_in_rotation_has_room(
    layout: list[tuple[int, bool]], copies: int
) -> None:
    eps = [
        endpoint(
            f"e{index}:1",
            FakeConnection(open_streams=busy, max_streams=3),
            ejected_until=1e9 if ejected else 0.0,
        )
        for index, (busy, ejected) in enumerate(layout)
    ]
    request = build_request("GET", "/", [], None, None, h2pool.Timeouts())
    sent: list[OutgoingRequest] = []
    for _ in range(copies):
        avoid = avoided(request, sent)
        decision = decide(eps, avoid=avoid)
        if decision.connection is None:
            break
        chosen = decision.endpoint
        others_with_room = [
            ep
            for ep in rotation(eps, 100.0)
            if ep.address not in avoid and any(free_slots(c) > 0 for c in ep.connections)
        ]
        if others_with_room:
            assert chosen.address not in avoid
        decision.connection.reserved += 1  # the copy's slot
        sent.append(dataclasses.replace(request, sent_to=chosen.address))
