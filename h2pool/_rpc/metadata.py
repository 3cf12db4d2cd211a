"""gRPC metadata: the ``Metadata`` collection, and metadata, timeouts and messages as headers.

The wire rules are gRPC's ``doc/PROTOCOL-HTTP2.md``: custom metadata is any
header not reserved by gRPC or HTTP/2; ``-bin`` values are base64 (sent
without padding, received with or without); ``grpc-timeout`` is at most eight
digits and a unit; ``grpc-message`` is percent-encoded UTF-8.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Sequence, ValuesView
from typing import Self, TypeAlias
from urllib.parse import quote, unquote

from .._exceptions import LocalProtocolError

__all__ = [
    "Metadata",
    "MetadataIn",
    "MetadataValue",
    "decode_metadata",
    "encode_metadata",
    "encode_timeout",
    "parse_timeout",
    "quote_message",
    "unquote_message",
]

MetadataValue: TypeAlias = str | bytes


class Metadata:
    """Metadata of a call, a multimap that behaves like ``grpc.aio.Metadata``.

    Keys may repeat; values keep their order per key. Values are ``str``, or
    ``bytes`` for keys ending in ``-bin``. Iterating yields ``(key, value)``
    pairs; ``metadata[key]`` is the first value of ``key``.
    """

    __slots__ = ("_values",)

    def __init__(self, *pairs: tuple[str, MetadataValue]) -> None:
        self._values: dict[str, list[MetadataValue]] = {}
        for key, value in pairs:
            self.add(key, value)

    @classmethod
    def from_tuple(cls, pairs: Iterable[tuple[str, MetadataValue]] | None) -> Self:
        """Metadata from ``(key, value)`` pairs (grpc.aio's name; any iterable is taken)."""
        return cls(*pairs) if pairs else cls()

    def add(self, key: str, value: MetadataValue) -> None:
        """Add ``value`` after the values ``key`` already has."""
        values = self._values.get(key)
        if values is None:
            self._values[key] = [value]
        else:
            values.append(value)

    def __len__(self) -> int:
        """The number of pairs, every value of a repeated key counted."""
        return sum(map(len, self._values.values()))

    def __bool__(self) -> bool:
        return bool(self._values)

    def __getitem__(self, key: str) -> MetadataValue:
        """The first value of ``key``.

        Raises:
            KeyError: ``key`` has no value.
        """
        values = self._values.get(key)
        if not values:
            raise KeyError(repr(key))
        return values[0]

    def __setitem__(self, key: str, value: MetadataValue) -> None:
        """Replace the first value of ``key`` (its other values stay, as in grpc.aio)."""
        values = self._values.get(key)
        if values:
            values[0] = value
        else:
            self._values[key] = [value]

    def __delitem__(self, key: str) -> None:
        """Delete the first value of ``key`` (as grpc.aio).

        Raises:
            KeyError: ``key`` has no value.
        """
        values = self._values.get(key)
        if not values:
            raise KeyError(repr(key))
        del values[0]
        if not values:
            del self._values[key]

    def delete_all(self, key: str) -> None:
        """Delete every value of ``key``.

        Raises:
            KeyError: ``key`` has no value.
        """
        del self._values[key]

    def get(self, key: str, default: MetadataValue | None = None) -> MetadataValue | None:
        """The first value of ``key``, or ``default``."""
        values = self._values.get(key)
        return values[0] if values else default

    def get_all(self, key: str) -> list[MetadataValue]:
        """Every value of ``key``, in order (a new list; empty when none)."""
        return list(self._values.get(key, ()))

    def set_all(self, key: str, values: list[MetadataValue]) -> None:
        """Make ``values`` the values of ``key``."""
        self._values[key] = list(values)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._values

    def __iter__(self) -> Iterator[tuple[str, MetadataValue]]:
        for key, values in self._values.items():
            for value in values:
                yield key, value

    def keys(self) -> KeysView[str]:
        """The keys, each once, in the order they were first added."""
        return self._values.keys()

    def values(self) -> ValuesView[list[MetadataValue]]:
        """The list of values of each key (as grpc.aio)."""
        return self._values.values()

    def items(self) -> ItemsView[str, list[MetadataValue]]:
        """``(key, list of values)`` for each key (as grpc.aio)."""
        return self._values.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Metadata):
            return self._values == other._values
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as grpc.aio's

    def __add__(self, other: object) -> Metadata:
        if isinstance(other, Metadata | tuple):
            return Metadata(*self, *other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Metadata({tuple(self)!r})"


MetadataIn: TypeAlias = Metadata | Sequence[tuple[str, MetadataValue]]
"""Metadata as a caller may give it: a :class:`Metadata` or a sequence of pairs."""

# grpc core's rule for metadata keys (grpc_header_key_is_legal): 0-9 a-z _ - .
_KEY_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz_-."
# Reserved for the protocol (PROTOCOL-HTTP2.md) or forbidden by HTTP/2 (RFC 9113
# section 8.2.2); any key starting with ":" or "grpc-" is reserved too.
_RESERVED_KEYS = frozenset(
    {
        "content-type",
        "te",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    }
)


def _key_problem(key: str) -> str | None:
    """Why ``key`` may not be sent as metadata, or None."""
    if not key:
        return "metadata key is empty"
    if key.strip(_KEY_CHARS):
        if key.lower().strip(_KEY_CHARS):
            return f"metadata key {key!r} has characters outside 0-9 a-z _ - ."
        return f"metadata key {key!r} has uppercase letters: gRPC keys are lowercase"
    if key.startswith("grpc-") or key in _RESERVED_KEYS:
        return f"metadata key {key!r} is reserved for the protocol"
    if key == "user-agent":
        return "metadata key 'user-agent' is reserved: set the option grpc.primary_user_agent"
    return None


# Keys already checked: a call's keys are nearly always ones seen before.
_valid_keys: set[str] = set()
_VALID_KEYS_KEPT = 1024


def _check_key(key: object) -> None:
    """Check a key not seen before, and remember it when valid."""
    if not isinstance(key, str):
        raise TypeError(f"metadata key {key!r} must be str, not {type(key).__name__}")
    problem = _key_problem(key)
    if problem is not None:
        raise LocalProtocolError(problem)
    if len(_valid_keys) >= _VALID_KEYS_KEPT:
        _valid_keys.clear()
    _valid_keys.add(key)


def _encode_value(key: str, value: object) -> bytes:
    """The header value of one pair; the key is valid."""
    if key.endswith("-bin"):
        if isinstance(value, str):
            value = value.encode()
        elif not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"metadata {key!r}: a -bin value must be bytes, not {type(value)}")
        # Unpadded base64, as PROTOCOL-HTTP2.md says implementations should emit.
        return binascii.b2a_base64(value, newline=False).rstrip(b"=")
    if not isinstance(value, str):
        raise TypeError(f"metadata {key!r}: the value must be str, not {type(value).__name__}")
    # Printable ASCII (0x20-0x7E; isprintable() keeps space, the only such blank).
    if not (value.isascii() and value.isprintable()):
        raise LocalProtocolError(
            f"metadata {key!r}: the value must be printable ASCII (use a -bin key for bytes)"
        )
    if value[:1] == " " or value[-1:] == " ":
        raise LocalProtocolError(f"metadata {key!r}: the value has leading or trailing spaces")
    return value.encode("ascii")


