"""The ping budget and TCP keepalive of the core: pure decisions, then a scripted peer."""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
from collections.abc import AsyncIterator

import h2.events
import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._core import endpoints
from h2pool._core.endpoints import tcp_keepalive_options
from h2pool._core.health import HealthAction, PingBudget, check_health, ping_allowed_at
from tests.rawpeer import RawConnection, RawPeer, raw_peer

GET = {":method": "GET", ":path": "/"}

budgets = st.builds(
    PingBudget, pings=st.integers(1, 4), period=st.floats(0.01, 10.0, allow_nan=False)
)
# A connection's life as steps (time elapsed, what happens): HEADERS/DATA received,
# or a moment at which the connection would like to ping (health timer, wait_functional).
steps = st.lists(
    st.tuples(st.floats(0.0, 5.0, allow_nan=False), st.sampled_from(["data", "want"])),
    max_size=60,
)


def simulate(
    budget: PingBudget | None, history: list[tuple[float, str]]
) -> tuple[list[list[float]], list[tuple[float, bool, bool]]]:
    """Replay ``history`` through ping_allowed_at.

    Returns:
        The times of the PINGs sent, per stretch between two HEADERS/DATA
        receipts; and for every wish to ping: (time, pinged, allowed by the
        rule as stated in the docs).
    """
    now, count, last = 0.0, 0, -math.inf
    stretches: list[list[float]] = [[]]
    wishes: list[tuple[float, bool, bool]] = []
    for elapsed, kind in history:
        now += elapsed
        if kind == "data":
            count = 0
            stretches.append([])
            continue
        pinged = ping_allowed_at(budget, count, last) <= now
        stated = budget is None or count < budget.pings or now >= last + budget.period
        wishes.append((now, pinged, stated))
        if pinged:
            count, last = count + 1, now
            stretches[-1].append(now)
    return stretches, wishes


class TestPingBudgetDecision:
    @given(budget=budgets, history=steps)
    def test_never_more_than_the_budget_within_a_period_of_silence(
        self, budget: PingBudget, history: list[tuple[float, str]]
    ) -> None:
        stretches, _ = simulate(budget, history)
        for pings in stretches:
            for i, start in enumerate(pings):
                inside = [t for t in pings[i:] if t < start + budget.period]
                assert len(inside) <= budget.pings

    @given(budget=budgets, history=steps)
    def test_pings_exactly_when_the_rule_allows(
        self, budget: PingBudget, history: list[tuple[float, str]]
    ) -> None:
        # Within the budget, and again once a period has passed since the last PING.
        _, wishes = simulate(budget, history)
        for _, pinged, stated in wishes:
            assert pinged == stated

    @given(history=steps)
    def test_no_budget_pings_every_time(self, history: list[tuple[float, str]]) -> None:
        _, wishes = simulate(None, history)
        assert all(pinged for _, pinged, _ in wishes)

    times = st.floats(0, 1e6, allow_nan=False)
    spans = st.floats(1e-3, 1e3, allow_nan=False)

    @given(now=times, since=spans, interval=spans, timeout=spans, wait=spans)
    def test_a_silent_connection_waits_for_the_budget(
        self, now: float, since: float, interval: float, timeout: float, wait: float
    ) -> None:
        action, deadline = check_health(now, now - since, None, interval, timeout, now + wait)
        if since < interval - 1e-3:
            assert action is HealthAction.WAIT
        # Not allowed yet (beyond the timer's 1 ms slack, in the clock's own float
        # arithmetic: wait = 1e-3 plus one ulp is the slack itself once added to now):
        # never a PING, and look again when it is.
        if now + 1e-3 < now + wait:
            assert action is HealthAction.WAIT
            assert deadline >= now + wait
        else:
            assert check_health(now, now - since, None, interval, timeout) == (action, deadline)

    @given(now=times, since=spans, interval=spans, timeout=spans)
    def test_without_budget_the_decision_is_unchanged(
        self, now: float, since: float, interval: float, timeout: float
    ) -> None:
        unlimited = ping_allowed_at(None, 10**6, now)
        assert check_health(now, now - since, None, interval, timeout, unlimited) == check_health(
            now, now - since, None, interval, timeout
        )

    def test_validation_names_the_field(self) -> None:
        with pytest.raises(ValueError, match=r"^pings must be at least 1"):
            PingBudget(pings=0)
        with pytest.raises(TypeError, match=r"^pings must be an integer"):
            PingBudget(pings=2.0)  # type: ignore[arg-type]
        for bad in (0, -1.0, math.nan, math.inf):
            with pytest.raises(ValueError, match=r"^period must be"):
                PingBudget(period=bad)
        with pytest.raises(TypeError, match=r"^period must be a number"):
            PingBudget(period="300")  # type: ignore[arg-type]
        assert PingBudget() == PingBudget(pings=2, period=300.0)


@given(st.floats(0.001, 10_000, allow_nan=False))
def test_tcp_keepalive_options_add_up_to_the_bound(seconds: float) -> None:
    idle, interval, probes = tcp_keepalive_options(seconds)
    assert min(idle, interval) >= 1
    assert probes == 3
    assert idle + interval * probes == max(4, int(seconds))


# ----------------------------------------------------------------------
# Against a scripted peer that answers PINGs (h2 acknowledges them)


@pytest.fixture
async def peer() -> AsyncIterator[RawPeer]:
    async with raw_peer() as peer:
        yield peer


