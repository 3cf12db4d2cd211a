"""gRPC service config and channel options, parsed and checked once per channel.

The service config is gRPC's JSON format (grpc/grpc ``doc/service_config.md``,
the ``MethodConfig`` message of ``grpc/service_config/service_config.proto``),
with the retry policy and throttling of gRFC A6. The channel options are the
grpc channel arguments people already pass (``grpc.max_receive_message_length``...).
An invalid value is a ValueError naming its field; an unknown field is left
out with a debug log on the ``h2pool.rpc`` logger.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from .status import StatusCode

__all__ = [
    "ChannelOptions",
    "MethodConfig",
    "MethodRetry",
    "ServiceConfig",
    "Throttling",
    "parse_options",
    "parse_service_config",
]

logger = logging.getLogger("h2pool.rpc")

# gRFC A6: "maxAttempts ... values greater than 5 are treated as 5".
MAX_ATTEMPTS_CAP = 5


@dataclass(frozen=True)
class MethodRetry:
    """A method's retry policy (gRFC A6).

    Attributes:
        max_attempts: Attempts in all, the first one included (2 to 5).
        initial_backoff: Seconds; the first retry waits up to this long.
        max_backoff: Seconds; no retry waits longer (before a pushback).
        backoff_multiplier: How the bound grows from one retry to the next.
        retryable: The statuses that may be retried.
    """

    max_attempts: int
    initial_backoff: float
    max_backoff: float
    backoff_multiplier: float
    retryable: frozenset[StatusCode]


@dataclass(frozen=True)
class MethodConfig:
    """What the service config says of one method; None where it says nothing.

    Attributes:
        timeout: Seconds a call may take at most (the earlier of this and
            the call's own timeout applies).
        wait_for_ready: The default of the call's ``wait_for_ready``.
        max_request_bytes: The largest request message sent.
        max_response_bytes: The largest response message taken.
        retry: The retry policy.
    """

    timeout: float | None = None
    wait_for_ready: bool | None = None
    max_request_bytes: int | None = None
    max_response_bytes: int | None = None
    retry: MethodRetry | None = None


@dataclass(frozen=True)
class Throttling:
    """Retry throttling of a channel (gRFC A6 ``retryThrottling``).

    Attributes:
        max_tokens: Tokens at the start and at most (0 < x <= 1000).
        token_ratio: Tokens a success gives back (> 0, three decimals kept).
    """

    max_tokens: float
    token_ratio: float


_DEFAULT_METHOD_CONFIG = MethodConfig()


@dataclass(frozen=True)
class ServiceConfig:
    """A parsed service config.

    Attributes:
        method_configs: Per ``(service, method)`` name; ``method`` is ``""``
            for an entry naming the whole service, and ``("", "")`` is the
            default entry.
        throttling: The retry throttling, if any.
        health_check_service: The service the channel's active health check
            asks about (gRFC A17 ``healthCheckConfig.serviceName``; ``""``:
            the server), or None for no such check.
    """

    method_configs: Mapping[tuple[str, str], MethodConfig] = field(default_factory=dict, hash=False)
    throttling: Throttling | None = None
    health_check_service: str | None = None

    def for_method(self, method: str) -> MethodConfig:
        """The config of ``method`` (``/pkg.Service/Method``).

        The entry naming the service and the method wins, then the one naming
        the service, then the default entry (``doc/service_config.md``).
        """
        configs = self.method_configs
        if not configs:
            return _DEFAULT_METHOD_CONFIG
        service, _, name = method.lstrip("/").rpartition("/")
        return (
            configs.get((service, name))
            or configs.get((service, ""))
            or configs.get(("", ""), _DEFAULT_METHOD_CONFIG)
        )


def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path} must be an object, not {type(value).__name__}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{path} must be a list, not {type(value).__name__}")
    return list(value)


def _ignore_unknown(fields: Mapping[str, Any], known: Iterable[str], path: str) -> None:
    for name in fields.keys() - set(known):
        logger.debug("service config: %s%s ignored (not supported)", path and f"{path}.", name)


def _number(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{path} must be a number, not {value!r}")
    return float(value)


def _positive(value: object, path: str) -> float:
    number = _number(value, path)
    if not number > 0:
        raise ValueError(f"{path} must be > 0, not {value!r}")
    return number


# proto3 JSON Duration: seconds with up to nine decimals and an "s".
_DURATION = re.compile(r"(\d+)(\.\d{1,9})?s")


def _duration(value: object, path: str) -> float:
    """Seconds of a proto-JSON duration (``"1.5s"``), or of a number of seconds."""
    if isinstance(value, str):
        if _DURATION.fullmatch(value) is None:
            raise ValueError(f"{path} must be a duration like '1.5s', not {value!r}")
        return float(value[:-1])
    seconds = _number(value, path)
    if seconds < 0:
        raise ValueError(f"{path} must be >= 0, not {value!r}")
    return seconds


def _byte_count(value: object, path: str) -> int:
    """A message size: an int, or a string of digits (proto JSON writes 64-bit ints so)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(f"{path} must be a number of bytes, not {value!r}")


def _retry_policy(value: object, path: str) -> MethodRetry:
    fields = _object(value, path)
    known = (
        "maxAttempts",
        "initialBackoff",
        "maxBackoff",
        "backoffMultiplier",
        "retryableStatusCodes",
    )
    missing = [name for name in known if name not in fields]
    if missing:
        raise ValueError(f"{path}.{missing[0]} is required")
    _ignore_unknown(fields, known, path)
    attempts = fields["maxAttempts"]
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 2:
        raise ValueError(f"{path}.maxAttempts must be >= 2, not {attempts!r}")
    initial = _duration(fields["initialBackoff"], f"{path}.initialBackoff")
    maximum = _duration(fields["maxBackoff"], f"{path}.maxBackoff")
    for name, seconds in (("initialBackoff", initial), ("maxBackoff", maximum)):
        if seconds <= 0:
            raise ValueError(f"{path}.{name} must be > 0, not {fields[name]!r}")
    multiplier = _positive(fields["backoffMultiplier"], f"{path}.backoffMultiplier")
    codes_path = f"{path}.retryableStatusCodes"
    codes = _list(fields["retryableStatusCodes"], codes_path)
    if not codes:
        raise ValueError(f"{codes_path} must not be empty")
    retryable = set()
    for index, code in enumerate(codes):
        try:
            retryable.add(StatusCode.coerce(code))
        except ValueError:
            raise ValueError(f"{codes_path}[{index}] is not a status code: {code!r}") from None
    return MethodRetry(
        max_attempts=min(attempts, MAX_ATTEMPTS_CAP),
        initial_backoff=initial,
        max_backoff=maximum,
        backoff_multiplier=multiplier,
        retryable=frozenset(retryable),
    )


def _names(value: object, path: str) -> list[tuple[str, str]]:
    names = []
    for index, item in enumerate(_list(value, path)):
        name_path = f"{path}[{index}]"
        name = _object(item, name_path)
        _ignore_unknown(name, ("service", "method"), name_path)
        service = name.get("service", "")
        method = name.get("method", "")
        for part, text in (("service", service), ("method", method)):
            if not isinstance(text, str):
                raise ValueError(f"{name_path}.{part} must be a string, not {text!r}")
        if method and not service:
            raise ValueError(f"{name_path} names a method without a service")
        names.append((service, method))
    return names


_METHOD_CONFIG_FIELDS = (
    "name",
    "timeout",
    "waitForReady",
    "maxRequestMessageBytes",
    "maxResponseMessageBytes",
    "retryPolicy",
)


def _method_config(fields: Mapping[str, Any], path: str) -> MethodConfig:
    _ignore_unknown(fields, _METHOD_CONFIG_FIELDS, path)
    wait_for_ready = fields.get("waitForReady")
    if wait_for_ready is not None and not isinstance(wait_for_ready, bool):
        raise ValueError(f"{path}.waitForReady must be true or false, not {wait_for_ready!r}")

    def optional(name: str, parse: Any) -> Any:
        value = fields.get(name)
        return None if value is None else parse(value, f"{path}.{name}")

    return MethodConfig(
        timeout=optional("timeout", _duration),
        wait_for_ready=wait_for_ready,
        max_request_bytes=optional("maxRequestMessageBytes", _byte_count),
        max_response_bytes=optional("maxResponseMessageBytes", _byte_count),
        retry=optional("retryPolicy", _retry_policy),
    )


def _throttling(value: object, path: str) -> Throttling:
    fields = _object(value, path)
    _ignore_unknown(fields, ("maxTokens", "tokenRatio"), path)
    for name in ("maxTokens", "tokenRatio"):
        if name not in fields:
            raise ValueError(f"{path}.{name} is required")
    max_tokens = _positive(fields["maxTokens"], f"{path}.maxTokens")
    if max_tokens > 1000:
        raise ValueError(f"{path}.maxTokens must be <= 1000, not {fields['maxTokens']!r}")
    # A6: "Up to 3 decimal places are supported"; the rest is cut off.
    ratio = _positive(fields["tokenRatio"], f"{path}.tokenRatio")
    kept = float(Decimal(repr(ratio)).quantize(Decimal("0.001"), rounding=ROUND_DOWN))
    if kept <= 0:
        raise ValueError(f"{path}.tokenRatio must be >= 0.001, not {fields['tokenRatio']!r}")
    return Throttling(max_tokens=max_tokens, token_ratio=kept)


def _health_check(value: object) -> str:
    path = "healthCheckConfig"
    fields = _object(value, path)
    _ignore_unknown(fields, ("serviceName",), path)
    name = fields.get("serviceName", "")
    if not isinstance(name, str):
        raise ValueError(f"{path}.serviceName must be a string, not {name!r}")
    return name


def parse_service_config(config: str | Mapping[str, Any] | None) -> ServiceConfig:
    """A service config from JSON text or an already parsed dict.

    Raises:
        ValueError: the config is not JSON or is invalid; one line naming the
            field, like ``methodConfig[0].retryPolicy.maxAttempts must be >= 2, not 1``.
    """
    if config is None:
        return ServiceConfig()
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ValueError(f"service config is not JSON: {exc}") from None
    fields = _object(config, "service config")
    _ignore_unknown(fields, ("methodConfig", "retryThrottling", "healthCheckConfig"), "")
    method_configs: dict[tuple[str, str], MethodConfig] = {}
    for index, entry in enumerate(_list(fields.get("methodConfig", []), "methodConfig")):
        path = f"methodConfig[{index}]"
        entry_fields = _object(entry, path)
        parsed = _method_config(entry_fields, path)
        for name_index, key in enumerate(_names(entry_fields.get("name", []), f"{path}.name")):
            if key in method_configs:
                named = "the default entry" if key == ("", "") else "/".join(filter(None, key))
                raise ValueError(f"{path}.name[{name_index}] names {named} again")
            method_configs[key] = parsed
    throttling = fields.get("retryThrottling")
    health = fields.get("healthCheckConfig")
    return ServiceConfig(
        method_configs=method_configs,
        throttling=None if throttling is None else _throttling(throttling, "retryThrottling"),
        health_check_service=None if health is None else _health_check(health),
    )


@dataclass(frozen=True)
class ChannelOptions:
    """The grpc channel options a channel takes (grpc's names, in seconds and bytes).

    Attributes:
        max_send_bytes: The largest message sent (``grpc.max_send_message_length``);
            None for no limit, grpc's default.
        max_receive_bytes: The largest message received
            (``grpc.max_receive_message_length``); 4 MiB by default, as grpc.
        service_config: From ``grpc.service_config``.
        keepalive_time: Seconds (``grpc.keepalive_time_ms``).
        keepalive_timeout: Seconds (``grpc.keepalive_timeout_ms``).
        primary_user_agent: Put before h2pool's in ``user-agent``
            (``grpc.primary_user_agent``).
    """

    max_send_bytes: int | None = None
    max_receive_bytes: int | None = 4 * 1024 * 1024
    service_config: ServiceConfig | None = None
    keepalive_time: float | None = None
    keepalive_timeout: float | None = None
    primary_user_agent: str | None = None


def _message_limit(value: object, name: str) -> int | None:
    # grpc: -1 means unlimited.
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(f"option {name} must be a number of bytes or -1, not {value!r}")
    return None if value == -1 else value


def _milliseconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"option {name} must be a positive number of ms, not {value!r}")
    return value / 1000


