"""Keepalive that gRPC servers accept: the pool's ping budget against grpcio, and TCP keepalive."""

from __future__ import annotations

import asyncio

import pytest

import h2pool
from h2pool._core import endpoints
from h2pool._pool import connect
from tests.faultproxy import fault_proxy
from tests.peers import GrpcEchoServer, frame_message
from tests.test_core_keepalive import Recorded, keepalive_of, needs_linux_keepalive
from tests.test_pool_grpc import unary

pytestmark = pytest.mark.peer

# grpcio: at most 1 strike; 0 would mean no limit at all.
STRICT = [("grpc.http2.max_ping_strikes", 1)]


def assert_ok(response: h2pool.Response, message: bytes) -> None:
    assert response.status_code == 200
    assert dict(response.trailers).get("grpc-status") == "0", (response.headers, response.trailers)
    assert response.content == frame_message(message)


async def test_silent_call_of_20_s_completes_with_default_options() -> None:
    # Before the ping budget, the health check (a PING per second of silence)
    # made grpcio end the call after about 5 s: "Too many pings", status 14.
    with GrpcEchoServer() as server:
        async with h2pool.Pool("http://echo.test", endpoints=[server.target]) as pool:
            assert_ok(await unary(pool, "Slow", b"20"), b"20")
            assert pool.stats().endpoints[0].ping_interval is None  # no complaint


async def test_strict_server_never_sends_too_many_pings() -> None:
    with GrpcEchoServer(options=STRICT) as server:
        async with h2pool.Pool(
            "http://echo.test", endpoints=[server.target], functional_timeout=0.1
        ) as pool:
            assert_ok(await unary(pool, "Slow", b"3"), b"3")
            assert pool.stats().endpoints[0].ping_interval is None
        # Without the budget, the same server complains at once: the check above can fail.
        async with h2pool.Pool(
            "http://echo.test",
            endpoints=[server.target],
            functional_timeout=0.1,
            ping_budget=None,
        ) as pool:
            slow = unary(pool, "Slow", b"3")
            response = await slow
            assert dict(response.headers).get("grpc-message") == "Too many pings"
            assert pool.stats().endpoints[0].ping_interval == pytest.approx(0.2)


async def test_one_ping_per_period_keeps_within_the_server_minimum_interval() -> None:
    # The budget spent, PINGs keep coming once per period: no strike when the
    # period is at least the server's min_ping_interval_without_data.
    options = [*STRICT, ("grpc.http2.min_ping_interval_without_data_ms", 500)]
    with GrpcEchoServer(options=options) as server:
        async with h2pool.Pool(
            "http://echo.test",
            endpoints=[server.target],
            functional_timeout=0.1,
            ping_budget=h2pool.PingBudget(pings=2, period=0.7),
        ) as pool:
            assert_ok(await unary(pool, "Slow", b"4"), b"4")
            stats = pool.stats().endpoints[0]
            assert stats.ping_interval is None
            assert stats.rtt is not None


async def test_partitioned_server_is_noticed_within_period_and_timeout() -> None:
    functional_timeout = 0.3
    budget = h2pool.PingBudget(pings=2, period=2.0)
    with GrpcEchoServer() as server:
        async with (
            fault_proxy(server.port) as proxy,
            h2pool.Pool(
                "http://echo.test",
                endpoints=[proxy.address],
                functional_timeout=functional_timeout,
                ping_budget=budget,
            ) as pool,
        ):
            slow = unary(pool, "Slow", b"30")
            await asyncio.to_thread(server.wait_for_slow_calls, 1, 10.0)
            await asyncio.sleep(2 * functional_timeout + 0.2)  # the budget is spent
            loop = asyncio.get_running_loop()
            proxy.blackhole()
            partitioned = loop.time()
            with pytest.raises(h2pool.ConnectionDead):
                await slow
            noticed = loop.time() - partitioned
            # The documented bound: the period, then one functional timeout
            # (counted from the last frame received, at most the partition).
            assert noticed <= budget.period + functional_timeout + 0.5, noticed


@needs_linux_keepalive
@pytest.mark.parametrize(
    ("tcp_keepalive", "expected"),
    [
        ("default", (1, 15, 5, 3, 30_000)),  # 30 s
        (10, (1, 7, 1, 3, 10_000)),
        (None, (0,)),  # the OS default: off
    ],
)
async def test_pool_sets_tcp_keepalive_on_its_sockets(
    monkeypatch: pytest.MonkeyPatch, tcp_keepalive: object, expected: tuple[int, ...]
) -> None:
    recorded = Recorded(monkeypatch, connect)
    options = {} if tcp_keepalive == "default" else {"tcp_keepalive": tcp_keepalive}
    with GrpcEchoServer() as server:
        async with h2pool.Pool("http://echo.test", endpoints=[server.target], **options) as pool:  # type: ignore[arg-type]
            assert_ok(await unary(pool, "Unary", b"x"), b"x")
            (sock,) = recorded.sockets
            assert keepalive_of(sock)[: len(expected)] == expected


def test_pool_checks_its_keepalive_arguments() -> None:
    with pytest.raises(ValueError, match=r"^tcp_keepalive must be positive"):
        h2pool.Pool("http://x", tcp_keepalive=-1)
    with pytest.raises(TypeError, match=r"^ping_budget must be a PingBudget or None"):
        h2pool.Pool("http://x", ping_budget=2)  # type: ignore[arg-type]
    assert endpoints.tcp_keepalive_options(30) == (15, 5, 3)
