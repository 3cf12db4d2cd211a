"""The ``trace`` request extension of httpx and httpcore, at the points an adapter observes.

httpcore calls ``extensions["trace"](event_name, info)`` around each step of
a request (``http2.send_request_headers.started``, ``...complete``,
``...failed``). h2pool's pool connects, multiplexes and retries on its own,
so an adapter sees a request at three points: handed to the pool (sent,
retried if need be, until the response headers are in), its body read, and
its response closed. Those are traced, with httpcore's names and
arguments:

- ``{p}.receive_response_headers.started`` ``{"request": request}``, then
  ``.complete`` ``{"return_value": (status, headers)}`` or ``.failed``
  ``{"exception": error}``;
- ``{p}.receive_response_body.started`` / ``.complete`` / ``.failed``
  (once for the whole body, not per chunk);
- ``{p}.response_closed.started`` / ``.complete``;

where ``{p}`` is ``http2`` or ``http11``: the protocol of the response, or
for the first event the one its origin answered with last (``http2`` at
first). Connection events (``connection.connect_tcp``,
``connection.start_tls``, ``http2.send_connection_init``) are not traced:
connections are opened by the pool ahead of requests and shared by many.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

__all__ = ["Tracer", "trace_prefix"]

TraceCallback = Callable[[str, dict[str, Any]], Any]


def trace_prefix(http_version: str) -> str:
    """httpcore's prefix of the events of a connection speaking ``http_version``."""
    return "http11" if http_version.startswith("HTTP/1") else "http2"


class Tracer:
    """Calls a request's ``trace`` callback (sync or async), or does nothing without one.

    Args:
        callback: ``extensions["trace"]`` of the request, or None.
        request: The caller's request object, passed as ``info["request"]``.
        prefix: ``http2`` or ``http11`` until a response says which.
    """

    def __init__(self, callback: TraceCallback | None, request: Any, prefix: str) -> None:
        self._callback = callback
        self._request = request
        self.prefix = prefix

    async def _emit(self, name: str, info: dict[str, Any]) -> None:
        if self._callback is not None:
            result = self._callback(f"{self.prefix}.{name}", info)
            if inspect.isawaitable(result):
                await result

    @contextlib.asynccontextmanager
    async def span(self, name: str) -> AsyncIterator[dict[str, Any]]:
        """``name.started`` now, then ``name.complete`` or ``name.failed``.

        Yields a dict whose ``"return_value"`` key, if the body sets it, goes
        with ``.complete``; ``prefix`` may change inside (once the protocol
        of the response is known).
        """
        if self._callback is None:
            yield {}
            return
        await self._emit(f"{name}.started", {"request": self._request})
        outcome: dict[str, Any] = {"return_value": None}
        try:
            yield outcome
        except Exception as exc:
            await self._emit(f"{name}.failed", {"exception": exc})
            raise
        await self._emit(f"{name}.complete", outcome)