def _service_config_option(value: object, name: str) -> ServiceConfig:
    if not isinstance(value, str):
        raise ValueError(f"option {name} must be a JSON string, not {type(value).__name__}")
    try:
        return parse_service_config(value)
    except ValueError as exc:
        raise ValueError(f"option {name}: {exc}") from None


def _user_agent(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise ValueError(f"option {name} must be a printable ASCII string, not {value!r}")
    return value


# grpc channel argument -> (ChannelOptions field, parser of its value).
_OPTIONS: dict[str, tuple[str, Any]] = {
    "grpc.max_send_message_length": ("max_send_bytes", _message_limit),
    "grpc.max_receive_message_length": ("max_receive_bytes", _message_limit),
    "grpc.service_config": ("service_config", _service_config_option),
    "grpc.keepalive_time_ms": ("keepalive_time", _milliseconds),
    "grpc.keepalive_timeout_ms": ("keepalive_timeout", _milliseconds),
    "grpc.primary_user_agent": ("primary_user_agent", _user_agent),
}


def parse_options(options: Iterable[tuple[str, Any]] | None) -> ChannelOptions:
    """The channel options of grpc channel arguments (``[(name, value), ...]``).

    An option given twice takes its last value. Unknown options are left out
    with a debug log: code written for grpc passes many that have no meaning
    here.

    Raises:
        ValueError: an option's value is invalid; the message names the option.
    """
    values: dict[str, Any] = {}
    for name, value in options or ():
        known = _OPTIONS.get(name)
        if known is None:
            logger.debug("channel option %s ignored (not supported)", name)
            continue
        attribute, parse = known
        values[attribute] = parse(value, name)
    return ChannelOptions(**values)
