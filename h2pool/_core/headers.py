"""Header lists in and out of the core module.

In: a mapping or an iterable of (name, value) pairs, names and values as str
or bytes. Out: a list of (str, str) pairs in wire order, so ``dict(headers)``
works and repeated fields survive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

from hpack import NeverIndexedHeaderTuple

from .._exceptions import LocalProtocolError

__all__ = [
    "METHOD",
    "TOKEN",
    "CheckedResponses",
    "HeaderList",
    "HeadersIn",
    "decode_headers",
    "encode_headers",
    "request_problem",
    "response_problem",
]

_Text: TypeAlias = str | bytes
HeadersIn: TypeAlias = Mapping[str, _Text] | Mapping[bytes, _Text] | Iterable[tuple[_Text, _Text]]
HeaderList: TypeAlias = list[tuple[str, str]]

# RFC 9113 section 8.2.1: a field name is lower-case token characters (a
# pseudo-header's after its colon); a value has no NUL, CR or LF and no
# leading or trailing SP or HTAB. One regular expression each, run in C.
TOKEN = re.compile(rb"[a-z0-9!#$%&'*+\-.^_`|~]+")
# RFC 9110 section 9.1: a method is a token, case-sensitive.
METHOD = re.compile(rb"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
# Connection-specific fields are forbidden in HTTP/2 (RFC 9113 section 8.2.2).
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
# Kept out of HPACK's dynamic table (RFC 7541 section 7.1.3), as h2 and
# nghttp2 do: credentials, and cookies short enough to guess.
_NEVER_INDEXED = frozenset((b"authorization", b"proxy-authorization"))
_SPECIAL = _CONNECTION_SPECIFIC | _NEVER_INDEXED | {b"te", b"cookie"}


def _special(name: bytes, value: bytes, normalize: bool) -> tuple[bytes, bytes] | None:
    """The field to send for a name in ``_SPECIAL``, or None to drop it."""
    if name in _CONNECTION_SPECIFIC:
        if normalize:
            return None  # meaningless in HTTP/2: dropped, as h2's normalization does
        raise LocalProtocolError(f"connection-specific header field {name!r} (RFC 9113 8.2.2)")
    if name == b"te" and value.lower() != b"trailers":
        raise LocalProtocolError(f"te: {value!r} is not allowed in HTTP/2")
    if name in _NEVER_INDEXED or (name == b"cookie" and len(value) < 20):
        return NeverIndexedHeaderTuple(name, value)
    return name, value


def _checked_value(name: bytes, value: bytes, normalize: bool) -> bytes:
    """A value that failed the quick check: strip surrounding blanks, or refuse it."""
    if normalize:
        value = value.strip(b" \t")
    if _BAD_VALUE.search(value):
        raise LocalProtocolError(
            f"invalid value of header field {name!r}: NUL, CR or LF, or surrounding blanks"
        )
    return value


def encode_headers(
    headers: HeadersIn,
    defaults: Sequence[tuple[bytes, bytes]] = (),
    *,
    validate: bool = True,
    normalize: bool = True,
) -> list[tuple[bytes, bytes]]:
    """Turn caller headers into the byte pairs h2 sends, checked once, here.

    Names are lower-cased (RFC 9113 section 8.2.1) and pseudo-header fields
    are moved in front of regular ones (section 8.3), keeping the caller's
    order otherwise. Each ``defaults`` pair is added, in front, when the caller
    did not give that name (used for ``:scheme`` and ``:authority``).

    h2's own outbound validation and normalization are off (they cost as much
    as HPACK itself), so with ``validate`` this does what they did, in one
    pass: field names must be tokens; surrounding blanks are stripped from
    values and NUL, CR or LF refused; connection-specific fields are dropped
    and ``te`` must be ``trailers`` (section 8.2.2); credentials and short
    cookies are sent never-indexed (RFC 7541 section 7.1.3). Pseudo-header
    rules of a request or response are checked where the block is sent.
    Without ``normalize`` (the pool's choice, as httpx's), blanks around a
    value and connection-specific fields are refused instead of repaired.

    Raises:
        LocalProtocolError: A field is invalid (``never_processed``: nothing was sent).
    """
    pseudo: list[tuple[bytes, bytes]] = []
    regular: list[tuple[bytes, bytes]] = []
    name_ok, bad_value, special = TOKEN.fullmatch, _BAD_VALUE.search, _SPECIAL
    try:
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            key = (name if isinstance(name, bytes) else name.encode()).lower()
            data = value if isinstance(value, bytes) else value.encode()
            is_pseudo = key[:1] == b":"
            if validate:
                if name_ok(key, 1 if is_pseudo else 0) is None:
                    raise LocalProtocolError(f"invalid header field name {key!r}")
                if bad_value(data):
                    data = _checked_value(key, data, normalize)
                if key in special:
                    field = _special(key, data, normalize)
                    if field is not None:
                        regular.append(field)
                    continue
            (pseudo if is_pseudo else regular).append((key, data))
    except (AttributeError, TypeError, ValueError) as exc:
        # Looked into only on failure: the loop above stays as lean as it was.
        problem = None if isinstance(exc, LocalProtocolError) else _type_problem(headers)
        if problem is None:
            raise
        raise TypeError(problem) from None
    if defaults:
        given = {name for name, _ in pseudo}
        pseudo[:0] = [pair for pair in defaults if pair[0] not in given]
    return pseudo + regular if regular else pseudo


def _type_problem(headers: object) -> str | None:
    """What is of a wrong type in ``headers``, or None when every type is right."""
    if isinstance(headers, str | bytes) or not isinstance(headers, Iterable):
        return (
            "headers must be a mapping or an iterable of (name, value) pairs, "
            f"not {type(headers).__name__}"
        )
    items = headers.items() if isinstance(headers, Mapping) else headers
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            return f"headers: each item must be a (name, value) pair, not {item!r}"
        name, value = item
        if not isinstance(name, str | bytes):
            return f"header field name must be str or bytes, not {type(name).__name__}"
        if not isinstance(value, str | bytes):
            return (
                f"value of header field {name!r} must be str or bytes, not {type(value).__name__}"
            )
    return None


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


def _field_problem(name: bytes, value: bytes) -> str | None:
    if TOKEN.fullmatch(name) is None:
        return f"invalid field name {name!r}"
    if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
        return f"connection-specific field {name!r}"
    if _BAD_VALUE.search(value):
        return f"invalid value of {name!r}"
    return None


def response_problem(
    block: Sequence[tuple[bytes, bytes]], *, trailers: bool, strict: bool
) -> str | None:
    """Why a response header block or a trailer section is malformed, or None.

    Used for blocks received by a client and for blocks a server sends. The
    pseudo-header rules of RFC 9113 section 8.3 are always checked (a
    response must carry exactly one ``:status``, a three-digit code in
    100..599 per RFC 9110 section 15, before any regular field; trailers carry
    none). With ``strict``, every regular field is checked as well (section
    8.2). h2's own inbound validation is off on the client, so this is the one
    check of what arrives.

    Args:
        block: The header block (bytes pairs).
        trailers: Whether the block is a trailer section.
        strict: Also check regular field names and values.
    """
    status: bytes | None = None
    regular = False
    name_ok, bad_value, special = TOKEN.fullmatch, _BAD_VALUE.search, _SPECIAL
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
            if strict and (name_ok(name) is None or bad_value(value) or name in special):
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


# Distinct response blocks remembered per connection; past this it starts over.
_RESPONSES_KEPT = 64


class CheckedResponses:
    """Response header blocks checked and decoded once per connection, by content.

    A server answers with the same header fields again and again. Whether a
    block is malformed (:func:`response_problem`) and its str form
    (:func:`decode_headers`) depend only on its fields, so both are kept for
    the blocks seen last and looked up by the fields themselves.

    Args:
        strict: Check regular fields too (``response_problem``'s ``strict``).
    """

    __slots__ = ("_seen", "_strict")

    def __init__(self, *, strict: bool) -> None:
        self._strict = strict
        self._seen: dict[tuple[tuple[bytes, bytes], ...], tuple[str | None, HeaderList]] = {}

    def check(self, block: Sequence[tuple[bytes, bytes]]) -> tuple[str | None, HeaderList]:
        """Why the final response block is malformed (or None), and its fields as str.

        The str fields are a new list each time (the caller may keep or change
        it); empty when the block is malformed.
        """
        key = tuple(block)
        seen = self._seen.get(key)
        if seen is None:
            problem = response_problem(key, trailers=False, strict=self._strict)
            seen = (problem, [] if problem is not None else decode_headers(key))
            if len(self._seen) >= _RESPONSES_KEPT:
                self._seen.clear()
            self._seen[key] = seen
        return seen[0], list(seen[1])


# RFC 3986 section 3.3: a path and query are visible ASCII (no space or control).
_PATH = re.compile(rb"[\x21-\x7e]+")
# Request pseudo-header fields, each with a bit to see repeats without allocating.
_REQUEST_PSEUDO = {b":method": 1, b":scheme": 2, b":authority": 4, b":path": 8, b":protocol": 16}


def request_problem(block: Sequence[tuple[bytes, bytes]], *, received: bool = False) -> str | None:
    """Why a request header block is malformed, or None.

    RFC 9113 section 8.3.1: only request pseudo-header fields, each at most
    once and before any regular field, with ``:method`` a token (RFC 9110
    section 9.1) and, except for CONNECT, a non-empty ``:path`` of visible
    ASCII (no space or control: RFC 3986 section 3.3).

    Args:
        block: The header block, as bytes pairs.
        received: A server checking what a client sent (h2's own checks are
            off: it makes any malformed request a connection error, RFC 9113
            section 8.1.1 a stream error): the regular fields too (section
            8.2), ``:scheme``, and ``host`` against ``:authority``. Blocks
            sent come from :func:`encode_headers`, their regular fields
            checked already.
    """
    method = path = scheme = authority = host = None
    seen = 0
    regular = False
    name_ok, bad_value, special = TOKEN.fullmatch, _BAD_VALUE.search, _SPECIAL
    for name, value in block:
        if name[:1] == b":":
            bit = _REQUEST_PSEUDO.get(name)
            if bit is None:
                return f"pseudo-header field {name.decode('latin-1')} not allowed in a request"
            if regular:
                return f"pseudo-header field {name.decode('latin-1')} after regular fields"
            if seen & bit:
                return f"more than one {name.decode('latin-1')}"
            seen |= bit
            if bit == 1:
                method = value
            elif bit == 2:
                scheme = value
            elif bit == 4:
                authority = value
            elif bit == 8:
                path = value
        elif not received:
            break
        else:
            regular = True
            if name_ok(name) is None or bad_value(value) or name in special:
                problem = _field_problem(name, value)
                if problem is not None:
                    return problem
            if name == b"host":
                if host is not None:
                    return "more than one host"
                host = value
    if method is None:
        return "no :method"
    if METHOD.fullmatch(method) is None:
        return f"invalid :method {method.decode('latin-1')!r}: not a token"
    connect = method == b"CONNECT" and not seen & 16  # RFC 8441's has :scheme and :path
    if seen & 16 and method != b"CONNECT":
        return ":protocol in a request that is not CONNECT"
    if connect:
        if received and (scheme is not None or path is not None):
            return ":scheme or :path in a CONNECT request"
    elif not path:
        return "no :path"
    elif _PATH.fullmatch(path) is None:
        return f"invalid :path {path.decode('latin-1')!r}: space, control or non-ASCII"
    elif received and scheme is None:
        return "no :scheme"
    if received:
        if authority is None and host is None:
            return "no :authority or host"
        if authority is not None and host is not None and authority != host:
            return "host and :authority differ"
    return None
