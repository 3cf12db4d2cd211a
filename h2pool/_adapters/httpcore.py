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

from .._pool.pool import Pool, PoolStats
from .origins import (
    OriginPools,
    StreamedResponse,
    error_table,
    request_headers,
    timeouts_from,
    translated,
)

__all__ = ["AsyncConnectionPool"]

_ERRORS = error_table(httpcore, "NetworkError")


class AsyncConnectionPool(AsyncRequestInterface):
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
        options.setdefault("wait_for_ready", False)
        options.setdefault("timeout", None)
        self._pools = OriginPools(options, ssl=ssl_context)

    def _pool(self, url: httpcore.URL) -> Pool:
        scheme = url.scheme.decode()
        if scheme not in ("http", "https"):
            raise httpcore.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        return self._pools.get(scheme, url.host.decode(), url.port)

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` through the pool of its origin; the body streams on demand."""
        pool = self._pool(request.url)
        content: Any = request.stream
        if isinstance(content, Iterable):  # bytes in memory (httpcore's ByteStream): replayable
            content = b"".join(content)
        held = StreamedResponse(
            pool.stream(
                request.method.decode(),
                request.url.target.decode(),
                headers=request_headers(request.headers),
                content=content or None,
                timeout=timeouts_from(request.extensions.get("timeout")),
            )
        )
        with translated(_ERRORS):
            response = await held.open()
        return httpcore.Response(
            response.status_code,
            headers=[(name.encode(), value.encode()) for name, value in response.headers],
            content=_Body(held),
            extensions={"http_version": response.http_version.encode()},
        )

    def stats(self) -> dict[str, PoolStats]:
        """A snapshot of the pool of each origin used so far, by ``"scheme://host:port"``."""
        return self._pools.stats()

    async def aclose(self) -> None:
        """Close every pool gracefully."""
        await self._pools.aclose()

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
