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

from .options import check_supported, http1_option, limits_options, merge_options
from .origins import OriginAdapter, StreamedResponse, error_table

__all__ = ["AsyncConnectionPool"]

_ERRORS = error_table(httpcore, "NetworkError")


class AsyncConnectionPool(OriginAdapter, AsyncRequestInterface):
    """httpcore's async connection-pool interface, served by h2pool pools.

    Use it wherever code expects ``httpcore.AsyncConnectionPool``: requests
    to any origin go to one :class:`h2pool.Pool` per origin (HTTP/2, or
    HTTP/1.1 to servers without it: over TLS as ALPN chooses, over
    cleartext once the first connection found that the server does not
    answer HTTP/2). httpcore's ``extensions["timeout"]`` keys ``connect``,
    ``read``, ``write`` and ``pool`` are honoured, and ``extensions["trace"]``
    gets httpcore's events of the request, not those of its connection (see
    ``docs/httpcore.md``); errors are httpcore's exception classes. As with
    httpcore, a request fails at once when every endpoint of its origin is
    failing. httpcore's ``proxy``, ``uds``, ``local_address``,
    ``network_backend`` and ``socket_options`` raise ``TypeError`` here.

    Args:
        ssl_context: TLS context for https origins (its ALPN is set to h2
            and http/1.1); None verifies with the CAs of ``SSL_CERT_FILE``
            or ``SSL_CERT_DIR``, else certifi's.
        max_connections: Most connections per endpoint: HTTP/2 ones (a new
            one opens only when the others are full) and HTTP/1.1 ones;
            None: the Pool's defaults.
        max_keepalive_connections: 0 opens no connection ahead of requests
            (``min_connections=0``); other values change nothing.
        keepalive_expiry: Accepted for httpcore's sake; does not apply
            (idle HTTP/2 connections stay open, checked by PING).
        http1: May speak HTTP/1.1 (to servers without HTTP/2).
        http2: May speak HTTP/2. Both (the default): HTTP/2 where the
            server speaks it; ``http2=False``: HTTP/1.1 unless TLS's ALPN
            chooses HTTP/2; ``http1=False``: HTTP/2 only.
        retries: Further tries of a request whose connection could not be
            opened, each waiting up to the connect timeout for the pool's
            next connection attempt.
        **options: Passed to each :class:`h2pool.Pool` (for example
            ``functional_timeout``, ``retry``, ``connect_timeout``).

    Raises:
        TypeError: An unsupported or unknown argument, or a wrong type.
        ValueError: A wrong value (``http1=False, http2=False``, ...).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        max_keepalive_connections: int | None = None,
        keepalive_expiry: float | None = None,
        http1: bool = True,
        http2: bool = True,
        retries: int = 0,
        **options: Any,
    ) -> None:
        check_supported("h2pool.AsyncConnectionPool", options)
        mapped = {
            "http1": http1_option(http1, http2),
            **limits_options(max_connections, max_keepalive_connections),
        }
        super().__init__(merge_options(mapped, options), ssl=ssl_context, retries=retries)

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
            request.extensions,
            _ERRORS,
            request,
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
