"""Header lists in and out of the core module.

In: a mapping or an iterable of (name, value) pairs, names and values as str
or bytes. Out: a list of (str, str) pairs in wire order, so ``dict(headers)``
works and repeated fields survive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

__all__ = ["HeaderList", "HeadersIn", "decode_headers", "encode_headers", "response_problem"]

_Text: TypeAlias = str | bytes
HeadersIn: TypeAlias = Mapping[str, _Text] | Mapping[bytes, _Text] | Iterable[tuple[_Text, _Text]]
HeaderList: TypeAlias = list[tuple[str, str]]


def _to_bytes(text: _Text) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def encode_headers(
    headers: HeadersIn,
    defaults: Sequence[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes]]:
    """Turn caller headers into the byte pairs h2 sends.

    Names are lower-cased (RFC 9113 section 8.2.1) and pseudo-header fields
    are moved in front of regular ones (section 8.3), keeping the caller's
    order otherwise. Each ``defaults`` pair is added, in front, when the caller
    did not give that name (used for ``:scheme`` and ``:authority``).
    """
    items = headers.items() if isinstance(headers, Mapping) else headers
    pseudo: list[tuple[bytes, bytes]] = []
    regular: list[tuple[bytes, bytes]] = []
    for name, value in items:
        key = _to_bytes(name).lower()
        (pseudo if key[:1] == b":" else regular).append((key, _to_bytes(value)))
    if defaults:
        given = {name for name, _ in pseudo}
        pseudo[:0] = [pair for pair in defaults if pair[0] not in given]
    return pseudo + regular if regular else pseudo


def _decode_value(value: bytes) -> str:
    # UTF-8 first (ASCII is the common case); field values are octets
    # (RFC 9110 section 5.5), so fall back to Latin-1, which never fails.
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def decode_headers(headers: Iterable[tuple[bytes, bytes]]) -> HeaderList:
    """Turn a received header block into (str, str) pairs in wire order."""
    return [(name.decode("latin-1"), _decode_value(value)) for name, value in headers]


# Connection-specific fields are forbidden in HTTP/2 (RFC 9113 section 8.2.2).
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te")
)
_FORBIDDEN_IN_VALUES = (b"\x00", b"\r", b"\n")


def _field_problem(name: bytes, value: bytes) -> str | None:
    # RFC 9113 section 8.2.1: lower-case names, no NUL, CR or LF, and no
    # leading or trailing whitespace in values.
    if not name or name != name.lower() or b" " in name or b":" in name:
        return f"invalid field name {name!r}"
    if name in _CONNECTION_SPECIFIC:
        return f"connection-specific field {name!r}"
    if value != value.strip(b" \t") or any(c in value for c in _FORBIDDEN_IN_VALUES):
        return f"invalid value of {name!r}"
    return None


def response_problem(
    block: Sequence[tuple[bytes, bytes]], *, trailers: bool, strict: bool
) -> str | None:
    """Why a received response header block is malformed, or None if it is not.

    The pseudo-header rules of RFC 9113 section 8.3 are always checked (a
    response must carry exactly one ``:status``, a three-digit code in
    100..599 per RFC 9110 section 15, before any regular field; trailers carry
    none). With ``strict``, every regular field is checked as well (section
    8.2). h2's own inbound validation is off on the client, so this is the one
    check of what arrives.

    Args:
        block: The decoded header block as received (bytes pairs).
        trailers: Whether the block is a trailer section.
        strict: Also check regular field names and values.
    """
    status: bytes | None = None
    regular = False
    for name, value in block:
        if name[:1] == b":":
            if trailers:
                return f"pseudo-header field {name.decode('latin-1')} in trailers"
            if regular:
                return f"pseudo-header field {name.decode('latin-1')} after regular fields"
            if name != b":status":
                return f"pseudo-header field {name.decode('latin-1')} not allowed in a response"
            if status is not None:
                return "more than one :status"
            status = value
        else:
            regular = True
            if strict:
                problem = _field_problem(name, value)
                if problem is not None:
                    return problem
    if trailers:
        return None
    if status is None:
        return "no :status"
    if len(status) != 3 or not status.isdigit() or not 100 <= int(status) <= 599:
        return f"invalid :status {status.decode('latin-1')!r}"
    return None
