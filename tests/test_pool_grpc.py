"""The pool against grpcio servers: graceful stop, and grpcio's ping policy."""

from __future__ import annotations

import asyncio

import pytest

import h2pool
from tests.peers import GrpcEchoServer, frame_message
from tests.waiting import eventually

pytestmark = pytest.mark.peer

GRPC_HEADERS = {"content-type": "application/grpc", "te": "trailers"}
# grpcio's default ping policy allows one ping per 5 minutes while it sends
# nothing, so health-checked servers are configured to allow pings.
PINGS_ALLOWED = [("grpc.http2.max_ping_strikes", 0)]


def unary(pool: h2pool.Pool, method: str, message: bytes) -> asyncio.Future[h2pool.Response]:
    return asyncio.ensure_future(
        pool.request(
            "POST", f"/test.Echo/{method}", headers=GRPC_HEADERS, content=frame_message(message)
        )
    )


async def test_graceful_stop_of_one_replica_loses_no_call() -> None:
    with (
        GrpcEchoServer(options=PINGS_ALLOWED) as stopping,
        GrpcEchoServer(options=PINGS_ALLOWED) as staying,
    ):
        pool = h2pool.Pool(
            "http://echo.test", endpoints=[stopping.target, staying.target], timeout=10
        )
        async with pool:
            await pool.start()
            await eventually(lambda: all(ep.connections for ep in pool.stats().endpoints))
            # One slow call per replica (the least-loaded rule spreads them).
            slow = [unary(pool, "Slow", b"30") for _ in range(2)]
            for server in (stopping, staying):
                await asyncio.to_thread(server.wait_for_slow_calls, 1, 10.0)
            stopped = stopping.stop(grace=10)  # GOAWAY, PING, GOAWAY; calls in flight go on
            # Its connection drains: no longer counted as taking streams.
            await eventually(lambda: pool.stats().endpoints[0].connections == 0)
            # Requests sent once the GOAWAY is known go to the other replica
            # (grpcio cancels RPCs that reach it after stop(), even below the
            # last stream id, so none may be sent there after that point).
            calls = [unary(pool, "Unary", f"call-{i}".encode()) for i in range(400)]
            await asyncio.sleep(1.5)  # past a functional timeout: health pings meanwhile
            stopping.release()
            staying.release()
            responses = await asyncio.gather(*slow, *calls)
            assert {r.status_code for r in responses} == {200}
            assert {dict(r.trailers).get("grpc-status") for r in responses} == {"0"}
            assert {r.endpoint for r in responses[:2]} == {stopping.target, staying.target}
            assert {r.endpoint for r in responses[2:]} == {staying.target}
            for i, response in enumerate(responses[2:]):
                assert response.content == frame_message(f"call-{i}".encode())
            await asyncio.to_thread(stopped.wait, 10)
            assert pool.stats().endpoints[0].state is not h2pool.ConnectivityState.READY


async def test_too_many_pings_from_grpcio_doubles_the_ping_interval_for_that_replica() -> None:
    with GrpcEchoServer() as server:  # grpcio's default ping policy
        # Without a ping budget (the fallback for peers stricter than it).
        pool = h2pool.Pool(
            "http://echo.test",
            endpoints=[server.target],
            functional_timeout=0.3,
            timeout=20,
            ping_budget=None,
        )
        async with pool:
            # A silent call: the health check pings every 0.3 s, which grpcio
            # answers with GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings").
            slow = unary(pool, "Slow", b"30")
            await eventually(lambda: pool.stats().endpoints[0].ping_interval is not None, 15)
            assert pool.stats().endpoints[0].ping_interval == pytest.approx(0.6)
            server.release()
            await asyncio.gather(slow, return_exceptions=True)  # it may die with its connection
            response = await unary(pool, "Unary", b"still served")
            assert response.content == frame_message(b"still served")
