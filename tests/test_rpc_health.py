"""Health: ``h2pool.rpc.health_check`` against grpcio-health-checking, and the active check."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

import h2pool.rpc
from h2pool._rpc.config import parse_service_config
from h2pool.rpc import HealthStatus, StatusCode
from tests.peers import (
    GeneratedModules,
    GreeterServer,
    GrpcEchoServer,
    GrpcTestServer,
    Rpc,
    free_port,
)
from tests.waiting import eventually

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]

# grpcio's default ping policy allows one ping per 5 minutes while it sends nothing; the
# health-checked servers talk to the pool's PINGs more often than that in these tests.
PINGS_ALLOWED = [("grpc.http2.max_ping_strikes", 0)]


async def test_health_check_statuses(grpc_server: GrpcTestServer) -> None:
    grpc_server.set_health("test.Rpc", "SERVING")
    grpc_server.set_health("down", "NOT_SERVING")
    async with h2pool.rpc.insecure_channel(grpc_server.target) as channel:
        assert await h2pool.rpc.health_check(channel, timeout=5) is HealthStatus.SERVING
        assert await h2pool.rpc.health_check(channel, "test.Rpc") is HealthStatus.SERVING
        assert await h2pool.rpc.health_check(channel, "down", 5) is HealthStatus.NOT_SERVING
        unknown = await h2pool.rpc.health_check(channel, service="nope", timeout=5)
        assert unknown is HealthStatus.SERVICE_UNKNOWN
        grpc_server.set_health("", "NOT_SERVING")
        assert await h2pool.rpc.health_check(channel) is HealthStatus.NOT_SERVING
    assert [status.name for status in HealthStatus] == [
        "UNKNOWN",
        "SERVING",
        "NOT_SERVING",
        "SERVICE_UNKNOWN",
    ]
    assert [status.value for status in HealthStatus] == [0, 1, 2, 3]


async def test_health_check_on_generated_code_server(
    greeter_server: GreeterServer, greeter_modules: GeneratedModules
) -> None:
    async with h2pool.rpc.insecure_channel(greeter_server.target) as channel:
        assert await h2pool.rpc.health_check(channel, timeout=5) is HealthStatus.SERVING
        greeter_server.set_health("demo.Greeter", "NOT_SERVING")
        status = await h2pool.rpc.health_check(channel, "demo.Greeter", timeout=5)
        assert status is HealthStatus.NOT_SERVING


async def test_health_check_without_health_service(grpc_echo_server: GrpcEchoServer) -> None:
    async with h2pool.rpc.insecure_channel(grpc_echo_server.target) as channel:
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await h2pool.rpc.health_check(channel, timeout=5)
    assert caught.value.code() is StatusCode.UNIMPLEMENTED
    assert "/grpc.health.v1.Health/Check" in str(caught.value)


async def test_health_check_timeout() -> None:
    target = f"127.0.0.1:{free_port()}"
    config = {"methodConfig": [{"name": [{}], "waitForReady": True}]}
    async with h2pool.rpc.insecure_channel(target, service_config=config) as channel:
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await h2pool.rpc.health_check(channel, timeout=0.3)
    assert caught.value.code() is StatusCode.DEADLINE_EXCEEDED


async def _spread(channel: h2pool.rpc.Channel, calls: int) -> None:
    unary = channel.unary_unary(Rpc.UNARY)
    results = await asyncio.gather(*(unary(b"x", timeout=10) for _ in range(calls)))
    assert results == [b"x"] * calls


@pytest.mark.parametrize("how", ["keyword", "service_config"])
async def test_active_health_check_takes_a_replica_out(how: str) -> None:
    with (
        GrpcTestServer(options=PINGS_ALLOWED) as first,
        GrpcTestServer(options=PINGS_ALLOWED) as second,
    ):
        endpoints = [first.target, second.target]
        if how == "keyword":
            channel = h2pool.rpc.Channel(
                "http://rpc.test",
                endpoints=endpoints,
                health_check_service="test.Rpc",
                health_check_interval=0.05,
            )
        else:
            config = json.dumps({"healthCheckConfig": {"serviceName": "test.Rpc"}})
            channel = h2pool.rpc.Channel(
                "http://rpc.test",
                endpoints=endpoints,
                options=[("grpc.service_config", config)],
                health_check_interval=0.05,
            )
        for server in (first, second):
            server.set_health("test.Rpc", "SERVING")
        async with channel:
            await channel.channel_ready()
            await eventually(lambda: all(ep.connections for ep in channel.pool.stats().endpoints))
            await _spread(channel, 40)
            assert first.calls_started(Rpc.UNARY) > 0
            assert second.calls_started(Rpc.UNARY) > 0
            first.set_health("test.Rpc", "NOT_SERVING")
            # Out of rotation once a check saw it (the checks have no event to await).
            await eventually(lambda: _ejected(channel) == 1, timeout=10)
            before = first.calls_started(Rpc.UNARY)
            await _spread(channel, 40)
            assert first.calls_started(Rpc.UNARY) == before
            # Never both out: the last serving replica stays, even when it says it does not.
            second.set_health("test.Rpc", "NOT_SERVING")
            with contextlib.suppress(TimeoutError):  # ten check rounds to break the rule
                await eventually(lambda: _ejected(channel) == 2, timeout=0.5)
            assert _ejected(channel) == 1
            await _spread(channel, 10)
            first.set_health("test.Rpc", "SERVING")
            second.set_health("test.Rpc", "SERVING")
            await eventually(lambda: _ejected(channel) == 0, timeout=10)
            before = first.calls_started(Rpc.UNARY)
            await _spread(channel, 40)
            assert first.calls_started(Rpc.UNARY) > before


def _ejected(channel: h2pool.rpc.Channel) -> int:
    return sum(1 for endpoint in channel.pool.stats().endpoints if endpoint.ejected)


def test_health_check_config_parsed() -> None:
    config = parse_service_config({"healthCheckConfig": {"serviceName": "demo.Greeter"}})
    assert config.health_check_service == "demo.Greeter"
    assert parse_service_config({"healthCheckConfig": {}}).health_check_service == ""
    assert parse_service_config({}).health_check_service is None
    with pytest.raises(ValueError, match=r"healthCheckConfig\.serviceName must be a string"):
        parse_service_config({"healthCheckConfig": {"serviceName": 3}})
