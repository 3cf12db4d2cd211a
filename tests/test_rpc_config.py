"""The pure decisions and parsers of h2pool's gRPC client: service config, options, retries, health.

The service config is gRPC's JSON format (doc/service_config.md) and the retry
rules are gRFC A6's; the health messages are checked against the real
``grpc_health.v1`` classes when ``grpcio-health-checking`` is installed.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2pool._rpc.config import (
    ChannelOptions,
    MethodConfig,
    MethodRetry,
    ServiceConfig,
    Throttling,
    parse_options,
    parse_service_config,
)
from h2pool._rpc.errors import RpcError
from h2pool._rpc.protobuf import HealthStatus, decode_health_response, encode_health_request
from h2pool._rpc.retry import RetryThrottle, decide_rpc_retry, parse_pushback
from h2pool._rpc.status import StatusCode

RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "resource_exhausted", 10],
}

CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {"name": [{}], "timeout": "10s"},
        {
            "name": [{"service": "pkg.Svc"}],
            "timeout": "1.5s",
            "waitForReady": True,
            "retryPolicy": RETRY_POLICY,
        },
        {
            "name": [{"service": "pkg.Svc", "method": "Big"}, {"service": "other.Svc"}],
            "maxRequestMessageBytes": 1024,
            "maxResponseMessageBytes": "2048",
        },
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


# config.py: the service config


def test_parse_service_config() -> None:
    config = parse_service_config(CONFIG)
    assert config == parse_service_config(json.dumps(CONFIG))
    retry = MethodRetry(
        max_attempts=4,
        initial_backoff=0.1,
        max_backoff=1.0,
        backoff_multiplier=2.0,
        retryable=frozenset(
            {StatusCode.UNAVAILABLE, StatusCode.RESOURCE_EXHAUSTED, StatusCode.ABORTED}
        ),
    )
    assert config.for_method("/pkg.Svc/Get") == MethodConfig(
        timeout=1.5, wait_for_ready=True, retry=retry
    )
    # The entry naming the method wins whole (its fields are not merged with the service's).
    assert config.for_method("/pkg.Svc/Big") == MethodConfig(
        max_request_bytes=1024, max_response_bytes=2048
    )
    assert config.for_method("/other.Svc/Any") == MethodConfig(
        max_request_bytes=1024, max_response_bytes=2048
    )
    assert config.for_method("/third.Svc/Get") == MethodConfig(timeout=10.0)
    assert config.throttling == Throttling(max_tokens=10.0, token_ratio=0.1)


def test_for_method_without_a_default() -> None:
    config = parse_service_config({"methodConfig": [{"name": [{"service": "a.B"}]}]})
    assert config.for_method("/a.B/C") == MethodConfig()
    assert config.for_method("/x.Y/Z") == MethodConfig()
    assert ServiceConfig().for_method("/x.Y/Z") == MethodConfig()
    assert parse_service_config(None) == ServiceConfig()
    assert parse_service_config("{}") == ServiceConfig()
    default = parse_service_config({"methodConfig": [{"name": [{"service": ""}], "timeout": 2}]})
    assert default.for_method("/x.Y/Z") == MethodConfig(timeout=2.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("1.5s", 1.5), ("0.000000001s", 1e-9), ("0s", 0.0), (3, 3.0), (0.25, 0.25)],
)
def test_timeouts(value: object, seconds: float) -> None:
    config = parse_service_config({"methodConfig": [{"name": [{}], "timeout": value}]})
    assert config.for_method("/a/b").timeout == seconds


def test_max_attempts_above_five_are_five() -> None:
    policy = {**RETRY_POLICY, "maxAttempts": 9}
    config = parse_service_config({"methodConfig": [{"name": [{}], "retryPolicy": policy}]})
    retry = config.for_method("/a/b").retry
    assert retry is not None
    assert retry.max_attempts == 5


@pytest.mark.parametrize(
    ("ratio", "kept"), [(0.1, 0.1), (0.5555, 0.555), (1, 1.0), (2.0009, 2.0), (0.001, 0.001)]
)
def test_token_ratio_keeps_three_decimals(ratio: float, kept: float) -> None:
    config = parse_service_config({"retryThrottling": {"maxTokens": 1000, "tokenRatio": ratio}})
    assert config.throttling == Throttling(max_tokens=1000.0, token_ratio=kept)


def method_config(**fields: Any) -> dict[str, Any]:
    return {"methodConfig": [{"name": [{"service": "a.B"}], **fields}]}


def retry_policy(**fields: Any) -> dict[str, Any]:
    return method_config(retryPolicy={**RETRY_POLICY, **fields})


def without(name: str) -> dict[str, Any]:
    return method_config(retryPolicy={k: v for k, v in RETRY_POLICY.items() if k != name})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{", "service config is not JSON"),
        ("[]", "service config must be an object, not list"),
        ({"methodConfig": {}}, "methodConfig must be a list, not dict"),
        ({"methodConfig": [1]}, r"methodConfig\[0\] must be an object, not int"),
        (method_config(timeout="1m"), r"methodConfig\[0\].timeout must be a duration"),
        (method_config(timeout="-1s"), r"methodConfig\[0\].timeout must be a duration"),
        (method_config(timeout=-1), r"methodConfig\[0\].timeout must be >= 0, not -1"),
        (method_config(timeout=True), r"methodConfig\[0\].timeout must be a number"),
        (method_config(waitForReady="yes"), r"waitForReady must be true or false"),
        (method_config(maxRequestMessageBytes=-1), r"maxRequestMessageBytes must be a number"),
        (method_config(maxResponseMessageBytes="1e3"), "maxResponseMessageBytes must be a number"),
        (retry_policy(maxAttempts=1), r"\.retryPolicy\.maxAttempts must be >= 2, not 1"),
        (retry_policy(maxAttempts="3"), r"maxAttempts must be >= 2, not '3'"),
        (retry_policy(initialBackoff="0s"), r"retryPolicy\.initialBackoff must be > 0"),
        (retry_policy(maxBackoff=0), r"retryPolicy\.maxBackoff must be > 0"),
        (retry_policy(backoffMultiplier=0), r"retryPolicy\.backoffMultiplier must be > 0"),
        (retry_policy(retryableStatusCodes=[]), "retryableStatusCodes must not be empty"),
        (
            retry_policy(retryableStatusCodes=["UNAVAILABLE", "NOPE"]),
            r"retryableStatusCodes\[1\] is not a status code: 'NOPE'",
        ),
        (retry_policy(retryableStatusCodes="UNAVAILABLE"), "retryableStatusCodes must be a list"),
        (without("maxAttempts"), r"retryPolicy\.maxAttempts is required"),
        (without("retryableStatusCodes"), r"retryPolicy\.retryableStatusCodes is required"),
        (
            {"methodConfig": [{"name": [{"method": "M"}]}]},
            r"methodConfig\[0\]\.name\[0\] names a method without a service",
        ),
        (
            {"methodConfig": [{"name": [{"service": 1}]}]},
            r"methodConfig\[0\]\.name\[0\]\.service must be a string",
        ),
        (
            {"methodConfig": [{"name": [{}]}, {"name": [{"service": "a"}, {"service": ""}]}]},
            r"methodConfig\[1\]\.name\[1\] names the default entry again",
        ),
        (
            {"methodConfig": [{"name": [{"service": "a", "method": "m"}] * 2}]},
            r"methodConfig\[0\]\.name\[1\] names a/m again",
        ),
        ({"retryThrottling": {"maxTokens": 0, "tokenRatio": 1}}, "maxTokens must be > 0"),
        ({"retryThrottling": {"maxTokens": 1001, "tokenRatio": 1}}, "maxTokens must be <= 1000"),
        ({"retryThrottling": {"maxTokens": 1, "tokenRatio": 0}}, "tokenRatio must be > 0"),
        ({"retryThrottling": {"maxTokens": 1, "tokenRatio": 0.0001}}, "tokenRatio must be >="),
        ({"retryThrottling": {"maxTokens": 1}}, r"retryThrottling\.tokenRatio is required"),
    ],
)
def test_invalid_service_configs(config: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_service_config(config)
    assert "\n" not in str(info.value)


def test_unknown_fields_are_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="h2pool.rpc"):
        config = parse_service_config(
            {
                "loadBalancingPolicy": "round_robin",
                "methodConfig": [
                    {
                        "name": [{"service": "a.B", "extra": 1}],
                        "hedgingPolicy": {"maxAttempts": 3},
                        "retryPolicy": {**RETRY_POLICY, "perAttemptRecvTimeout": "1s"},
                    }
                ],
            }
        )
    assert config.for_method("/a.B/C").retry is not None
    logged = " ".join(record.getMessage() for record in caplog.records)
    for field in (
        "loadBalancingPolicy",
        "methodConfig[0].hedgingPolicy",
        "methodConfig[0].name[0].extra",
        "methodConfig[0].retryPolicy.perAttemptRecvTimeout",
    ):
        assert f"{field} ignored" in logged


# config.py: channel options


def test_parse_options() -> None:
    assert parse_options(None) == ChannelOptions()
    assert parse_options([]) == ChannelOptions(max_send_bytes=None, max_receive_bytes=4194304)
    options = parse_options(
        [
            ("grpc.max_send_message_length", 100),
            ("grpc.max_receive_message_length", -1),
            ("grpc.service_config", json.dumps(CONFIG)),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.primary_user_agent", "my-app/1.0"),
            ("grpc.enable_retries", 1),
            ("grpc.max_send_message_length", 200),
        ]
    )
    assert options == ChannelOptions(
        max_send_bytes=200,
        max_receive_bytes=None,
        service_config=parse_service_config(CONFIG),
        keepalive_time=30.0,
        keepalive_timeout=5.0,
        primary_user_agent="my-app/1.0",
    )


def test_unknown_options_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="h2pool.rpc"):
        assert parse_options([("grpc.so_reuseport", 0)]) == ChannelOptions()
    assert "grpc.so_reuseport ignored" in caplog.text


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("grpc.max_send_message_length", -2), "grpc.max_send_message_length must be"),
        (("grpc.max_receive_message_length", "4"), "grpc.max_receive_message_length must be"),
        (("grpc.max_receive_message_length", True), "grpc.max_receive_message_length must be"),
        (("grpc.keepalive_time_ms", 0), "grpc.keepalive_time_ms must be a positive"),
        (("grpc.keepalive_timeout_ms", 1.5), "grpc.keepalive_timeout_ms must be a positive"),
        (("grpc.service_config", "{"), "option grpc.service_config: service config is not JSON"),
        (("grpc.service_config", {}), "grpc.service_config must be a JSON string"),
        (
            ("grpc.service_config", json.dumps(retry_policy(maxAttempts=1))),
            r"option grpc.service_config: methodConfig\[0\]\.retryPolicy\.maxAttempts",
        ),
        (("grpc.primary_user_agent", b"x"), "grpc.primary_user_agent must be"),
        (("grpc.primary_user_agent", "a\nb"), "grpc.primary_user_agent must be"),
    ],
)
def test_invalid_options(option: tuple[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_options([option])
    assert "\n" not in str(info.value)


# retry.py

POLICY = MethodRetry(
    max_attempts=3,
    initial_backoff=1.0,
    max_backoff=5.0,
    backoff_multiplier=4.0,
    retryable=frozenset({StatusCode.UNAVAILABLE}),
)


def decide(**changes: Any) -> float | None:
    arguments: dict[str, Any] = {
        "code": StatusCode.UNAVAILABLE,
        "committed": False,
        "attempts": 1,
        "policy": POLICY,
        "throttle": None,
        "pushback": None,
        "now": 100.0,
        "deadline": None,
        "rng": random.Random(1),
    }
    arguments.update(changes)
    code = arguments.pop("code")
    return decide_rpc_retry(code, **arguments)


def test_retry_backoff_per_a6() -> None:
    # The n-th retry waits uniform(0, min(initial * multiplier**(n-1), max)).
    first = decide(attempts=1)
    assert first == random.Random(1).uniform(0, 1.0)
    second = decide(attempts=2)
    assert second == random.Random(1).uniform(0, 4.0)
    capped = decide(attempts=2, policy=POLICY.__class__(**{**POLICY.__dict__, "max_backoff": 2.0}))
    assert capped == random.Random(1).uniform(0, 2.0)


@given(st.integers(min_value=1, max_value=4), st.integers())
def test_retry_delay_within_the_bound(attempts: int, seed: int) -> None:
    policy = MethodRetry(5, 0.5, 3.0, 2.0, frozenset({StatusCode.UNAVAILABLE}))
    delay = decide(attempts=attempts, policy=policy, rng=random.Random(seed))
    assert delay is not None
    assert 0 <= delay <= min(0.5 * 2.0 ** (attempts - 1), 3.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"policy": None},
        {"committed": True},
        {"code": StatusCode.INTERNAL},
        {"code": StatusCode.OK},
        {"attempts": 3},
        {"attempts": 4},
        {"pushback": "-1"},
        {"pushback": "soon"},
        {"pushback": ""},
        {"pushback": "1.5"},
        {"deadline": 100.0},
        {"deadline": 99.0},
        {"pushback": "2000", "deadline": 101.0},
    ],
    ids=str,
)
def test_no_retry(changes: dict[str, Any]) -> None:
    assert decide(**changes) is None


def test_retry_within_the_deadline() -> None:
    delay = decide(deadline=100.0 + random.Random(1).uniform(0, 1.0) + 0.001)
    assert delay == random.Random(1).uniform(0, 1.0)


def test_pushback_is_the_delay() -> None:
    assert decide(pushback="250") == 0.25
    assert decide(pushback="0") == 0.0
    assert decide(pushback="2000", attempts=2, deadline=103.0) == 2.0
    assert decide(pushback="250", committed=True) is None
    assert decide(pushback="250", code=StatusCode.NOT_FOUND) is None


@pytest.mark.parametrize(
    ("value", "delay"), [("0", 0.0), ("1500", 1.5), ("-1", None), ("x", None), ("", None)]
)
def test_parse_pushback(value: str, delay: float | None) -> None:
    assert parse_pushback(value) == delay


def test_throttle_arithmetic() -> None:
    throttle = RetryThrottle(Throttling(max_tokens=10, token_ratio=0.5))
    assert throttle.tokens == 10
    assert throttle.allows_retry
    for _ in range(4):
        throttle.record_failure()
    assert throttle.tokens == 6
    assert throttle.allows_retry
    throttle.record_failure()
    assert throttle.tokens == 5  # at half: no more retries (tokens must be above half)
    assert not throttle.allows_retry
    assert decide(throttle=throttle) is None
    throttle.record_success()
    assert throttle.tokens == 5.5
    assert throttle.allows_retry
    assert decide(throttle=throttle) is not None
    for _ in range(20):
        throttle.record_failure()
    assert throttle.tokens == 0  # never below zero
    for _ in range(40):
        throttle.record_success()
    assert throttle.tokens == 10  # never above max_tokens


@given(st.lists(st.booleans(), max_size=200))
def test_throttle_stays_in_bounds(outcomes: list[bool]) -> None:
    throttle = RetryThrottle(Throttling(max_tokens=3, token_ratio=0.25))
    expected = 3.0
    for failed in outcomes:
        if failed:
            throttle.record_failure()
            expected = max(0.0, expected - 1)
        else:
            throttle.record_success()
            expected = min(3.0, expected + 0.25)
        assert throttle.tokens == expected
        assert throttle.allows_retry == (expected > 1.5)


# protobuf.py


def test_encode_health_request() -> None:
    assert encode_health_request("") == b""
    assert encode_health_request("svc") == b"\x0a\x03svc"
    assert encode_health_request("é" * 100) == b"\x0a\xc8\x01" + "é".encode() * 100


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", HealthStatus.UNKNOWN),
        (b"\x08\x00", HealthStatus.UNKNOWN),
        (b"\x08\x01", HealthStatus.SERVING),
        (b"\x08\x02", HealthStatus.NOT_SERVING),
        (b"\x08\x03", HealthStatus.SERVICE_UNKNOWN),
        (b"\x08\x04", HealthStatus.UNKNOWN),
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", HealthStatus.UNKNOWN),  # -1
        (b"\x08\x02\x08\x01", HealthStatus.SERVING),  # the last one wins
        # Unknown fields of every wire type, before and after.
        (b"\x10\x96\x01\x08\x01", HealthStatus.SERVING),
        (b"\x11" + bytes(8) + b"\x08\x02", HealthStatus.NOT_SERVING),
        (b"\x1a\x03abc\x08\x01", HealthStatus.SERVING),
        (b"\x25" + bytes(4) + b"\x08\x01", HealthStatus.SERVING),
        (b"\x08\x01\x2b\x30\x05\x33\x34\x2c", HealthStatus.SERVING),  # nested groups 5 and 6
        (b"\x0a\x01\x02\x08\x03", HealthStatus.SERVICE_UNKNOWN),  # field 1 as bytes: unknown
    ],
)
def test_decode_health_response(data: bytes, status: HealthStatus) -> None:
    assert decode_health_response(data) is status


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x08", "truncated varint"),
        (b"\x08\x80", "truncated varint"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x1a\x05abc", "truncated field"),
        (b"\x11\x00", "truncated field"),
        (b"\x2b\x08\x01", "truncated group"),
        (b"\x2b\x34", "mismatched end of group"),
        (b"\x2c", "end of group outside a group"),
        (b"\x0e", "invalid wire type 6"),
        (b"\x0f\x00", "invalid wire type 7"),
        (b"\x00\x01", "field number 0"),
        (b"\x2b" * 100, "nested too deep"),
    ],
)
def test_decode_refuses_malformed_responses(data: bytes, problem: str) -> None:
    with pytest.raises(RpcError, match=problem) as info:
        decode_health_response(data)
    assert info.value.code() is StatusCode.INTERNAL


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    outcome: HealthStatus | StatusCode
    try:
        outcome = decode_health_response(data)
    except RpcError as error:
        outcome = error.code()
    assert isinstance(outcome, HealthStatus) or outcome is StatusCode.INTERNAL


def test_health_messages_against_grpc_health() -> None:
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    check_against_grpc_health(health_pb2)


@given(st.text(max_size=300))
def check_against_grpc_health(health_pb2: Any, service: str) -> None:
    request = health_pb2.HealthCheckRequest.FromString(encode_health_request(service))
    assert request.service == service
    assert (
        encode_health_request(service)
        == health_pb2.HealthCheckRequest(service=service).SerializeToString()
    )
    for status in HealthStatus:
        response = health_pb2.HealthCheckResponse(status=status.value)
        assert decode_health_response(response.SerializeToString()) is status