def encode_metadata(metadata: MetadataIn | None) -> list[tuple[bytes, bytes]]:
    """The header fields of a request's metadata, checked before anything is sent.

    Raises:
        LocalProtocolError: a key is invalid or reserved, or a value is not valid
            for its key; the message names the key.
        TypeError: a value has the wrong type for its key (bytes for ``-bin``,
            else str).
    """
    if not metadata:
        return []
    fields = []
    for key, value in metadata:
        if key not in _valid_keys:
            _check_key(key)
        fields.append((key.encode("ascii"), _encode_value(key, value)))
    return fields


# What grpc core takes out of received headers and trailers before the
# application sees them: pseudo-headers (checked apart), the protocol's own
# fields, and HTTP transport fields. grpc-status-details-bin is kept (rich
# error details read it from the trailing metadata).
_NOT_METADATA = frozenset(
    {
        "content-type",
        "grpc-status",
        "grpc-message",
        "grpc-encoding",
        "grpc-accept-encoding",
        "te",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    }
)


def _decode_binary(value: str) -> bytes:
    """A received ``-bin`` value: base64 with or without padding, else its raw bytes (UTF-8)."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
    except binascii.Error:
        return raw


def decode_metadata(fields: Sequence[tuple[str, str]]) -> Metadata:
    """The metadata of response headers or trailers (lower-case names, as the pool gives them)."""
    metadata = Metadata()
    values = metadata._values
    for name, value in fields:
        if name in _NOT_METADATA or name[:1] == ":":
            continue
        decoded: MetadataValue = _decode_binary(value) if name.endswith("-bin") else value
        known = values.get(name)
        if known is None:
            values[name] = [decoded]
        else:
            known.append(decoded)
    return metadata


# grpc-timeout units (PROTOCOL-HTTP2.md), finest first, in nanoseconds.
_TIMEOUT_UNITS = (
    (b"n", 1),
    (b"u", 1_000),
    (b"m", 1_000_000),
    (b"S", 1_000_000_000),
    (b"M", 60_000_000_000),
    (b"H", 3_600_000_000_000),
)
_TIMEOUT_UNIT_SECONDS = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "S": 1.0, "M": 60.0, "H": 3600.0}
_TIMEOUT_MAX_COUNT = 99_999_999  # "TimeoutValue: at most 8 digits"
_TIMEOUT_MAX = b"99999999H"


def encode_timeout(seconds: float) -> bytes:
    """The ``grpc-timeout`` value for ``seconds``: eight digits at most, in the finest unit.

    Rounded up, so the server is never told less time than remains (to a
    float's precision); no time
    left (or less) is ``1n``, and more than eight digits of hours is capped.

    Raises:
        ValueError: ``seconds`` is NaN.
    """
    if seconds <= 0:
        if seconds != seconds:  # NaN compares false both ways
            raise ValueError("grpc-timeout of NaN seconds")
        return b"1n"
    if seconds >= 3600 * _TIMEOUT_MAX_COUNT:
        return _TIMEOUT_MAX
    # Whole nanoseconds rounded up. The product is the float nearest the exact
    # one (within a part in 2**53): 0.1 s is 100000u, not 100001u for the
    # 5.5e-18 s that the float 0.1 holds above a tenth.
    nanoseconds = math.ceil(seconds * 1e9)
    for unit, size in _TIMEOUT_UNITS:
        count = -(-nanoseconds // size)
        if count <= _TIMEOUT_MAX_COUNT:
            return b"%d%s" % (count, unit)
    return _TIMEOUT_MAX  # pragma: no cover - the cap above keeps hours in range


def parse_timeout(value: str) -> float | None:
    """The seconds of a ``grpc-timeout`` value, or None when it is malformed."""
    digits = value[:-1]
    unit = _TIMEOUT_UNIT_SECONDS.get(value[-1:])
    if unit is None or not 0 < len(digits) <= 8 or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits) * unit


# grpc-message may hold any text; on the wire, UTF-8 percent-encoded outside
# 0x20-0x7E, and "%" itself (PROTOCOL-HTTP2.md "Status-Message").
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def quote_message(text: str) -> str:
    """``text`` percent-encoded for ``grpc-message``."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return quote(text, safe=_MESSAGE_SAFE, errors="surrogateescape")


def unquote_message(value: str) -> str:
    """A received ``grpc-message``, decoded leniently.

    A ``%`` not followed by two hex digits is kept as is and invalid UTF-8 is
    replaced: PROTOCOL-HTTP2.md says never to fail on, or drop, a bad message.
    """
    if "%" not in value:
        return value
    return unquote(value, errors="replace")
