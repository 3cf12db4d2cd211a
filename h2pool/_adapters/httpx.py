"""h2pool as an httpx transport: ``httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport())``.

httpx is optional (``pip install h2pool[httpx]``): this module is imported
only when ``h2pool.AsyncHTTPTransport`` is first used.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .origins import OriginAdapter, StreamedResponse, error_table

__all__ = ["AsyncHTTPTransport"]

_ERRORS = error_table(httpx, "TransportError")


class AsyncHTTPTransport(OriginAdapter, httpx.AsyncBaseTransport):
    """An httpx transport that sends every request through h2pool.

    Any URL works: each origin (scheme, host, port) gets its own
    :class:`h2pool.Pool`, created on first use, so requests to one origin
    share multiplexed HTTP/2 connections (or HTTP/1.1 ones where ALPN says
    so), with h2pool's health checks, GOAWAY-safe retries and failover.
    httpx's timeouts (connect, read, write, pool) are honoured, and h2pool's
    errors are raised as httpx's exception classes (``httpx.ConnectTimeout``,
    ``httpx.ReadTimeout``, ``httpx.PoolTimeout``, ``httpx.ConnectError``,
    ``httpx.RemoteProtocolError``, ...). As with httpx, a request fails at
    once when every endpoint of its origin is failing.

    Args:
        verify: For https: True verifies against certifi's CAs, an
            ``ssl.SSLContext`` is used (its ALPN set to h2 and http/1.1),
            False disables certificate verification (tests only).
        **options: Passed to each :class:`h2pool.Pool` (for example
            ``functional_timeout``, ``max_connections``, ``http1``, ``retry``).
    """

    def __init__(self, *, verify: ssl.SSLContext | bool = True, **options: Any) -> None:
        super().__init__(options, ssl=None if verify is True else verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pool of its origin; the body streams on demand."""
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"unsupported URL scheme {url.scheme!r}", request=request
            )
        try:
            content: Any = request.content or None  # in memory: replayable
        except httpx.RequestNotRead:
            content = request.stream  # streamed upload
        held, response = await self._open(
            (url.scheme, url.host, url.port),
            request.method,
            url.raw_path.decode("ascii"),
            request.headers.raw,
            content,
            request.extensions.get("timeout"),
            _ERRORS,
            request=request,
        )
        return httpx.Response(
            response.status_code,
            headers=response.headers.multi_items(),  # repeated fields apart
            stream=_Body(held, request),
            extensions={"http_version": response.http_version.encode()},
        )


class _Body(httpx.AsyncByteStream):
    def __init__(self, held: StreamedResponse, request: httpx.Request) -> None:
        self._held = held
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._held.chunks(_ERRORS, request=self._request):
            yield chunk

    async def aclose(self) -> None:
        await self._held.aclose()
