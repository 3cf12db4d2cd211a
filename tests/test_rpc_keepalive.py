"""Keepalive that gRPC servers accept, through h2pool.rpc: long silent streams against grpcio.

grpcio with default options allows about 3 PINGs per period of server silence (ping strikes
over ``grpc.http2.max_ping_strikes`` 2 within ``min_ping_interval_without_data`` 5 min get
GOAWAY ENHANCE_YOUR_CALM "too_many_pings", dropping every call on the connection). The
pool's ping budget keeps within that with the channel's DEFAULT options (docs/rpc.md,
"Keepalive and the ping budget").
"""

from __future__ import annotations

import asyncio

import pytest

import h2pool.rpc
from tests.peers.grpc_server import GrpcTestServer
from tests.peers.grpc_service import Rpc

pytestmark = [pytest.mark.peer, pytest.mark.timeout(60)]

# grpcio: more than 1 strike gets too_many_pings (0 would mean no limit at all).
STRICT = [("grpc.http2.max_ping_strikes", 1)]


async def silent_server_stream(channel: h2pool.rpc.Channel, seconds: float) -> list[bytes]:
    """Two messages ``seconds`` apart: the server says nothing in between."""
    call = channel.unary_stream(Rpc.SERVER_STREAM)(
        b"tick", metadata=[("x-count", "2"), ("x-interval", str(seconds))]
    )
    return [message async for message in call]


async def silent_bidi(channel: h2pool.rpc.Channel, seconds: float) -> bytes:
    """A bidirectional call whose server answers only after ``seconds`` of silence."""
    call = channel.stream_stream(Rpc.BIDI)(metadata=[("x-sleep", str(seconds))])
    await call.write(b"late")
    reply = await call.read()
    await call.done_writing()
    assert await call.read() is h2pool.rpc.EOF
    assert isinstance(reply, bytes)
    return reply


async def test_silent_calls_of_20_s_complete_with_default_options() -> None:
    with GrpcTestServer() as server:  # grpcio's default ping policy
        async with h2pool.rpc.insecure_channel(server.target) as channel:
            streamed, echoed = await asyncio.gather(
                silent_server_stream(channel, 20), silent_bidi(channel, 20)
            )
            assert streamed == [b"tick", b"tick"]
            assert echoed == b"late"
            endpoint = channel.pool.stats().endpoints[0]
            assert endpoint.ping_interval is None  # the server never complained
            assert endpoint.consecutive_failures == 0


async def test_a_strict_server_never_complains_about_pings() -> None:
    with GrpcTestServer(options=STRICT) as server:
        # A health check ten times a second: without the budget, the strict
        # server would drop the connection at the third PING of silence.
        async with h2pool.rpc.insecure_channel(server.target, functional_timeout=0.1) as channel:
            assert await silent_server_stream(channel, 3) == [b"tick", b"tick"]
            assert channel.pool.stats().endpoints[0].ping_interval is None
        async with h2pool.rpc.insecure_channel(
            server.target, functional_timeout=0.1, ping_budget=None
        ) as channel:
            with pytest.raises(h2pool.rpc.RpcError) as caught:
                await silent_server_stream(channel, 3)
            # The check above can fail: the same server complains without the budget.
            assert caught.value.code() is h2pool.rpc.StatusCode.UNAVAILABLE
            assert "ping" in caught.value.details().lower()