async def silent_request(
    peer: RawPeer, **kwargs: object
) -> tuple[h2pool.H2Protocol, RawConnection, int]:
    client = await h2pool.open_connection("127.0.0.1", peer.port, **kwargs)  # type: ignore[arg-type]
    conn = await peer.accept()
    stream_id = await client.start_request(GET, end_stream=True)
    await conn.next_event(h2.events.RequestReceived)
    return client, conn, stream_id


async def pings_within(conn: RawConnection, seconds: float) -> list[float]:
    """When the peer received each PING during ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    times = []
    while (left := deadline - loop.time()) > 0:
        try:
            await conn.next_event(h2.events.PingReceived, timeout=left)
        except TimeoutError:
            break
        times.append(loop.time())
    return times


async def test_silent_stream_gets_the_default_budget_and_data_renews_it(peer: RawPeer) -> None:
    # Without the budget this would be about one PING per 0.1 s: ten in a second.
    client, conn, stream_id = await silent_request(peer, functional_timeout=0.1)
    assert len(await pings_within(conn, 1.0)) == 2
    conn.respond(stream_id, b"", end_stream=False)  # HEADERS: a new budget
    assert len(await pings_within(conn, 0.8)) == 2
    conn.h2.send_data(stream_id, b"x")  # DATA: another one
    conn.flush()
    assert len(await pings_within(conn, 0.8)) == 2
    assert client.functional


async def test_no_budget_pings_every_functional_timeout(peer: RawPeer) -> None:
    _, conn, _ = await silent_request(peer, functional_timeout=0.1, ping_budget=None)
    assert len(await pings_within(conn, 1.0)) >= 4


async def test_once_spent_one_ping_per_period(peer: RawPeer) -> None:
    budget = PingBudget(pings=2, period=0.4)
    client, conn, _ = await silent_request(peer, functional_timeout=0.05, ping_budget=budget)
    times = await pings_within(conn, 1.5)
    # Two at once, then one per period (about 4 in all within 1.5 s).
    assert 3 <= len(times) <= 5
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]
    assert all(gap >= budget.period - 0.03 for gap in gaps), gaps
    assert client.functional


async def test_wait_functional_with_a_spent_budget_does_not_ping(peer: RawPeer) -> None:
    budget = PingBudget(pings=2, period=60)
    client, conn, _ = await silent_request(peer, functional_timeout=0.1, ping_budget=budget)
    assert len(await pings_within(conn, 0.5)) == 2
    rtt = client.rtt
    assert rtt is not None
    # Silent for longer than the functional timeout, so it would ping: it may not.
    assert await client.wait_functional() == rtt
    assert await pings_within(conn, 0.2) == []
    assert client.functional


async def test_wait_functional_pings_count_against_the_budget(peer: RawPeer) -> None:
    client = await h2pool.open_connection(
        "127.0.0.1", peer.port, functional_timeout=0.05, ping_budget=PingBudget(pings=1)
    )
    conn = await peer.accept()
    await client.wait_functional()  # the one PING allowed
    await asyncio.sleep(0.1)  # silent for two functional timeouts
    await client.wait_functional()
    assert len(await pings_within(conn, 0.2)) == 1


async def test_a_blackholed_peer_is_dead_within_period_and_timeout(peer: RawPeer) -> None:
    budget = PingBudget(pings=2, period=0.5)
    client, conn, stream_id = await silent_request(peer, functional_timeout=0.1, ping_budget=budget)
    assert len(await pings_within(conn, 0.3)) == 2
    conn.silent = True
    loop = asyncio.get_running_loop()
    went_silent = loop.time()
    with pytest.raises(h2pool.ConnectionDead):
        await client.read_stream(stream_id)
    # The documented bound: the period, then one functional timeout.
    assert loop.time() - went_silent <= budget.period + 0.1 + 0.25


class Recorded:
    """Wraps set_tcp_keepalive to keep the transports it configured."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object) -> None:
        self.sockets: list[socket.socket] = []
        real = endpoints.set_tcp_keepalive

        def record(transport: asyncio.BaseTransport, seconds: float | None) -> None:
            real(transport, seconds)
            self.sockets.append(transport.get_extra_info("socket"))

        monkeypatch.setattr(module, "set_tcp_keepalive", record)


def keepalive_of(sock: socket.socket) -> tuple[int, ...]:
    tcp = socket.IPPROTO_TCP
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
        sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
        sock.getsockopt(tcp, socket.TCP_KEEPCNT),
        sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
    )


needs_linux_keepalive = pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP keepalive options of Linux"
)


@needs_linux_keepalive
async def test_open_connection_sets_tcp_keepalive(
    peer: RawPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Recorded(monkeypatch, endpoints)
    client = await h2pool.open_connection("127.0.0.1", peer.port, tcp_keepalive=30)
    await peer.accept()
    (sock,) = recorded.sockets
    assert keepalive_of(sock) == (1, 15, 5, 3, 30_000)
    client.close_connection()


@needs_linux_keepalive
async def test_open_connection_leaves_the_os_default_without_tcp_keepalive(
    peer: RawPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = Recorded(monkeypatch, endpoints)
    client = await h2pool.open_connection("127.0.0.1", peer.port)
    await peer.accept()
    (sock,) = recorded.sockets
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    client.close_connection()


async def test_open_connection_checks_tcp_keepalive(peer: RawPeer) -> None:
    with pytest.raises(ValueError, match=r"^tcp_keepalive must be positive"):
        await h2pool.open_connection("127.0.0.1", peer.port, tcp_keepalive=0)
