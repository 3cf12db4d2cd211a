"""Header lists in and out of the core module.

In: a mapping or an iterable of (name, value) pairs, names and values as str
or bytes. Out: a list of (str, str) pairs in wire order, so ``dict(headers)``
works and repeated fields survive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

__all__ = ["HeaderList", "HeadersIn", "decode_headers", "encode_headers"]

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
