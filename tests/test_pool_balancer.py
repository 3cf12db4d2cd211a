"""The balancers and outlier detection on answers: pure decisions, no sockets, no clock."""

from __future__ import annotations

import asyncio
import collections
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any, overload

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._pool.balancer import (
    DECAY,
    EXACT_LEAST_REQUEST,
    Balancer,
    PeakEwma,
    check_balancer,
    cost,
    pick,
)
from h2pool._pool.endpoint import Endpoint, eject_outlier
from h2pool._pool.routing import route
from h2pool._pool.scheduler import Scheduler
from tests.test_pool_decisions import FakeConnection, endpoint

NOW = 100.0
POLICY = h2pool.EjectionPolicy()


class CountingSequence(Sequence[Any]):
    """A sequence that counts how many of its elements were read."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.reads = 0

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        self.reads += 1
        return self.items[index]

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("iterating reads every endpoint")


def fleet(loads: Sequence[int], **state: Any) -> list[Endpoint[FakeConnection]]:
    return [
        endpoint(f"e{i}:1", FakeConnection(open_streams=load), **state)
        for i, load in enumerate(loads)
    ]


def choose(
    endpoints: Sequence[Endpoint[FakeConnection]],
    balancer: Balancer,
    turn: int = 0,
    seed: int = 0,
    **kwargs: Any,
) -> Endpoint[FakeConnection] | None:
    rng = random.Random(seed)
    decision = route(
        endpoints,
        NOW,
        waiting=1,
        functional_timeout=1.0,
        turn=turn,
        balancer=balancer,
        rng=rng.random,
        **kwargs,
    )
    return decision.endpoint if decision.connection is not None else None


class TestPublicNames:
    @pytest.mark.parametrize("name", ["p2c", "round_robin", "least_request"])
    def test_the_names_are_the_contract(self, name: str) -> None:
        assert check_balancer(name).value == name
        h2pool.Pool("http://svc.test", balancer=name)  # type: ignore[arg-type]

    @pytest.mark.parametrize("wrong", ["P2C", "random", "", None, 2])
    def test_anything_else_is_a_one_line_value_error(self, wrong: object) -> None:
        with pytest.raises(ValueError, match=r"^balancer must be one of") as caught:
            check_balancer(wrong)
        assert "\n" not in str(caught.value)

    def test_ejection_policy_knobs(self) -> None:
        policy = h2pool.EjectionPolicy()
        assert policy.consecutive_gateway_failures == 5
        assert policy.gateway_statuses == frozenset({502, 503, 504})
        h2pool.EjectionPolicy(consecutive_gateway_failures=0, gateway_statuses=frozenset())
        with pytest.raises(ValueError, match="consecutive_gateway_failures"):
            h2pool.EjectionPolicy(consecutive_gateway_failures=-1)
        with pytest.raises(ValueError, match="gateway_statuses"):
            h2pool.EjectionPolicy(gateway_statuses=frozenset({999}))
        with pytest.raises(ValueError, match="gateway_statuses"):
            h2pool.EjectionPolicy(gateway_statuses=[503])  # type: ignore[arg-type]


class TestPeakEwma:
    @given(st.lists(st.tuples(st.floats(0, 5), st.floats(0, 30)), min_size=1, max_size=30))
    def test_a_sample_is_never_hidden_and_a_peak_is_taken_at_once(
        self, samples: list[tuple[float, float]]
    ) -> None:
        ewma, now = PeakEwma(), 0.0
        for latency, gap in samples:
            now += gap
            before = ewma.value(now)
            ewma.observe(latency, now)
            after = ewma.value(now)
            floored = max(latency, 1e-6)  # latencies are floored at 1 µs
            assert after is not None
            if before is None or floored >= before:
                assert after == floored  # the peak replaces the average
            else:
                assert floored - 1e-12 <= after <= before  # a lower sample lowers it, a little

    @given(st.floats(1e-4, 10), st.floats(0, 100), st.floats(0, 100))
    def test_it_decays_toward_zero_without_samples(
        self, latency: float, first: float, second: float
    ) -> None:
        ewma = PeakEwma()
        ewma.observe(latency, 0.0)
        early, late = sorted((first, second))
        early_value, late_value = ewma.value(early), ewma.value(late)
        assert early_value is not None
        assert late_value is not None
        assert late_value <= early_value <= latency
        half_life = DECAY * math.log(2)
        assert ewma.value(half_life) == pytest.approx(latency / 2)

    def test_it_converges_to_a_steady_latency_after_a_spike(self) -> None:
        ewma = PeakEwma()
        ewma.observe(1.0, 0.0)  # a spike
        for step in range(1, 3001):
            ewma.observe(0.01, step * 0.01)  # 100 answers a second for 30 s
        value = ewma.value(30.0)
        assert value is not None
        assert value == pytest.approx(0.01, rel=0.1)

    @given(st.floats(0, 10), st.floats(0, 10), st.floats(0, 10))
    def test_failures_never_lower_it(self, latency: float, failure: float, gap: float) -> None:
        ewma = PeakEwma()
        ewma.observe(latency, 0.0)
        before = ewma.value(gap)
        assert before is not None
        ewma.observe(failure, gap, lower=False)
        after = ewma.value(gap)
        assert after is not None
        assert after == max(before, failure, 1e-6)

    def test_a_failure_is_no_first_measure(self) -> None:
        ewma = PeakEwma()
        ewma.observe(0.001, 0.0, lower=False)
        assert ewma.value(0.0) is None  # still probed one request at a time

    def test_cost(self) -> None:
        assert cost(None, 0) == 0.0  # never measured: takes one request at once
        assert cost(None, 1) > cost(10.0, 1000)  # then waits for its answer
        assert cost(None, 2) > cost(None, 1)
        assert cost(0.1, 0) == pytest.approx(0.1)
        assert cost(0.1, 3) == pytest.approx(0.4)
        assert cost(0.0, 5) > cost(0.0, 4) > 0  # a zero latency hides no load


class TestP2C:
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 100),  # open streams (100: full)
                st.sampled_from(["fine", "ejected", "closed"]),
                st.none() | st.floats(1e-4, 1.0),  # latency estimate
            ),
            min_size=1,
            max_size=12,
        ),
        st.integers(0, 1000),
        st.integers(0, 1000),
    )
    def test_never_picks_an_ejected_or_closed_endpoint(
        self, layout: list[tuple[int, str, float | None]], turn: int, seed: int
    ) -> None:
        endpoints = []
        for i, (load, state, latency) in enumerate(layout):
            ep = endpoint(
                f"e{i}:1",
                FakeConnection(open_streams=load),
                ejected_until=200.0 if state == "ejected" else 0.0,
            )
            ep.closed = state == "closed"
            if latency is not None:
                ep.latency.observe(latency, NOW)
            endpoints.append(ep)
        chosen = choose(endpoints, Balancer.P2C, turn, seed)
        open_ones = [ep for ep in endpoints if not ep.closed]
        if chosen is not None:
            assert not chosen.closed
            if any(not ep.ejected(NOW) for ep in open_ones):
                assert not chosen.ejected(NOW)  # ejected ones only when all are
        free = [ep for ep in open_ones if ep.connections[0].open_streams < 100]
        in_rotation = [ep for ep in free if not ep.ejected(NOW)] or (
            free if all(ep.ejected(NOW) for ep in open_ones) else []
        )
        assert (chosen is None) == (not in_rotation)

    @pytest.mark.parametrize("balancer", list(Balancer))
    @pytest.mark.parametrize("size", [10, 100, 1000, 10_000])
    def test_reads_a_bounded_number_of_endpoints_whatever_their_number(
        self, balancer: Balancer, size: int
    ) -> None:
        rng = random.Random(size)
        endpoints = fleet([rng.randrange(0, 50) for _ in range(size)])
        for ep in endpoints:
            ep.latency.observe(rng.uniform(0.001, 0.1), NOW)
        worst = 0
        for turn in range(200):
            in_rotation = CountingSequence(endpoints)
            assert choose(endpoints, balancer, turn, turn, in_rotation=in_rotation) is not None
            worst = max(worst, in_rotation.reads)
        bound = EXACT_LEAST_REQUEST if balancer is Balancer.LEAST_REQUEST else 2
        assert worst <= max(bound, 2) + 1  # the rank of each sample, then the winner's read

    def test_the_cheaper_of_two_wins(self) -> None:
        fast, slow = fleet([0, 0])
        fast.latency.observe(0.001, NOW)
        slow.latency.observe(0.05, NOW)
        assert {choose([fast, slow], Balancer.P2C, turn) for turn in range(10)} == {fast}
        fast.connections[0].open_streams = 99  # 0.001 x 100 > 0.05 x 1
        assert choose([fast, slow], Balancer.P2C) is slow

    def test_a_slow_endpoint_gets_a_small_share_of_many(self) -> None:
        endpoints = fleet([0] * 20)
        for ep in endpoints:
            ep.latency.observe(0.01, NOW)
        endpoints[7].latency.observe(0.2, NOW)
        chosen = collections.Counter(
            choose(endpoints, Balancer.P2C, turn, turn).address  # type: ignore[union-attr]
            for turn in range(2000)
        )
        # With no load, the slow one wins no pair.
        assert chosen["e7:1"] == 0
        assert len(chosen) == 19

    def test_falls_back_to_a_full_scan_only_when_sampling_fails(self) -> None:
        endpoints = fleet([100] * 999 + [0])  # only the last has a free slot
        in_rotation = CountingSequence(endpoints)
        chosen = choose(endpoints, Balancer.P2C, in_rotation=in_rotation)
        assert chosen is endpoints[-1]
        assert in_rotation.reads > len(endpoints)  # found, at the cost of a scan

    @given(st.integers(2, 40), st.integers(0, 10_000), st.integers(0, 10_000))
    def test_an_avoided_endpoint_is_taken_only_if_no_other_can(
        self, size: int, turn: int, seed: int
    ) -> None:
        endpoints = fleet([0] * size)
        avoid = frozenset(ep.address for ep in endpoints[: size - 1])
        chosen = choose(endpoints, Balancer.P2C, turn, seed, avoid=avoid)
        assert chosen is endpoints[-1]
        endpoints[-1].connections[0].open_streams = 100
        assert choose(endpoints, Balancer.P2C, turn, seed, avoid=avoid) is not None


class TestRoundRobin:
    @given(st.integers(1, 30), st.integers(1, 5), st.integers(0, 1000))
    def test_each_endpoint_gets_its_turn(self, size: int, rounds: int, start: int) -> None:
        endpoints = fleet([0] * size)
        chosen = collections.Counter(
            choose(endpoints, Balancer.ROUND_ROBIN, start + turn) for turn in range(size * rounds)
        )
        assert set(chosen.values()) == {rounds}
        assert len(chosen) == size

    def test_a_full_endpoint_passes_its_turn(self) -> None:
        endpoints = fleet([0, 100, 0])
        assert choose(endpoints, Balancer.ROUND_ROBIN, 1) is endpoints[2]


class TestLeastRequest:
    @given(st.lists(st.integers(0, 99), min_size=1, max_size=EXACT_LEAST_REQUEST))
    def test_picks_the_least_loaded_of_a_small_pool(self, loads: list[int]) -> None:
        chosen = choose(fleet(loads), Balancer.LEAST_REQUEST)
        assert chosen is not None
        assert chosen.connections[0].open_streams == min(loads)

    @given(st.integers(0, 10_000), st.integers(0, 10_000))
    def test_samples_two_in_a_large_pool(self, turn: int, seed: int) -> None:
        loads = [(i * 37) % 90 for i in range(100)]
        endpoints = fleet(loads)
        chosen = choose(endpoints, Balancer.LEAST_REQUEST, turn, seed)
        assert chosen is not None
        first = endpoints[turn % 100]  # the first of the two samples
        assert chosen.connections[0].open_streams <= first.connections[0].open_streams

    def test_ties_rotate(self) -> None:
        endpoints = fleet([3, 3, 3])
        assert {choose(endpoints, Balancer.LEAST_REQUEST, turn) for turn in range(3)} == set(
            endpoints
        )


class TestPick:
    @given(st.integers(0, 50), st.integers(0, 100), st.sampled_from(list(Balancer)))
    def test_none_only_when_nothing_can_take_the_request(
        self, count: int, first: int, balancer: Balancer
    ) -> None:
        rng = random.Random(first)
        takers = {i for i in range(count) if rng.random() < 0.1}
        index = pick(
            balancer,
            count,
            first,
            lambda i: (False, False, 1.0) if i in takers else None,
            rng.random,
        )
        assert (index is None) == (not takers)
        assert index is None or index in takers


class TestOutliers:
    @given(st.lists(st.sampled_from([200, 404, 500, 502, 503, 504, None]), max_size=40))
    def test_gateway_errors_are_counted_in_a_row(self, outcomes: list[int | None]) -> None:
        policy = h2pool.EjectionPolicy(consecutive_gateway_failures=1000)
        ep = endpoint("a:1")
        streak = 0
        for now, status in enumerate(outcomes):
            ep.answered(status, 0.01, float(now), policy)
            if status in policy.gateway_statuses:
                streak += 1
            elif status is not None:  # another answer resets; an error does not count
                streak = 0
            assert ep.gateway_failures == streak

    def test_the_count_ejects_at_the_policy_s_threshold_and_says_why(self) -> None:
        policy = h2pool.EjectionPolicy(consecutive_gateway_failures=3)
        ep = endpoint("a:1")
        assert ep.answered(502, 0.01, NOW, policy) is None
        assert ep.answered(504, 0.01, NOW, policy) is None
        reason = ep.answered(503, 0.01, NOW, policy)
        assert reason == "3 gateway errors in a row, the last: status 503"
        others = [endpoint(f"b{i}:1") for i in range(3)]
        assert eject_outlier([ep, *others], ep, NOW, policy, reason) == policy.base_time
        assert ep.ejected(NOW)
        assert ep.stats(NOW).ejection_reason == reason
        assert ep.gateway_failures == 0
        assert ep.answered(503, 0.01, NOW, policy) is None  # ejected already

    def test_configurable_statuses_and_off(self) -> None:
        only_500 = h2pool.EjectionPolicy(
            consecutive_gateway_failures=1, gateway_statuses=frozenset({500})
        )
        ep = endpoint("a:1")
        assert ep.answered(503, 0.01, NOW, only_500) is None
        assert ep.answered(500, 0.01, NOW, only_500) is not None
        off = h2pool.EjectionPolicy(consecutive_gateway_failures=0)
        assert all(ep.answered(503, 0.01, NOW, off) is None for _ in range(20))

    def test_grpc_unavailable_recounts_the_answer_that_carried_it(self) -> None:
        policy = h2pool.EjectionPolicy(consecutive_gateway_failures=3)
        ep = endpoint("a:1")
        reasons = []
        for _ in range(3):
            assert ep.answered(200, 0.01, NOW, policy) is None  # HTTP 200 ...
            reasons.append(ep.rpc_unavailable(NOW, policy))  # ... with grpc-status 14
        assert reasons == [None, None, "3 gateway errors in a row, the last: gRPC UNAVAILABLE"]
        ep = endpoint("a:1")
        ep.answered(200, 0.01, NOW, policy)
        ep.rpc_unavailable(NOW, policy)
        ep.answered(200, 0.01, NOW, policy)  # an OK call
        ep.answered(200, 0.01, NOW, policy)  # the next call's 200 ...
        ep.rpc_unavailable(NOW, policy)  # ... UNAVAILABLE: the OK call had reset the count
        assert ep.gateway_failures == 1

    @given(st.integers(1, 20), st.floats(0, 100), st.lists(st.integers(0, 19), max_size=60))
    def test_never_all_endpoints_are_ejected(
        self, size: int, percent: float, failing: list[int]
    ) -> None:
        policy = h2pool.EjectionPolicy(max_ejected_percent=percent)
        endpoints = [endpoint(f"e{i}:1") for i in range(size)]
        for index in failing:
            ep = endpoints[index % size]
            if not ep.ejected(NOW):
                eject_outlier(endpoints, ep, NOW, policy, "test")
        ejected = sum(ep.ejected(NOW) for ep in endpoints)
        assert ejected < size
        assert ejected <= max(0, math.floor(size * percent / 100))

    def test_stats_show_the_balancer_s_view(self) -> None:
        ep = endpoint("a:1", FakeConnection(open_streams=3, reserved=1))
        stats = ep.stats(NOW)
        assert (stats.latency, stats.outstanding, stats.score) == (None, 4, None)
        ep.latency.observe(0.02, NOW)
        stats = ep.stats(NOW)
        assert stats.latency == pytest.approx(0.02)
        assert stats.score == pytest.approx(0.02 * 5)


class TestRotationKeptBetweenEvents:
    async def test_an_ejection_and_its_end_change_the_rotation(self) -> None:
        scheduler = Scheduler(
            functional_timeout=1.0,
            max_pending=10,
            wait_for_ready=False,
            open_connection=lambda endpoint, timeout, observer: None,
        )
        first, second = fleet([0, 0])
        scheduler.endpoints = [first, second]  # type: ignore[list-item]

        def chosen() -> set[str]:
            addresses = set()
            for _ in range(20):
                grant = scheduler.try_acquire(None)
                assert grant is not None
                scheduler.give_back(grant.channel)
                addresses.add(grant.endpoint.address)
            return addresses

        assert chosen() == {"e0:1", "e1:1"}
        now = asyncio.get_running_loop().time()
        first.ejected_until = now + 0.05
        assert chosen() == {"e0:1", "e1:1"}  # kept until told ...
        scheduler.changed()
        assert chosen() == {"e1:1"}  # ... as maintenance does on every ejection
        await asyncio.sleep(0.06)  # the ejection ends: no event, the time says so
        assert chosen() == {"e0:1", "e1:1"}
        scheduler.endpoints = [first]  # type: ignore[list-item]
        assert chosen() == {"e0:1"}
