"""h2pool behind httpcore's async connection-pool interface."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import httpcore

# The interface httpcore's own pool implements; it adds request() and
# stream() on top of handle_async_request(). Not re-exported by httpcore.
from httpcore._async.interfaces import AsyncRequestInterface

from .origins import OriginAdapter, StreamedResponse, error_table

__all__ = ["AsyncConnectionPool"]

_ERRORS = error_table(httpcore, "NetworkError")


class AsyncConnectionPool(OriginAdapter, AsyncRequestInterface):
    """httpcore's async connection-pool interface, served by h2pool pools.

    Use it wherever code expects ``httpcore.AsyncConnectionPool``: requests
    to any origin go to one :class:`h2pool.Pool` per origin (HTTP/2, or
    HTTP/1.1 where ALPN says so). httpcore's ``extensions["timeout"]`` keys
    ``connect``, ``read``, ``write`` and ``pool`` are honoured; errors are
    httpcore's exception classes. As with httpcore, a request fails at once
    when every endpoint of its origin is failing.

    Args:
        ssl_context: TLS context for https origins (its ALPN is set to h2
            and http/1.1); None verifies with certifi's CAs.
        **options: Passed to each :class:`h2pool.Pool` (for example
            ``functional_timeout``, ``max_connections``, ``http1``, ``retry``).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, **options: Any) -> None:
        super().__init__(options, ssl=ssl_context)

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` through the pool of its origin; the body streams on demand."""
        url = request.url
        scheme = url.scheme.decode()
        if scheme not in ("http", "https"):
            raise httpcore.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        content: Any = request.stream
        if isinstance(content, Iterable):  # bytes in memory (httpcore's ByteStream): replayable
            content = b"".join(content)
        held, response = await self._open(
            (scheme, url.host.decode(), url.port),
            request.method.decode(),
            url.target.decode(),
            request.headers,
            content or None,
            request.extensions.get("timeout"),
            _ERRORS,
        )
        return httpcore.Response(
            response.status_code,
            headers=[
                (name.encode(), value.encode()) for name, value in response.headers.multi_items()
            ],
            content=_Body(held),
            extensions={"http_version": response.http_version.encode()},
        )

    async def __aenter__(self) -> AsyncConnectionPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()


class _Body:
    """A response body as httpcore expects it: async iterable, with ``aclose()``."""

    def __init__(self, held: StreamedResponse) -> None:
        self._held = held

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._held.chunks(_ERRORS)

    async def aclose(self) -> None:
        await self._held.aclose()
