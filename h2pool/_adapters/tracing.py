"""The ``trace`` request extension of httpx and httpcore, with httpcore's events.

httpcore calls ``extensions["trace"](event_name, info)`` around each step of
a request (``http2.send_request_headers.started``, ``...complete``,
``...failed``). Here, in httpcore's order and with its arguments:

- ``{p}.send_request_headers`` and ``{p}.send_request_body``: told by the
  pool's connection as it takes them (see :data:`h2pool._pool.outgoing.Observer`),
  for every attempt, ``{"request": request, "stream_id": n}`` over HTTP/2;
- ``{p}.receive_response_headers.started`` once the first attempt's body is
  sent (or at the end if nothing was), then ``.complete``
  ``{"return_value": (status, headers)}`` or ``.failed`` ``{"exception": error}``;
- ``{p}.receive_response_body.started`` / ``.complete`` / ``.failed``
  (once for the whole body, not per chunk);
- ``{p}.response_closed.started`` / ``.complete``;

each ``.started`` with httpcore's arguments: over HTTP/2 the request and the
latest attempt's ``stream_id`` (only the ``stream_id`` for
``response_closed``), over HTTP/1.1 the request (nothing for
``response_closed``). httpcore's ``http2.receive_remote_settings`` has no
counterpart: the pool has the server's SETTINGS before it sends a request.

where ``{p}`` is ``http2`` or ``http11``: the protocol of the connection
that carried the request, or, before one did, the one its origin answered
with last (``http2`` at first).

Before those, the steps of opening a connection, for the request whose
routing started the connection attempt (told by the attempt, see
:mod:`h2pool._pool.connect`), with httpcore's arguments:
``connection.connect_tcp`` (``.started`` ``{"host", "port", "local_address",
"timeout", "socket_options"}``, ``.complete`` ``{"return_value": transport}``),
``connection.start_tls`` over https (``{"ssl_context", "server_hostname",
"timeout"}``, then the TLS transport), and ``http2.send_connection_init``
(``{"request": request}``) when the connection speaks HTTP/2; ``.failed``
``{"exception": error}`` for the step that failed. A request that reuses a
connection sees none of them, as with httpcore; nor does any request for
connections the pool opens ahead of requests (``Pool.start()``,
``min_connections``). The connection is shared: it may end up carrying
another request than the one told, and when the callback raises on one of
these steps the error is logged (logger ``h2pool.pool``) and the connection
attempt goes on.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._pool.outgoing import CONNECTION, Observer

__all__ = ["Tracer", "trace_prefix"]

TraceCallback = Callable[[str, dict[str, Any]], Any]


def trace_prefix(http_version: str) -> str:
    """httpcore's prefix of the events of a connection speaking ``http_version``.

    ``connection`` for the steps of opening one (:data:`~h2pool._pool.outgoing.CONNECTION`).
    """
    if http_version == CONNECTION:
        return CONNECTION
    return "http11" if http_version.startswith("HTTP/1") else "http2"


class _Phase(enum.Enum):
    """Where a traced request is, for ``receive_response_headers.started``."""

    SENDING = "sending"  #: handed to the pool; its body not sent yet
    WAITING = "waiting"  #: ``receive_response_headers.started`` told
    ANSWERED = "answered"  #: ``receive_response_headers`` over


class Tracer:
    """Calls a request's ``trace`` callback (sync or async), or does nothing without one.

    Args:
        callback: ``extensions["trace"]`` of the request, or None.
        request: The caller's request object, passed as ``info["request"]``.
        prefix: ``http2`` or ``http11`` until a connection or a response says which.
    """

    def __init__(self, callback: TraceCallback | None, request: Any, prefix: str) -> None:
        self._callback = callback
        self._request = request
        self.prefix = prefix
        self._phase = _Phase.SENDING
        self._stream_id: int | None = None  # the latest attempt's, over HTTP/2
        #: What the pool tells of the steps of sending the request, or None untraced.
        self.observer: Observer | None = None if callback is None else self._observe

    async def _call(self, event: str, info: dict[str, Any]) -> None:
        assert self._callback is not None
        result = self._callback(event, info)
        if inspect.isawaitable(result):
            await result

    async def _emit(self, name: str, info: dict[str, Any]) -> None:
        if self._callback is not None:
            await self._call(f"{self.prefix}.{name}", info)

    def _arguments(self, step: str) -> dict[str, Any]:
        """httpcore's arguments of ``step.started`` under the current prefix."""
        closed = step == "response_closed"
        info: dict[str, Any] = {} if closed else {"request": self._request}
        if self.prefix == "http2" and self._stream_id is not None:
            info["stream_id"] = self._stream_id
        return info

    async def _observe(self, http_version: str, step: str, info: dict[str, Any]) -> None:
        """The pool's observer: a step of an attempt, under its connection's prefix."""
        prefix = trace_prefix(http_version)
        if step.endswith(".started") and prefix != CONNECTION:  # httpcore's arguments
            info = {"request": self._request, **info}
            self._stream_id = info.get("stream_id", self._stream_id)
        await self._call(f"{prefix}.{step}", info)
        if step.startswith("send_request_body.") and not step.endswith(".started"):
            self.prefix = prefix
            await self._waiting()

    async def _waiting(self) -> None:
        """``receive_response_headers.started``, once, as httpcore: after the body is sent."""
        if self._phase is _Phase.SENDING:
            self._phase = _Phase.WAITING
            await self._emit(
                "receive_response_headers.started", self._arguments("receive_response_headers")
            )

    @contextlib.asynccontextmanager
    async def response_headers(self) -> AsyncIterator[dict[str, Any]]:
        """``receive_response_headers``, around handing the request to the pool.

        ``.started`` comes once the first attempt sent its body (or at the
        end, if no attempt sent anything); a retry's sending steps may follow
        it. Yields the dict whose ``"return_value"`` goes with ``.complete``.
        """
        if self._callback is None:
            yield {}
            return
        outcome: dict[str, Any] = {"return_value": None}
        try:
            yield outcome
        except Exception as exc:
            await self._answered("failed", {"exception": exc})
            raise
        await self._answered("complete", outcome)

    async def _answered(self, how: str, info: dict[str, Any]) -> None:
        await self._waiting()
        self._phase = _Phase.ANSWERED
        await self._emit(f"receive_response_headers.{how}", info)

    @contextlib.asynccontextmanager
    async def span(self, name: str) -> AsyncIterator[dict[str, Any]]:
        """``name.started`` now, then ``name.complete`` or ``name.failed``.

        Yields a dict whose ``"return_value"`` key, if the body sets it, goes
        with ``.complete``.
        """
        if self._callback is None:
            yield {}
            return
        await self._emit(f"{name}.started", self._arguments(name))
        outcome: dict[str, Any] = {"return_value": None}
        try:
            yield outcome
        except Exception as exc:
            await self._emit(f"{name}.failed", {"exception": exc})
            raise
        await self._emit(f"{name}.complete", outcome)
