"""The pool's pure decisions: routing, retries, backoff, ejection, endpoint state."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._pool.endpoint import Endpoint, split_address
from h2pool._pool.policies import (
    backoff_delay,
    ejection_duration,
    is_endpoint_failure,
    may_eject,
    parse_retry_after,
)
from h2pool._pool.routing import route


@dataclass
class FakeConnection:
    """What routing reads of a connection."""

    open_streams: int = 0
    max_streams: int = 100
    last_received: float = 100.0
    accepting_streams: bool = True
    functional: bool = True
    ping_interval: float = 1.0
    rtt: float | None = None
    reserved: int = 0


def free_slots(conn: FakeConnection) -> int:
    """Slots a new request may still take (reservations count as taken)."""
    return conn.max_streams - conn.open_streams - conn.reserved


def endpoint(address: str, *connections: FakeConnection, **state: Any) -> Endpoint[FakeConnection]:
    ep: Endpoint[FakeConnection] = Endpoint(address, **state)
    ep.connections = list(connections)
    return ep


def decide(endpoints: list[Endpoint[FakeConnection]], now: float = 100.0, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"waiting": 1, "functional_timeout": 1.0}
    options.update(kwargs)
    return route(endpoints, now, **options)


class TestRouting:
    def test_least_loaded_connection_of_least_loaded_endpoint(self) -> None:
        busy = FakeConnection(open_streams=80)
        light = FakeConnection(open_streams=10)
        lightest = FakeConnection(open_streams=5)
        a = endpoint("a:1", busy, light)  # load 90/200
        b = endpoint("b:1", lightest, FakeConnection(open_streams=60))  # load 65/200
        decision = decide([a, b])
        assert decision.connection is lightest
        assert decision.endpoint is b
        assert not decision.stale

    def test_full_draining_and_dead_connections_are_never_chosen(self) -> None:
        full = FakeConnection(open_streams=100)
        draining = FakeConnection(accepting_streams=False)
        dead = FakeConnection(functional=False, accepting_streams=False)
        ep = endpoint("a:1", full, draining, dead)
        decision = decide([ep])
        assert decision.connection is None
        assert decision.endpoint is ep  # open another connection instead
        assert dead in ep.connections  # routing changes nothing
        ep.prune()
        assert dead not in ep.connections  # dropped as it ended, on an event

    def test_ejected_endpoints_are_skipped_unless_none_is_left(self) -> None:
        conn_a, conn_b = FakeConnection(), FakeConnection(open_streams=50)
        a = endpoint("a:1", conn_a, ejected_until=200.0)
        b = endpoint("b:1", conn_b)
        assert decide([a, b]).connection is conn_b
        assert decide([a]).connection is conn_a  # the only one: still used

    def test_stale_connections_come_after_proven_ones_and_are_flagged(self) -> None:
        stale = FakeConnection(last_received=10.0)
        fresh = FakeConnection(open_streams=90, last_received=99.9)
        assert decide([endpoint("a:1", stale, fresh)]).connection is fresh
        decision = decide([endpoint("a:1", stale)])
        assert decision.connection is stale
        assert decision.stale

    def test_a_retry_goes_to_another_endpoint_when_one_can_take_it(self) -> None:
        light = FakeConnection(open_streams=1)
        busy = FakeConnection(open_streams=90, last_received=10.0)  # loaded and stale
        a, b = endpoint("a:1", light), endpoint("b:1", busy)
        assert decide([a, b]).connection is light
        assert decide([a, b], avoid=frozenset({"a:1"})).connection is busy
        # Only the avoided endpoint has room: used rather than waiting.
        b.connections = [FakeConnection(open_streams=100)]
        assert decide([a, b], avoid=frozenset({"a:1"})).connection is light
        # No room anywhere: a new connection is opened elsewhere first.
        a.connections = [FakeConnection(open_streams=100)]
        assert decide([a, b], avoid=frozenset({"a:1"})).endpoint is b
        assert decide([a, b], avoid=frozenset({"b:1"})).endpoint is a

    def test_ties_rotate_between_endpoints(self) -> None:
        eps = [endpoint(f"e{i}:1", FakeConnection()) for i in range(3)]
        chosen = {decide(eps, turn=turn).endpoint.address for turn in range(3)}
        assert chosen == {"e0:1", "e1:1", "e2:1"}

    def test_waits_when_connections_being_opened_will_hold_the_waiters(self) -> None:
        ep = endpoint("a:1", FakeConnection(open_streams=100), connecting=1, max_streams=100)
        assert decide([ep], waiting=100).endpoint is None  # wait
        assert decide([ep], waiting=101).endpoint is ep  # one more connection

    def test_respects_max_connections_and_backoff(self) -> None:
        full = [FakeConnection(open_streams=100) for _ in range(2)]
        assert decide([endpoint("a:1", *full, max_connections=2)]).endpoint is None
        backing_off = endpoint("a:1", next_attempt_at=150.0)
        decision = decide([backing_off])
        assert decision.endpoint is None
        assert decision.wake_at == 150.0

    def test_wake_at_covers_the_end_of_an_ejection(self) -> None:
        decision = decide([endpoint("a:1", ejected_until=130.0)])
        assert decision.endpoint is None
        assert decision.wake_at == 130.0

    @given(
        st.lists(
            st.lists(st.tuples(st.integers(0, 100), st.booleans()), max_size=4),
            min_size=1,
            max_size=4,
        )
    )
    def test_never_routes_to_a_connection_without_a_free_slot(
        self, layout: list[list[tuple[int, bool]]]
    ) -> None:
        eps = [
            endpoint(
                f"e{i}:1",
                *(FakeConnection(open_streams=n, accepting_streams=ok) for n, ok in conns),
            )
            for i, conns in enumerate(layout)
        ]
        decision = decide(eps)
        if decision.connection is not None:
            assert decision.connection.accepting_streams
            assert free_slots(decision.connection) > 0
        else:
            assert not any(
                c.accepting_streams and free_slots(c) > 0 for ep in eps for c in ep.connections
            )

    @given(st.lists(st.tuples(st.integers(0, 10), st.integers(0, 10)), min_size=1, max_size=5))
    def test_reservations_count_as_taken(self, layout: list[tuple[int, int]]) -> None:
        conns = [FakeConnection(open_streams=n, reserved=r, max_streams=10) for n, r in layout]
        decision = decide([endpoint("a:1", *conns)])
        if decision.connection is not None:
            chosen = decision.connection
            assert chosen.open_streams + chosen.reserved < chosen.max_streams
        else:
            assert all(c.open_streams + c.reserved >= 10 for c in conns)


class TestPolicies:
    def test_connection_backoff_follows_grpc(self) -> None:
        policy = h2pool.ConnectionBackoff()
        assert (policy.initial, policy.multiplier, policy.jitter, policy.max) == (
            1.0,
            1.6,
            0.2,
            120.0,
        )
        assert backoff_delay(policy, 0) == 0
        rng = random.Random(1)
        for failures, base in ((1, 1.0), (2, 1.6), (3, 2.56), (30, 120.0)):
            delay = backoff_delay(policy, failures, rng)
            assert base * 0.8 <= delay <= base * 1.2

    def test_parse_retry_after(self) -> None:
        assert parse_retry_after(" 7 ") == 7
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
        assert parse_retry_after(None) is None

    def test_endpoint_failures(self) -> None:
        assert is_endpoint_failure(h2pool.ConnectError("refused"))
        assert is_endpoint_failure(h2pool.ConnectionDead("silent"))
        assert is_endpoint_failure(h2pool.ConnectTimeout("slow"))
        assert not is_endpoint_failure(h2pool.ConnectionClosed("goaway"))
        assert not is_endpoint_failure(h2pool.StreamReset("reset"))
        assert not is_endpoint_failure(h2pool.RequestTimeout("late"))

    def test_ejection_grows_and_never_takes_the_last_endpoint(self) -> None:
        policy = h2pool.EjectionPolicy(base_time=10, max_time=35, max_ejected_percent=100)
        assert [ejection_duration(policy, n) for n in (1, 2, 3, 4)] == [10, 20, 30, 35]
        assert may_eject(policy, endpoints=3, ejected=1)
        assert not may_eject(policy, endpoints=3, ejected=2)
        assert not may_eject(policy, endpoints=1, ejected=0)
        half = h2pool.EjectionPolicy(max_ejected_percent=50)
        assert may_eject(half, endpoints=4, ejected=1)
        assert not may_eject(half, endpoints=4, ejected=2)

    @pytest.mark.parametrize(
        ("kind", "kwargs"),
        [
            (h2pool.RetryPolicy, {"max_attempts": 0}),
            (h2pool.RetryPolicy, {"jitter": 1.0}),
            (h2pool.ConnectionBackoff, {"initial": 0}),
            (h2pool.ConnectionBackoff, {"max": 0.5}),
            (h2pool.EjectionPolicy, {"consecutive_failures": 0}),
            (h2pool.EjectionPolicy, {"max_ejected_percent": 101}),
        ],
    )
    def test_invalid_policies_are_refused(self, kind: Any, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 - the message names the field
            kind(**kwargs)


class TestEndpoint:
    def test_states(self) -> None:
        ep = endpoint("a:1")
        assert ep.state(0) is h2pool.ConnectivityState.IDLE
        ep.connecting = 1
        assert ep.state(0) is h2pool.ConnectivityState.CONNECTING
        ep.connecting = 0
        ep.record_failure(0.0, h2pool.ConnectError("refused"), h2pool.ConnectionBackoff())
        assert ep.state(0) is h2pool.ConnectivityState.TRANSIENT_FAILURE
        assert not ep.may_connect(0.5)  # backing off at least 0.8 s
        assert ep.may_connect(1.3)
        ep.connections = [FakeConnection()]
        assert ep.state(0) is h2pool.ConnectivityState.READY
        ep.record_success()
        assert ep.consecutive_failures == 0
        ep.closed = True
        assert ep.state(0) is h2pool.ConnectivityState.SHUTDOWN

    def test_stats_snapshot(self) -> None:
        ep = endpoint(
            "a:1",
            FakeConnection(open_streams=3, rtt=0.002),
            FakeConnection(accepting_streams=False, open_streams=1),
        )
        stats = ep.stats(0)
        assert (stats.connections, stats.draining, stats.open_streams, stats.rtt) == (
            1,
            1,
            4,
            0.002,
        )

    def test_a_peer_that_asked_for_fewer_pings_is_remembered(self) -> None:
        dead = FakeConnection(functional=False, accepting_streams=False, ping_interval=2.0)
        ep = endpoint("a:1", dead)
        assert ep.ready() == []
        ep.prune()
        assert ep.connections == []
        assert ep.ping_interval == 2.0

    @pytest.mark.parametrize(
        ("address", "expected"),
        [("a.b:80", ("a.b", 80)), ("[::1]:443", ("::1", 443)), ("10.0.0.1:1", ("10.0.0.1", 1))],
    )
    def test_split_address(self, address: str, expected: tuple[str, int]) -> None:
        assert split_address(address) == expected

    @pytest.mark.parametrize("address", ["nohost", ":80", "host:", "host:x"])
    def test_bad_addresses(self, address: str) -> None:
        with pytest.raises(ValueError, match="host:port"):
            split_address(address)


@given(
    open_streams=st.integers(0, 12),
    reserved=st.integers(0, 3),
    accepting=st.booleans(),
    closed=st.booleans(),
    ejected=st.booleans(),
    silent=st.floats(0, 3),
)
def test_one_connection_fast_path_agrees_with_the_general_search(
    open_streams: int, reserved: int, accepting: bool, closed: bool, ejected: bool, silent: float
) -> None:
    def layout(extra: bool) -> list[Endpoint[FakeConnection]]:
        conn = FakeConnection(
            open_streams=open_streams,
            reserved=reserved,
            max_streams=10,
            accepting_streams=accepting,
            last_received=100.0 - silent,
        )
        # A second connection that is never a candidate forces the general search.
        others = [FakeConnection(accepting_streams=False)] if extra else []
        ep = endpoint("a:1", conn, *others, ejected_until=200.0 if ejected else 0.0)
        ep.closed = closed
        return [ep]

    fast, general = decide(layout(False)), decide(layout(True))
    assert (fast.connection is None) == (general.connection is None)
    assert fast.stale == general.stale
    assert (fast.endpoint is None) == (general.endpoint is None)
