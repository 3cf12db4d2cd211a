"""Service config (gRPC's JSON format, gRFC A6 retries) and grpc channel options, against grpcio.

The retry cases use the test server's ``x-id``/``x-fail-first`` keys: the first N calls with
one ``x-id`` end with ``x-status``, so the server counts a call's attempts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import socket
from typing import Any

import pytest

import h2pool
import h2pool.rpc
from h2pool._rpc import channel as h2pool_rpc_channel
from h2pool.rpc import StatusCode
from tests.peers import GrpcTestServer, Rpc, free_port
from tests.rpc_support import multicallable, outcome, start_one

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

_ids = itertools.count()


def _retry(**policy: Any) -> dict[str, Any]:
    """A service config retrying UNAVAILABLE on every test.Rpc method, quickly."""
    retry = {
        "maxAttempts": 3,
        "initialBackoff": "0.01s",
        "maxBackoff": "0.05s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
        **policy,
    }
    return {"methodConfig": [{"name": [{"service": "test.Rpc"}], "retryPolicy": retry}]}


def _failing(first: int, status: str = "UNAVAILABLE", *extra: tuple[str, str]) -> tuple[str, Any]:
    """Metadata failing the first ``first`` attempts of a new call id with ``status``."""
    call_id = f"call-{next(_ids)}"
    return call_id, (
        ("x-status", status),
        ("x-id", call_id),
        ("x-fail-first", str(first)),
        *extra,
    )


# --- The three ways to give a config -------------------------------------------------------------

FORMS = ["dict", "json", "option"]


def _channel(server: GrpcTestServer, config: dict[str, Any], form: str) -> h2pool.rpc.Channel:
    target = f"http://{server.target}"
    if form == "dict":
        return h2pool.rpc.Channel(target, service_config=config)
    if form == "json":
        return h2pool.rpc.Channel(target, service_config=json.dumps(config))
    return h2pool.rpc.Channel(target, options=[("grpc.service_config", json.dumps(config))])


@pytest.mark.parametrize("form", FORMS)
async def test_config_timeout_bounds_the_call(grpc_server: GrpcTestServer, form: str) -> None:
    config = {"methodConfig": [{"name": [{"service": "test.Rpc"}], "timeout": "0.3s"}]}
    async with _channel(grpc_server, config, form) as channel:
        for timeout in (None, 30.0):  # the smaller of the config's and the call's
            call = start_one(channel, Rpc.UNARY, metadata=(("x-never", "1"),), timeout=timeout)
            remaining = call.time_remaining()
            assert remaining is not None
            assert remaining <= 0.3
            with pytest.raises(h2pool.rpc.RpcError) as caught:
                await call
            assert caught.value.code() is StatusCode.DEADLINE_EXCEEDED
        call = start_one(channel, Rpc.UNARY, timeout=0.1, metadata=(("x-never", "1"),))
        remaining = call.time_remaining()
        assert remaining is not None
        assert remaining <= 0.1
        with pytest.raises(h2pool.rpc.RpcError):
            await call


async def test_method_entry_wins_over_service_entry(grpc_server: GrpcTestServer) -> None:
    config = {
        "methodConfig": [
            {"name": [{"service": "test.Rpc"}], "timeout": "0.2s"},
            {"name": [{"service": "test.Rpc", "method": "Unary"}], "timeout": "20s"},
        ]
    }
    async with h2pool.rpc.Channel(f"http://{grpc_server.target}", service_config=config) as ch:
        unary = start_one(ch, Rpc.UNARY)
        stream = start_one(ch, Rpc.SERVER_STREAM)
        assert (unary.time_remaining() or 0) > 10
        assert (stream.time_remaining() or 99) <= 0.2
        assert await unary == b"ping"
        assert [message async for message in stream] == [b"ping"]


async def test_config_wait_for_ready() -> None:
    config = {"methodConfig": [{"name": [{}], "waitForReady": True}]}
    target = f"http://127.0.0.1:{free_port()}"  # nothing listens
    async with h2pool.rpc.Channel(target, service_config=config) as channel:
        # It waits for an endpoint until its deadline.
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await start_one(channel, Rpc.UNARY, timeout=0.5)
        assert caught.value.code() is StatusCode.DEADLINE_EXCEEDED
        # The call's own wait_for_ready wins over the config.
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await start_one(channel, Rpc.UNARY, timeout=5, wait_for_ready=False)
        assert caught.value.code() is StatusCode.UNAVAILABLE
    async with h2pool.rpc.Channel(target) as channel:  # gRPC's default: fail fast
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await start_one(channel, Rpc.UNARY, timeout=5)
        assert caught.value.code() is StatusCode.UNAVAILABLE


@pytest.mark.parametrize("method", list(Rpc))
async def test_config_message_limits(grpc_server: GrpcTestServer, method: Rpc) -> None:
    config = {
        "methodConfig": [
            {
                "name": [{"service": "test.Rpc"}],
                "maxRequestMessageBytes": 10,
                "maxResponseMessageBytes": "10",  # proto JSON writes 64-bit ints as strings
            }
        ]
    }
    async with h2pool.rpc.Channel(f"http://{grpc_server.target}", service_config=config) as ch:
        rpc_method = multicallable(ch, method)
        big = b"x" * 11
        request: Any = big if method in (Rpc.UNARY, Rpc.SERVER_STREAM) else iter([big])
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await outcome(rpc_method(request), method)
        assert caught.value.code() is StatusCode.RESOURCE_EXHAUSTED
        # A response over the limit (the server echoes; ServerStream sends x-size bytes).
        metadata = (("x-size", "11"), ("x-count", "1"))
        small = b"y" * 10
        if method in (Rpc.UNARY, Rpc.SERVER_STREAM):
            call = rpc_method(small, metadata=metadata)
        else:
            call = rpc_method(iter([small, b"z"]), metadata=metadata)
        if method is Rpc.UNARY:
            assert await call == small  # at the limit is fine
        elif method is Rpc.BIDI:
            assert [message async for message in call] == [small, b"z"]
        else:
            with pytest.raises(h2pool.rpc.RpcError) as caught:
                await outcome(call, method)
            assert caught.value.code() is StatusCode.RESOURCE_EXHAUSTED
    # Only the calls with small enough requests reached the server.
    assert grpc_server.calls_started(method) == 1


# --- retryPolicy (gRFC A6) ----------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("method", list(Rpc))
async def test_retried_then_ok(grpc_server: GrpcTestServer, form: str, method: Rpc) -> None:
    async with _channel(grpc_server, _retry(), form) as channel:
        call_id, metadata = _failing(2)
        call = start_one(channel, method, metadata=metadata, timeout=10)
        assert await outcome(call, method) == [b"ping"]
        assert await call.code() is StatusCode.OK
    assert grpc_server.log.calls_with_id(call_id) == 3


async def test_max_attempts_honoured(grpc_server: GrpcTestServer) -> None:
    async with h2pool.rpc.Channel(
        f"http://{grpc_server.target}", service_config=_retry(maxAttempts=3)
    ) as channel:
        call_id, metadata = _failing(10)
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await start_one(channel, Rpc.UNARY, metadata=metadata, timeout=10)
        assert caught.value.code() is StatusCode.UNAVAILABLE
        assert grpc_server.log.calls_with_id(call_id) == 3
        assert "attempts: 3" in caught.value.debug_error_string()
    # A6: more than 5 attempts are taken as 5.
    async with h2pool.rpc.Channel(
        f"http://{grpc_server.target}", service_config=_retry(maxAttempts=9)
    ) as channel:
        call_id, metadata = _failing(10)
        with pytest.raises(h2pool.rpc.RpcError):
            await start_one(channel, Rpc.UNARY, metadata=metadata, timeout=10)
    assert grpc_server.log.calls_with_id(call_id) == 5


@pytest.mark.parametrize("method", [Rpc.SERVER_STREAM, Rpc.BIDI])
async def test_not_retried_after_a_message(grpc_server: GrpcTestServer, method: Rpc) -> None:
    async with h2pool.rpc.Channel(
        f"http://{grpc_server.target}", service_config=_retry()
    ) as channel:
        call_id, metadata = _failing(2, "UNAVAILABLE", ("x-after", "1"), ("x-count", "3"))
        call = start_one(channel, method, metadata=metadata, timeout=10)
        assert await call.read() == b"ping"
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await call.read()
        assert caught.value.code() is StatusCode.UNAVAILABLE
    assert grpc_server.log.calls_with_id(call_id) == 1


@pytest.mark.parametrize("method", list(Rpc))
async def test_not_retried_after_response_headers(grpc_server: GrpcTestServer, method: Rpc) -> None:
    async with h2pool.rpc.Channel(
        f"http://{grpc_server.target}", service_config=_retry()
    ) as channel:
        # grpcio sends headers and status as one Trailers-Only block (retryable) when both
        # are pending at once: the server's x-sleep lets the headers go first.
        call_id, metadata = _failing(2, "UNAVAILABLE", ("x-headers-first", "1"), ("x-sleep", "0.2"))
        call = start_one(channel, method, metadata=metadata, timeout=10)
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await outcome(call, method)
        assert caught.value.code() is StatusCode.UNAVAILABLE
    assert grpc_server.log.calls_with_id(call_id) == 1


async def test_not_retried_for_codes_not_listed(grpc_server: GrpcTestServer) -> None:
    async with h2pool.rpc.Channel(
        f"http://{grpc_server.target}", service_config=_retry()
    ) as channel:
        call_id, metadata = _failing(2, "INTERNAL")
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await start_one(channel, Rpc.UNARY, metadata=metadata, timeout=10)
        assert caught.value.code() is StatusCode.INTERNAL
    assert grpc_server.log.calls_with_id(call_id) == 1


async def test_no_retry_without_a_policy(grpc_server: GrpcTestServer) -> None:
    async with h2pool.rpc.insecure_channel(grpc_server.target) as channel:
        call_id, metadata = _failing(1)
        with pytest.raises(h2pool.rpc.RpcError):
            await start_one(channel, Rpc.UNARY, metadata=metadata, timeout=10)
    assert grpc_server.log.calls_with_id(call_id) == 1


async def test_pushback(grpc_server: GrpcTestServer) -> None:
    async with h2pool.rpc.Channel(
        f"http://{grpc_server.target}", service_config=_retry()
    ) as channel:
        # A negative pushback: the server says not to retry.
        call_id, metadata = _failing(2, "UNAVAILABLE", ("x-pushback-ms", "-1"))
        with pytest.raises(h2pool.rpc.RpcError):
            await start_one(channel, Rpc.UNARY, metadata=metadata, timeout=10)
        assert grpc_server.log.calls_with_id(call_id) == 1
        # A pushback replaces the backoff: the retry waits that long (far above maxBackoff).
        call_id, metadata = _failing(1, "UNAVAILABLE", ("x-pushback-ms", "400"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await start_one(channel, Rpc.UNARY, metadata=metadata, timeout=10) == b"ping"
        assert loop.time() - started >= 0.4
        assert grpc_server.log.calls_with_id(call_id) == 2


async def test_retry_throttling_stops_retries(grpc_server: GrpcTestServer) -> None:
    config = {**_retry(maxAttempts=5), "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}
    async with h2pool.rpc.Channel(f"http://{grpc_server.target}", service_config=config) as ch:
        # 10 tokens, retries while more than 5 are left: each failed attempt costs one.
        first_id, metadata = _failing(100)
        with pytest.raises(h2pool.rpc.RpcError):
            await start_one(ch, Rpc.UNARY, metadata=metadata, timeout=10)
        assert grpc_server.log.calls_with_id(first_id) == 5  # tokens 10 -> 5
        second_id, metadata = _failing(100)
        with pytest.raises(h2pool.rpc.RpcError):
            await start_one(ch, Rpc.UNARY, metadata=metadata, timeout=10)
        assert grpc_server.log.calls_with_id(second_id) == 1  # 4 left: no retry
        # Successes give back 0.1 token each: after 25 (6.5 tokens), a failure leaves 5.5,
        # above half: retried.
        for _ in range(25):
            assert await start_one(ch, Rpc.UNARY, timeout=10) == b"ping"
        third_id, metadata = _failing(1)
        assert await start_one(ch, Rpc.UNARY, metadata=metadata, timeout=10) == b"ping"
        assert grpc_server.log.calls_with_id(third_id) == 2


async def test_retries_of_calls_spend_the_pools_retry_budget(grpc_server: GrpcTestServer) -> None:
    spent = h2pool.RetryBudget(ratio=0.0, min_per_second=0.0)
    async with h2pool.rpc.Channel(
        f"http://{grpc_server.target}", service_config=_retry(maxAttempts=5), retry_budget=spent
    ) as channel:
        call_id, metadata = _failing(100)
        with pytest.raises(h2pool.rpc.RpcError):
            await start_one(channel, Rpc.UNARY, metadata=metadata, timeout=10)
        assert grpc_server.log.calls_with_id(call_id) == 1  # the retry policy allowed 5
        assert channel.pool.stats().budget_refusals == 1
    async with h2pool.rpc.Channel(
        f"http://{grpc_server.target}", service_config=_retry(maxAttempts=5)
    ) as channel:  # the default budget: 10 retries a second at least
        call_id, metadata = _failing(100)
        with pytest.raises(h2pool.rpc.RpcError):
            await start_one(channel, Rpc.UNARY, metadata=metadata, timeout=10)
        assert grpc_server.log.calls_with_id(call_id) == 5


# --- Invalid configs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "service config is not JSON"),
        (_retry(maxAttempts=1), "maxAttempts must be >= 2"),
        ({"methodConfig": [{"timeout": "soon"}]}, "methodConfig[0].timeout"),
        ({"retryThrottling": {"maxTokens": 10}}, "retryThrottling.tokenRatio is required"),
    ],
)
def test_invalid_config_raises_one_line(config: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        h2pool.rpc.Channel("http://127.0.0.1:1", service_config=config)
    assert "\n" not in str(caught.value)
    option = config if isinstance(config, str) else json.dumps(config)
    with pytest.raises(ValueError, match=re.escape("grpc.service_config")) as caught:
        h2pool.rpc.Channel("http://127.0.0.1:1", options=[("grpc.service_config", option)])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# --- Channel options ------------------------------------------------------------------------------


async def test_message_length_options(grpc_server: GrpcTestServer) -> None:
    options = [("grpc.max_send_message_length", 10), ("grpc.max_receive_message_length", 10)]
    async with h2pool.rpc.insecure_channel(grpc_server.target, options=options) as channel:
        unary = channel.unary_unary(Rpc.UNARY)
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await unary(b"x" * 11)
        assert caught.value.code() is StatusCode.RESOURCE_EXHAUSTED
        assert grpc_server.calls_started() == 0  # refused before sending
        stream = channel.unary_stream(Rpc.SERVER_STREAM)
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await stream(b"", metadata=(("x-size", "11"),)).read()
        assert caught.value.code() is StatusCode.RESOURCE_EXHAUSTED
        assert await unary(b"x" * 10) == b"x" * 10
    unlimited = [("grpc.max_receive_message_length", -1)]
    async with h2pool.rpc.insecure_channel(grpc_server.target, options=unlimited) as channel:
        stream = channel.unary_stream(Rpc.SERVER_STREAM)
        size = 5 * 1024 * 1024  # above grpc's default 4 MiB
        message = await stream(b"", metadata=(("x-size", str(size)), ("x-count", "1"))).read()
        assert len(message) == size
    async with h2pool.rpc.insecure_channel(grpc_server.target) as channel:
        stream = channel.unary_stream(Rpc.SERVER_STREAM)
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await stream(b"", metadata=(("x-size", str(size)), ("x-count", "1"))).read()
        assert caught.value.code() is StatusCode.RESOURCE_EXHAUSTED


async def test_primary_user_agent(grpc_server: GrpcTestServer) -> None:
    options = [("grpc.primary_user_agent", "my-app/1.2")]
    async with h2pool.rpc.insecure_channel(grpc_server.target, options=options) as channel:
        assert await channel.unary_unary(Rpc.UNARY)(b"x") == b"x"
    agents = [value for key, value in grpc_server.last_metadata(Rpc.UNARY) if key == "user-agent"]
    assert len(agents) == 1
    assert isinstance(agents[0], str)
    assert agents[0].startswith("my-app/1.2 ")
    assert f"h2pool-rpc/{h2pool.__version__}" in agents[0]


@pytest.fixture
def pool_keywords(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The keywords the next channels give their ``Pool`` (the latest channel's win)."""
    given: dict[str, Any] = {}

    def pool(target: str, **kwargs: Any) -> h2pool.Pool:
        given.update(kwargs)
        return h2pool.Pool(target, **kwargs)

    monkeypatch.setattr(h2pool_rpc_channel, "Pool", pool)
    return given


