"""Requests on their way out: built from the caller's arguments and validated once, here.

The method, the header fields (RFC 9113 section 8.2) and the types of every
argument are checked when the request is built, and the path is joined and
percent-encoded (:mod:`.urls`), so the connections below need not check them
again: a bad request is the caller's mistake (``TypeError``, or
:class:`~h2pool.LocalProtocolError`, a ``ValueError``), raised before
anything is sent and before any connection is touched.
"""

from __future__ import annotations

import json as json_module
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from .._core.headers import METHOD, HeadersIn, encode_headers
from .._exceptions import H2PoolError, LocalProtocolError
from .._messages import Headers, Request
from .timeouts import Timeouts
from .urls import QueryParams, request_path

__all__ = [
    "CONNECTION",
    "Content",
    "Observer",
    "OutgoingRequest",
    "Rewindable",
    "Upload",
    "build_request",
    "checked_headers",
]

#: A request body: bytes, or an async iterable of bytes for a streamed upload.
Content = bytes | bytearray | memoryview | str | AsyncIterable[bytes]

#: Told of each step of sending a request, as the connection takes it:
#: ``(http_version, event, info)``, for example ``("HTTP/2",
#: "send_request_headers.started", {"stream_id": 1})``, then ``".complete"``
#: ``{"return_value": None}`` or ``".failed"`` ``{"exception": exc}``; the
#: events and their info are httpcore's (its ``trace`` extension). Awaited
#: where the step happens: the request waits for it. The steps of opening a
#: connection that the request's routing asked for come with
#: :data:`CONNECTION` in place of the HTTP version (``connect_tcp``,
#: ``start_tls``), awaited by the connection attempt, which goes on when the
#: observer raises.
Observer = Callable[[str, str, dict[str, Any]], Awaitable[None]]

#: The first argument an :data:`Observer` gets for the steps of opening a connection.
CONNECTION = "connection"

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
        path: The path as sent: the pool's base path joined, percent-encoded,
            with the query.
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
        avoid: The endpoints of its failed attempts (Envoy's previous
            hosts): a retry goes elsewhere when another endpoint can take it.
        sent_to: The endpoint of its latest attempt (the copies of a hedged
            request avoid those of the others in flight).
        observer: Told of the steps of sending it, on every attempt, or None.
        attempts: Attempts sent on a connection so far (hedged copies included).
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
    avoid: frozenset[str] = frozenset()
    sent_to: str | None = None
    observer: Observer | None = None
    attempts: int = 0

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
        TypeError: ``headers`` is not a mapping or pairs, or a name or value
            is not str or bytes.
    """
    if isinstance(headers, list):  # bytes pairs checked before, most often
        try:
            known = [_CHECKED.get(field) if type(field) is tuple else None for field in headers]
        except TypeError:  # unhashable: a wrong type, which encode_headers names
            known = [None]
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
    *,
    params: QueryParams | None = None,
    json: object = None,
    base_path: str = "/",
) -> OutgoingRequest:
    """Build and check a request, before anything is sent.

    Args:
        method: The method (any case: sent upper case).
        path: The path, joined to ``base_path`` (see :func:`.urls.request_path`).
        extra_headers: The pool's own fields, already checked; a field of
            ``headers`` with the same name replaces them.
        headers: The caller's fields.
        content: The body.
        timeouts: The request's timeouts.
        params: Query parameters (see :func:`.urls.encode_params`).
        json: A body to send as JSON (None: none).
        base_path: The pool target's path, ending in ``/``.

    Raises:
        TypeError: An argument of a wrong type; the message names it.
        ValueError: ``path`` is a URL, or ``json`` cannot be sent as JSON.
        LocalProtocolError: An invalid method or header field (also a ValueError).
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, not {type(method).__name__}")
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {type(path).__name__}")
    method = method.upper()
    wire_method = _METHODS.get(method) or _checked_method(method)
    if path == "*" and method == "OPTIONS" and params is None:
        target = path  # RFC 9113 section 8.3.1: the server as a whole
    else:
        target = request_path(base_path, path, params)
    fields = extra_headers
    if headers is not None:
        given = checked_headers(headers)
        if fields:  # as httpx: the request's fields replace the pool's of the same name
            names = {name for name, _ in given}
            fields = [field for field in fields if field[0] not in names]
        fields = fields + given
    body: bytes | None = None
    upload: Upload | None = None
    if json is not None:
        if content is not None:
            raise TypeError("give content or json, not both")
        body = _json_body(json)
        if not any(name == b"content-type" for name, _ in fields):
            fields = [*fields, (b"content-type", b"application/json")]
    elif isinstance(content, str):
        body = content.encode()
    elif isinstance(content, bytes | bytearray | memoryview):
        body = bytes(content)
    elif isinstance(content, AsyncIterable):
        upload = Upload(content)
    elif content is not None:
        raise TypeError(
            "content must be bytes, str or an async iterable of bytes, "
            f"not {type(content).__name__} (json= sends an object as JSON)"
        )
    if body is not None and not any(name == b"content-length" for name, _ in fields):
        fields = [*fields, (b"content-length", str(len(body)).encode())]
    wire_path = target.encode("ascii")  # encoded: ASCII only
    return OutgoingRequest(method, target, fields, body, upload, timeouts, wire_method, wire_path)


def _json_body(value: object) -> bytes:
    """``value`` as compact UTF-8 JSON, as httpx sends it (no NaN: JSON has none)."""
    try:
        text = json_module.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"json: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"json: {exc}") from exc
    return text.encode()


def _checked_method(method: str) -> bytes:
    wire = method.encode("ascii", "replace")  # non-ASCII becomes "?", not a token
    if not METHOD.fullmatch(wire):
        raise LocalProtocolError(f"invalid method {method!r}: it must be a token (RFC 9110 9.1)")
    return wire
