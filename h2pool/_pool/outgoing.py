"""Requests on their way out: built from the caller's arguments and validated once, here.

Header fields are checked against RFC 9113 section 8.2 when the request is
built, so the connections below need not check them again: a bad field is
the caller's mistake (:class:`~h2pool.LocalProtocolError`), raised before
anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

from .._core.headers import TOKEN, HeadersIn, encode_headers
from .._exceptions import H2PoolError, LocalProtocolError
from .._messages import Headers, Request
from .timeouts import Timeouts

__all__ = [
    "Content",
    "OutgoingRequest",
    "Rewindable",
    "Upload",
    "build_request",
    "checked_headers",
]

#: A request body: bytes, or an async iterable of bytes for a streamed upload.
Content = bytes | bytearray | memoryview | str | AsyncIterable[bytes]

# RFC 3986 section 3.3 / RFC 9112 section 3.2: no whitespace or controls in a target.
_BAD_PATH = re.compile(rb"[\x00-\x20\x7f]")
_METHODS = {m: m.encode() for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


@runtime_checkable
class Rewindable(Protocol):
    """A streamed body that keeps what it gave, so that it can be sent again.

    The gRPC client's message streams are: a call that a server never
    processed is sent again from its first message (gRFC A6's replay buffer).
    Iterating it again after :meth:`rewind` starts from the first chunk.
    """

    @property
    def rewindable(self) -> bool:
        """Whether every chunk given so far is still kept."""
        ...

    def rewind(self) -> None:
        """Start again from the first chunk at the next iteration."""
        ...


class Upload:
    """A streamed request body: replayable if it was never started, or if it can rewind."""

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._source = source
        self.started = False

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again from its start."""
        if not self.started:
            return True
        source = self._source
        return isinstance(source, Rewindable) and source.rewindable

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.started and isinstance(self._source, Rewindable):
            self._source.rewind()
        async for chunk in self._source:
            self.started = True
            yield chunk


@dataclass(slots=True)
class OutgoingRequest:
    """A request as the pool hands it to a channel.

    Attributes:
        method: The method, upper case.
        path: The request target.
        headers: Regular header fields (no pseudo-headers), as validated bytes.
        body: The whole body, or None.
        upload: A streamed body, or None.
        timeouts: Its timeouts.
        wire_method: ``method`` as sent.
        wire_path: ``path`` as sent.
        wait_for_ready: Whether to wait for an endpoint when every one is
            failing; None: the pool's ``wait_for_ready``.
        last_error: The latest failure of an attempt, for messages.
        response_headers: The response headers of the latest attempt that
            failed after they arrived (for the error that ends the request).
        avoid: The endpoint of the latest failed attempt: a retry goes
            elsewhere when another endpoint can take it.
    """

    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes | None
    upload: Upload | None
    timeouts: Timeouts
    wire_method: bytes
    wire_path: bytes
    wait_for_ready: bool | None = None
    last_error: H2PoolError | None = None
    response_headers: list[tuple[str, str]] | None = None
    avoid: str | None = None

    @property
    def target(self) -> str:
        """``"METHOD path"``, for messages."""
        return f"{self.method} {self.path}"

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again."""
        return self.upload is None or self.upload.replayable

    def described(self, origin: str) -> Request:
        """The request for people (errors, responses): ``origin`` is ``scheme://authority``."""
        fields = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.headers]
        return Request(self.method, origin + self.path, Headers(fields))


# Fields given as bytes pairs and checked before, each as sent (a field's
# check depends on it alone): callers such as the gRPC client send the same
# fields on every request. Small fields only; past the limit it starts over.
_CHECKED: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
_CHECKED_KEPT = 256
_CHECKED_FIELD_BYTES = 256


def checked_headers(headers: HeadersIn) -> list[tuple[bytes, bytes]]:
    """The caller's header fields as lower-case bytes, checked (RFC 9113 section 8.2).

    Raises:
        LocalProtocolError: A field HTTP/2 forbids, or a malformed one.
    """
    if isinstance(headers, list):  # bytes pairs checked before, most often
        known = [_CHECKED.get(field) if type(field) is tuple else None for field in headers]
        if None not in known:
            return cast("list[tuple[bytes, bytes]]", known)
    # Refused, not repaired as the core does for its own callers: a request
    # the caller did not write must not be sent (httpx refuses them too).
    fields = encode_headers(headers, normalize=False)
    for name, _ in fields:
        if name[:1] == b":":
            raise LocalProtocolError(f"pseudo-header field {name!r}: the pool sets those")
    if isinstance(headers, list):  # without normalizing, one field out for each in
        _remember(headers, fields)
    return fields


def _remember(given: list[tuple[bytes, bytes]], fields: list[tuple[bytes, bytes]]) -> None:
    """Keep the checked form of small fields given as bytes pairs (one field each)."""
    for field, checked in zip(given, fields, strict=True):
        name, value = field
        if (
            type(field) is tuple
            and type(name) is bytes
            and type(value) is bytes
            and len(name) + len(value) <= _CHECKED_FIELD_BYTES
        ):
            if len(_CHECKED) >= _CHECKED_KEPT:
                _CHECKED.clear()
            _CHECKED[field] = checked


def build_request(
    method: str,
    path: str,
    extra_headers: list[tuple[bytes, bytes]],
    headers: HeadersIn | None,
    content: Content | None,
    timeouts: Timeouts,
) -> OutgoingRequest:
    """Build and check a request (``extra_headers``: the pool's own, already checked).

    Raises:
        ValueError: The path does not start with ``/``.
        LocalProtocolError: A header field HTTP/2 forbids.
    """
    method = method.upper()
    if not path.startswith("/") and not (path == "*" and method == "OPTIONS"):
        raise ValueError(f"path must start with '/': {path!r}")
    wire_method = _METHODS.get(method) or _checked_method(method)
    try:
        wire_path = path.encode("ascii")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            f"path must be ASCII (percent-encode the rest): {path!r}"
        ) from None
    if _BAD_PATH.search(wire_path):
        raise LocalProtocolError(f"invalid character in path {path!r}")
    fields = extra_headers + checked_headers(headers) if headers is not None else extra_headers
    body: bytes | None = None
    upload: Upload | None = None
    if isinstance(content, str):
        content = content.encode()
    if isinstance(content, bytes | bytearray | memoryview):
        body = bytes(content)
        if not any(name == b"content-length" for name, _ in fields):
            fields = [*fields, (b"content-length", str(len(body)).encode())]
    elif content is not None:
        upload = Upload(content)
    return OutgoingRequest(method, path, fields, body, upload, timeouts, wire_method, wire_path)


def _checked_method(method: str) -> bytes:
    wire = method.encode("ascii", "replace")
    if not TOKEN.fullmatch(wire.lower()):
        raise LocalProtocolError(f"invalid method {method!r}")
    return wire