def test_keepalive_timeout_option_sets_the_functional_timeout(
    pool_keywords: dict[str, Any],
) -> None:
    given = pool_keywords
    options = [("grpc.keepalive_timeout_ms", 2500)]
    h2pool.rpc.Channel("http://127.0.0.1:1", options=options)
    assert given["functional_timeout"] == 2.5
    # An explicit pool keyword wins.
    h2pool.rpc.Channel("http://127.0.0.1:1", options=options, functional_timeout=7)
    assert given["functional_timeout"] == 7


def test_keepalive_time_option_sets_the_ping_budget_period(
    pool_keywords: dict[str, Any],
) -> None:
    given = pool_keywords
    h2pool.rpc.Channel("http://127.0.0.1:1", options=[("grpc.keepalive_time_ms", 10_000)])
    assert given["ping_budget"] == h2pool.PingBudget(pings=2, period=10.0)
    given.clear()
    h2pool.rpc.Channel("http://127.0.0.1:1")
    assert "ping_budget" not in given  # the pool's default budget


async def test_the_channels_wait_for_ready_is_the_calls_default() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens: connections are refused
    loop = asyncio.get_running_loop()
    async with h2pool.rpc.Channel(f"http://127.0.0.1:{port}", wait_for_ready=True) as channel:
        started = loop.time()
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await channel.unary_unary(Rpc.UNARY)(b"x", timeout=0.5)
        assert caught.value.code() is h2pool.rpc.StatusCode.DEADLINE_EXCEEDED
        assert loop.time() - started >= 0.45  # it waited for a server
        # A call's own choice wins.
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await channel.unary_unary(Rpc.UNARY)(b"x", timeout=5, wait_for_ready=False)
        assert caught.value.code() is h2pool.rpc.StatusCode.UNAVAILABLE


def test_unknown_options_are_ignored_with_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="h2pool.rpc"):
        h2pool.rpc.Channel(
            "http://127.0.0.1:1",
            options=[("grpc.enable_retries", 1), ("grpc.lb_policy_name", "round_robin")],
        )
    logged = caplog.text
    assert "grpc.enable_retries" in logged
    assert "grpc.lb_policy_name" in logged


@pytest.mark.parametrize(
    "option",
    [
        ("grpc.max_send_message_length", "big"),
        ("grpc.max_receive_message_length", -2),
        ("grpc.keepalive_time_ms", 0),
        ("grpc.keepalive_timeout_ms", 1.5),
        ("grpc.primary_user_agent", "bad\nagent"),
        ("grpc.service_config", {"methodConfig": []}),
    ],
)
def test_invalid_option_raises_one_line(option: tuple[str, Any]) -> None:
    with pytest.raises(ValueError, match=re.escape(option[0])) as caught:
        h2pool.rpc.Channel("http://127.0.0.1:1", options=[option])
    assert "\n" not in str(caught.value)
