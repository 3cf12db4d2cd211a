"""h2pool as an httpx transport: ``httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport())``.

httpx is optional (the ``httpx`` extra): this module is imported
only when ``h2pool.AsyncHTTPTransport`` is first used.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .options import check_supported, http1_option, limits_options, merge_options, tls_context
from .origins import OriginAdapter, StreamedResponse, error_table

__all__ = ["AsyncHTTPTransport"]

_ERRORS = error_table(httpx, "TransportError")


class AsyncHTTPTransport(OriginAdapter, httpx.AsyncBaseTransport):
    """An httpx transport that sends every request through h2pool.

    Any URL works: each origin (scheme, host, port) gets its own
    :class:`h2pool.Pool`, created on first use, so requests to one origin
    share multiplexed HTTP/2 connections, with h2pool's health checks,
    GOAWAY-safe retries and failover. Servers without HTTP/2 are spoken to
    in HTTP/1.1: over TLS as ALPN chooses, over cleartext (``http://``) once
    the first connection found that the server does not answer HTTP/2.
    httpx's timeouts (connect, read, write, pool) are honoured, and h2pool's
    errors are raised as httpx's exception classes (``httpx.ConnectTimeout``,
    ``httpx.ReadTimeout``, ``httpx.PoolTimeout``, ``httpx.ConnectError``,
    ``httpx.RemoteProtocolError``, ...). As with httpx, a request fails at
    once when every endpoint of its origin is failing. The ``trace``
    request extension gets httpcore's events of the request, not those
    of its connection (see ``docs/httpx.md``).

    The arguments of ``httpx.AsyncHTTPTransport`` that h2pool implements
    are taken alike; ``proxy``, ``uds``, ``local_address`` and
    ``socket_options`` raise ``TypeError`` here.

    Args:
        verify: For https: True verifies against the CAs of
            ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (with ``trust_env``) or else
            certifi's; a CA bundle file or a directory of CA certificates
            verifies against those; an ``ssl.SSLContext`` is used (its ALPN
            set to h2 and http/1.1); False verifies nothing (tests only).
        cert: Client certificate for mutual TLS: its file (key included),
            or (certificate file, key file[, password]).
        trust_env: Whether ``verify=True`` honours ``SSL_CERT_FILE`` and
            ``SSL_CERT_DIR``.
        http1: May speak HTTP/1.1 (to servers without HTTP/2).
        http2: May speak HTTP/2. Both (the default): HTTP/2 where the
            server speaks it; ``http2=False``: HTTP/1.1 unless TLS's ALPN
            chooses HTTP/2; ``http1=False``: HTTP/2 only.
        limits: ``httpx.Limits``: ``max_connections`` caps each endpoint's
            HTTP/2 connections (``max_connections``) and HTTP/1.1 ones
            (``http1_max_connections``); ``max_keepalive_connections=0``
            opens none ahead of requests (``min_connections=0``);
            ``keepalive_expiry`` does not apply (idle HTTP/2 connections
            stay open, checked by PING).
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
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
        cert: str | tuple[str, str] | tuple[str, str, str] | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = True,
        limits: httpx.Limits | None = None,
        retries: int = 0,
        **options: Any,
    ) -> None:
        check_supported("h2pool.AsyncHTTPTransport", options)
        if limits is not None and not isinstance(limits, httpx.Limits):
            raise TypeError(f"limits must be an httpx.Limits, not {type(limits).__name__}")
        mapped: dict[str, Any] = {"http1": http1_option(http1, http2)}
        if limits is not None:
            mapped |= limits_options(limits.max_connections, limits.max_keepalive_connections)
        super().__init__(
            merge_options(mapped, options),
            ssl=tls_context(verify, cert, trust_env),
            retries=retries,
        )

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
            request.extensions,
            _ERRORS,
            request,
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
