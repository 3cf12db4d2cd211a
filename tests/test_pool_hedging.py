"""Hedged requests and the retry budget, end to end: replicas in their own processes
(tests/peers/replica.py) count what arrived; in-process servers show cancellation and slots.

The numbers of issue 10: with every replica answering 503 and five attempts allowed, 500
requests send about 600, not 2,500; with 5% of answers stalling 1 s, a 50 ms hedge brings
the 99th percentile under 350 ms for at most about 1.3 requests sent per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import h2pool
from h2pool._pool.verbs import DEFAULT
from h2pool._sync.pool import forwarded
from tests.peers.replica import Replica
from tests.servers import Server, hello
from tests.threaded_server import ThreadedServer
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(60)

RETRY_503 = h2pool.RetryPolicy(
    max_attempts=5, statuses=frozenset({503}), backoff_initial=0.01, backoff_max=0.05
)


@contextlib.contextmanager
def replicas(count: int, **behaviour: float) -> Iterator[list[Replica]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Replica(**behaviour)) for _ in range(count)]  # type: ignore[arg-type]


async def arrived(group: list[Replica]) -> int:
    return sum([await replica.count() for replica in group])


def assert_idle(pool: h2pool.Pool) -> None:
    """No request in flight or waiting, no stream open, no slot reserved."""
    stats = pool.stats()
    assert (stats.active, stats.pending) == (0, 0), stats
    assert [ep.open_streams for ep in stats.endpoints] == [0] * len(stats.endpoints), stats
    reserved = [conn.reserved for ep in pool._scheduler.endpoints for conn in ep.connections]
    assert reserved == [0] * len(reserved)


# --- Retry budget ---------------------------------------------------------------------------


async def test_the_budget_keeps_an_outage_of_every_replica_from_multiplying_the_load() -> None:
    with replicas(2, status=503) as group:
        endpoints = [replica.address for replica in group]
        async with h2pool.Pool("http://svc", endpoints=endpoints, retry=RETRY_503) as pool:
            loop = asyncio.get_running_loop()
            started = loop.time()
            responses = await asyncio.gather(*(pool.get("/") for _ in range(500)))
            seconds = loop.time() - started
            assert {response.status_code for response in responses} == {503}
            stats = pool.stats()
            assert_idle(pool)
        sent = await arrived(group)
    print(
        f"500 requests, every answer 503, 5 attempts each: {sent} sent in {seconds:.2f} s,"
        f" {stats.retries} retries, {stats.budget_refusals} refused"
    )
    # 20% of 500, or 10 a second for each second the requests took (a second or two).
    assert 500 <= sent <= 600 + 10 * (math.ceil(seconds) + 1)
    assert sent <= 700
    assert stats.retries == sent - 500
    assert stats.budget_refusals > 0


async def test_without_a_budget_every_attempt_is_made() -> None:
    with replicas(1, status=503) as group:
        async with h2pool.Pool(
            f"http://{group[0].address}", retry=RETRY_503, retry_budget=None
        ) as pool:
            await asyncio.gather(*(pool.get("/") for _ in range(40)))
            assert pool.stats().budget_refusals == 0
        assert await arrived(group) == 200


async def test_a_refused_retry_of_an_error_says_the_budget_refused_it() -> None:
    async def reset(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        proto.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)

    budget = h2pool.RetryBudget(ratio=0.0, min_per_second=0.0)
    async with (
        Server(reset) as server,
        h2pool.Pool(f"http://127.0.0.1:{server.port}", retry_budget=budget) as pool,
    ):
        with pytest.raises(h2pool.StreamReset, match="the retry budget is spent"):
            await pool.get("/")
        assert pool.stats().budget_refusals == 1
        assert pool.stats().retries == 0


# --- Hedging ---------------------------------------------------------------------------------


async def _latencies(pool: h2pool.Pool, count: int, concurrency: int) -> list[float]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with gate:
            started = loop.time()
            response = await pool.get("/")
            assert response.status_code == 200
            latencies.append(loop.time() - started)

    await asyncio.gather(*(one() for _ in range(count)))
    return sorted(latencies)


async def _hedged_tail(count: int) -> tuple[float, float, float]:
    """p99 without and with a 50 ms hedge, and requests sent per request with it."""
    with replicas(2, stall_every=20, stall=1.0) as group:
        endpoints = [replica.address for replica in group]
        async with h2pool.Pool("http://svc", endpoints=endpoints) as pool:
            plain = await _latencies(pool, count, 10)
        before = await arrived(group)
        hedge = h2pool.HedgePolicy(delay=0.05)
        async with h2pool.Pool("http://svc", endpoints=endpoints, hedge=hedge) as pool:
            hedged = await _latencies(pool, count, 10)
            stats = pool.stats()
            assert_idle(pool)
        sent = await arrived(group) - before
    p99 = int(count * 0.99) - 1
    print(
        f"{count} GETs, 5% stalling 1 s: p99 {plain[p99] * 1000:.0f} ms unhedged,"
        f" {hedged[p99] * 1000:.0f} ms with a 50 ms hedge;"
        f" {sent / count:.3f} sent per request ({stats.hedges} hedges)"
    )
    assert stats.hedges == sent - count
    return plain[p99], hedged[p99], sent / count


async def test_a_hedge_cuts_the_tail_of_stalling_replicas() -> None:
    plain, hedged, per_request = await _hedged_tail(200)
    assert plain >= 1.0  # the stalls are in the tail
    assert hedged < 0.35
    assert per_request <= 1.3


@pytest.mark.slow
async def test_a_hedge_cuts_the_tail_of_stalling_replicas_2000_requests() -> None:
    plain, hedged, per_request = await _hedged_tail(2000)
    assert plain >= 1.0
    assert hedged < 0.35
    assert per_request <= 1.3


# --- Hedging, in process: which copy wins, what is cancelled, what is hedged --------------------


class Fleet:
    """In-process servers sharing one script: the n-th request overall gets ``script[n]``.

    An entry is a status answered at once, or None: stall until released.
    Past the script, requests are answered 200 at once. ``arrivals`` are
    the endpoints the requests reached, in order.
    """

    def __init__(self, count: int, script: list[int | None]) -> None:
        self.script = list(script)
        self.release = asyncio.Event()
        self.arrivals: list[str] = []
        self.servers = [Server(functools.partial(self.handler, index)) for index in range(count)]

    async def handler(
        self, index: int, proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList
    ) -> None:
        self.arrivals.append(self.endpoints[index])
        status = self.script.pop(0) if self.script else 200
        if status is None:
            await self.release.wait()
            status = 200
        await proto.start_response(stream_id, {":status": str(status)}, end_stream=True)

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{server.port}" for server in self.servers]

    async def __aenter__(self) -> Fleet:
        for server in self.servers:
            await server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        for server in self.servers:
            await server.__aexit__()

    def open_on_servers(self) -> int:
        return sum(proto.open_streams for server in self.servers for proto in server.protocols)


async def connected(pool: h2pool.Pool) -> None:
    """Wait until every endpoint has a connection (routing then has every choice)."""
    await pool.start()
    await eventually(lambda: all(ep.connections for ep in pool.stats().endpoints))


FAST_HEDGE = h2pool.HedgePolicy(delay=0.02)


async def test_the_first_answer_wins_and_the_other_copy_is_cancelled_at_once() -> None:
    async with (
        Fleet(2, [None]) as fleet,
        h2pool.Pool("http://svc", endpoints=fleet.endpoints, hedge=FAST_HEDGE) as pool,
    ):
        await connected(pool)
        response = await pool.get("/")
        assert response.status_code == 200
        # Both copies reached a server, each a different one; the second answered.
        assert len(fleet.arrivals) == 2
        assert len(set(fleet.arrivals)) == 2
        assert response.endpoint == fleet.arrivals[1]
        # The stalled copy's stream was reset and its slot freed before get() returned.
        assert_idle(pool)
        assert pool.stats().hedges == 1
        await eventually(lambda: fleet.open_on_servers() == 0)  # RST_STREAM arrived


async def test_a_non_final_answer_sends_the_next_copy_at_once() -> None:
    slow_hedge = h2pool.HedgePolicy(delay=30.0)
    async with (
        Fleet(2, [503]) as fleet,
        h2pool.Pool("http://svc", endpoints=fleet.endpoints, hedge=slow_hedge) as pool,
    ):
        await connected(pool)
        response = await asyncio.wait_for(pool.get("/"), 5)
        assert response.status_code == 200
        assert len(set(fleet.arrivals)) == 2
        assert_idle(pool)


async def test_when_no_copy_answers_finally_the_last_answer_is_returned() -> None:
    async with (
        Fleet(2, [503, 503, 503]) as fleet,
        h2pool.Pool("http://svc", endpoints=fleet.endpoints, hedge=FAST_HEDGE) as pool,
    ):
        response = await pool.get("/")
        assert response.status_code == 503
        assert len(fleet.arrivals) == 2  # max_attempts copies, no retries on top
        assert_idle(pool)


async def test_hedges_in_flight_go_to_different_endpoints() -> None:
    hedge = h2pool.HedgePolicy(delay=0.01, max_attempts=3)
    async with (
        Fleet(3, [None, None, None]) as fleet,
        h2pool.Pool("http://svc", endpoints=fleet.endpoints, hedge=hedge) as pool,
    ):
        await connected(pool)
        task = asyncio.ensure_future(pool.get("/"))
        await eventually(lambda: len(fleet.arrivals) == 3)
        assert sorted(fleet.arrivals) == sorted(fleet.endpoints)
        fleet.release.set()
        assert (await task).status_code == 200
        assert_idle(pool)


async def test_a_cancelled_hedged_request_cancels_every_copy() -> None:
    async with (
        Fleet(2, [None, None]) as fleet,
        h2pool.Pool("http://svc", endpoints=fleet.endpoints, hedge=FAST_HEDGE) as pool,
    ):
        task = asyncio.ensure_future(pool.get("/"))
        await eventually(lambda: len(fleet.arrivals) == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_idle(pool)
        await eventually(lambda: fleet.open_on_servers() == 0)
        # The pool's timeout ends a hedged request the same way.
        fleet.script = [None, None]
        with pytest.raises(h2pool.RequestTimeout):
            await pool.get("/", timeout=0.2)
        assert_idle(pool)


async def test_a_hedged_stream_wins_the_same_way() -> None:
    async with (
        Fleet(2, [None]) as fleet,
        h2pool.Pool("http://svc", endpoints=fleet.endpoints, hedge=FAST_HEDGE) as pool,
    ):
        async with pool.stream("GET", "/") as response:
            assert response.status_code == 200
            assert await response.aread() == b""
        assert_idle(pool)
        assert pool.stats().hedges == 1


async def test_only_idempotent_methods_are_hedged_unless_the_request_asks() -> None:
    instant = h2pool.HedgePolicy(delay=0.0)
    async with (
        Fleet(2, []) as fleet,
        h2pool.Pool("http://svc", endpoints=fleet.endpoints, hedge=instant) as pool,
    ):
        await pool.post("/", content=b"x")
        assert pool.stats().hedges == 0
        await pool.get("/", hedge=None)  # the request turns the pool's hedging off
        assert pool.stats().hedges == 0
        await pool.post("/", content=b"x", hedge=instant)  # marked safe by the caller
        assert pool.stats().hedges == 1
        await pool.get("/")
        assert pool.stats().hedges == 2
        async with h2pool.Pool("http://svc", endpoints=fleet.endpoints) as pool:
            await pool.get("/")
            await pool.request("DELETE", "/", hedge=instant)
            assert pool.stats().hedges == 1

            async def body() -> AsyncIterator[bytes]:
                yield b"x"

            with pytest.raises(ValueError, match="streamed body"):
                await pool.put("/", content=body(), hedge=instant)
            with pytest.raises(TypeError, match="HedgePolicy"):
                await pool.get("/", hedge=0.05)
            assert_idle(pool)


async def test_a_hedge_the_budget_refuses_is_not_sent() -> None:
    instant = h2pool.HedgePolicy(delay=0.0)
    spent = h2pool.RetryBudget(ratio=0.0, min_per_second=0.0)
    async with (
        Fleet(2, []) as fleet,
        h2pool.Pool(
            "http://svc", endpoints=fleet.endpoints, hedge=instant, retry_budget=spent
        ) as pool,
    ):
        assert (await pool.get("/")).status_code == 200
        stats = pool.stats()
        assert (stats.hedges, stats.budget_refusals) == (0, 1)
        assert len(fleet.arrivals) == 1


def test_sync_pool_passes_hedge_through() -> None:
    with ThreadedServer(hello) as server, h2pool.SyncPool(server.url()) as pool:
        assert pool.post("/", content=b"x", hedge=h2pool.HedgePolicy(delay=0.0)).status_code == 200
        assert pool.stats().hedges == 1
        with pool.stream("GET", "/", hedge=h2pool.HedgePolicy(delay=0.0)) as response:
            response.read()
        assert pool.stats().hedges == 2
    assert forwarded(timeout=DEFAULT, hedge=None) == {"hedge": None}
    assert forwarded(timeout=DEFAULT) == {}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: h2pool.HedgePolicy(delay=-1), "delay"),
        (lambda: h2pool.HedgePolicy(delay=0.1, max_attempts=1), "max_attempts"),
        (lambda: h2pool.RetryBudget(ratio=-0.1), "ratio"),
        (lambda: h2pool.RetryBudget(min_per_second=float("nan")), "min_per_second"),
        (lambda: h2pool.Pool("http://svc", hedge=0.05), "hedge"),  # type: ignore[arg-type]
        (lambda: h2pool.Pool("http://svc", retry_budget=0.2), "retry_budget"),  # type: ignore[arg-type]
    ],
)
def test_invalid_hedging_and_budgets_are_refused(make: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        make()


async def test_hedged_requests_cancelled_in_bulk_leave_no_slot_behind() -> None:
    async def jittery(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await asyncio.sleep(random.random() * 0.004)
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

    hedge = h2pool.HedgePolicy(delay=0.001, max_attempts=3)
    budget = h2pool.RetryBudget(ratio=10.0)  # every hedge allowed
    async with (
        Server(jittery, concurrency=20) as first,
        Server(jittery, concurrency=20) as second,
        h2pool.Pool(
            "http://svc",
            endpoints=[f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"],
            hedge=hedge,
            retry_budget=budget,
            max_connections=1,
        ) as pool,
    ):
        # Both connections up first: on a loaded machine, cancellations within
        # 0.1 s could otherwise all come before any stream (and any hedge).
        await eventually(lambda: all(ep.connections for ep in pool.stats().endpoints))
        rng = random.Random(10)
        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(pool.get("/")) for _ in range(1000)]
        # Their first steps first (the first copies sent, hedge timers set): on a
        # loaded machine those steps can take longer than every cancellation's delay.
        await asyncio.sleep(0)
        for task in tasks:
            loop.call_later(rng.random() * 0.1, task.cancel)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(
            isinstance(o, h2pool.Response | asyncio.CancelledError | h2pool.PoolOverloaded)
            for o in outcomes
        ), {type(o) for o in outcomes}
        assert pool.stats().hedges > 0
        assert_idle(pool)
        # The servers allow 20 streams each: 60 concurrent hedged requests all succeed.
        responses = await asyncio.gather(*(pool.get("/") for _ in range(60)))
        assert [r.status_code for r in responses] == [200] * 60
        assert_idle(pool)
