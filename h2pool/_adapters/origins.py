"""What the httpx and httpcore adapters share: one Pool per origin, and translations.

Both adapters take any URL, so they keep a :class:`~h2pool.Pool` per origin
(scheme, host, port), created on first use with the adapter's options. They
also share how requests are translated (headers, timeouts) and how h2pool's
errors become the caller's library's errors (a table each, first match wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from .. import _exceptions as errors
from .._exceptions import H2PoolError
from .._pool.checks import check_count
from .._pool.pool import Pool, PoolStats
from .._pool.response import Response
from .._pool.timeouts import Timeouts
from .tracing import TraceCallback, Tracer, trace_prefix

__all__ = [
    "ErrorTable",
    "OriginAdapter",
    "OriginPools",
    "StreamedResponse",
    "error_table",
    "request_headers",
    "timeouts_from",
    "translated",
]

#: (h2pool error class, factory of the caller's error from a message), first match wins.
ErrorTable = Sequence[tuple[type[H2PoolError], Any]]

# httpx and httpcore name their errors alike: which name each h2pool error
# becomes, most specific first.
_ERROR_NAMES: Sequence[tuple[type[H2PoolError], str]] = (
    (errors.ConnectTimeout, "ConnectTimeout"),
    (errors.ReadTimeout, "ReadTimeout"),
    (errors.WriteTimeout, "WriteTimeout"),
    (errors.PoolTimeout, "PoolTimeout"),
    (errors.PoolOverloaded, "PoolTimeout"),
    (errors.H2TimeoutError, "TimeoutException"),
    (errors.ConnectError, "ConnectError"),
    (errors.H2ConnectionError, "ReadError"),
    (errors.StreamError, "RemoteProtocolError"),
    (errors.LocalProtocolError, "LocalProtocolError"),
    (errors.H2ProtocolError, "RemoteProtocolError"),
)


def error_table(module: Any, fallback: str) -> ErrorTable:
    """The table for httpx or httpcore (``module``); other errors become ``fallback``."""
    table = [(kind, getattr(module, name)) for kind, name in _ERROR_NAMES]
    return (*table, (H2PoolError, getattr(module, fallback)))


# Fields that belong to one hop, or that HTTP/2 carries as pseudo-headers
# (RFC 9113 section 8.2.2); the pool and the connection set what is needed.
_HOP_FIELDS = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    }
)


def request_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The caller's header fields, without those the pool sets itself."""
    fields = []
    for name, value in raw:
        key = name.lower()
        if key in _HOP_FIELDS or (key == b"te" and value.lower() != b"trailers"):
            continue
        fields.append((key, value))
    return fields


def timeouts_from(extension: Mapping[str, float | None] | None) -> Timeouts:
    """``Timeouts`` from httpcore's and httpx's ``extensions["timeout"]`` (no total)."""
    extension = extension or {}
    return Timeouts(
        total=None,
        connect=extension.get("connect"),
        read=extension.get("read"),
        write=extension.get("write"),
        pool=extension.get("pool"),
    )


@contextlib.contextmanager
def translated(table: ErrorTable, **context: Any) -> Iterator[None]:
    """Raise the caller's library's error for an h2pool error (``context`` goes to its factory)."""
    try:
        yield
    except H2PoolError as exc:
        for kind, make in table:
            if isinstance(exc, kind):
                raise make(str(exc), **context) from exc
        raise


class OriginPools:
    """A Pool per origin, created on first use with the same options.

    Args:
        options: Passed to every :class:`~h2pool.Pool`.
        ssl: The ``ssl`` argument of the pools of https origins.
    """

    def __init__(self, options: Mapping[str, Any], ssl: ssl.SSLContext | bool | None) -> None:
        self._options = dict(options)
        self._ssl = ssl
        self._pools: dict[tuple[str, str, int], Pool] = {}
        self._prefixes: dict[tuple[str, str, int], str] = {}
        self._closed = False

    @staticmethod
    def _key(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
        return scheme, host, port or (443 if scheme == "https" else 80)

    def trace_prefix(self, scheme: str, host: str, port: int | None) -> str:
        """The trace prefix of the origin's latest response (``http2`` before any)."""
        return self._prefixes.get(self._key(scheme, host, port), "http2")

    def answered(self, scheme: str, host: str, port: int | None, http_version: str) -> str:
        """Remember the protocol of the origin's latest response; return its trace prefix."""
        prefix = self._prefixes[self._key(scheme, host, port)] = trace_prefix(http_version)
        return prefix

    def get(self, scheme: str, host: str, port: int | None) -> Pool:
        """The pool of ``scheme://host:port`` (default port when None)."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        key = self._key(scheme, host, port)
        scheme, host, port = key
        pool = self._pools.get(key)
        if pool is None:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            options = {**self._options, "ssl": self._ssl} if scheme == "https" else self._options
            pool = self._pools[key] = Pool(f"{scheme}://{authority}", **options)
        return pool

    def stats(self) -> dict[str, PoolStats]:
        """A snapshot of each pool, by origin (``"scheme://host:port"``)."""
        return {f"{s}://{h}:{p}": pool.stats() for (s, h, p), pool in self._pools.items()}

    async def aclose(self) -> None:
        """Close every pool gracefully."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.aclose() for pool in pools))


class StreamedResponse:
    """A pool response held open for a caller that reads its body later."""

    def __init__(
        self, manager: contextlib.AbstractAsyncContextManager[Response], tracer: Tracer
    ) -> None:
        self._manager = manager
        self.tracer = tracer
        self.response: Response | None = None

    async def open(self) -> Response:
        """Send the request; return once the response headers are in."""
        self.response = await self._manager.__aenter__()
        return self.response

    async def chunks(self, table: ErrorTable, **context: Any) -> AsyncIterator[bytes]:
        """The body, with h2pool errors translated."""
        assert self.response is not None
        async with self.tracer.span("receive_response_body"):
            with translated(table, **context):
                async for chunk in self.response.aiter_bytes():
                    yield chunk

    async def aclose(self) -> None:
        """Release the stream (an unread rest is abandoned)."""
        async with self.tracer.span("response_closed"):
            await self._manager.__aexit__(None, None, None)


class OriginAdapter:
    """What both adapters are: a Pool per origin, created with the caller's options.

    As httpx's and httpcore's own pools do, a request fails at once when every
    endpoint of its origin is failing (``wait_for_ready=False``), and only the
    caller's per-phase timeouts apply (``timeout=None``), unless the options
    say otherwise. The options are checked at once: a wrong one raises here,
    not on the first request.

    Args:
        options: Passed to every :class:`~h2pool.Pool`.
        ssl: The ``ssl`` argument of the pools of https origins.
        retries: Further tries of a request whose connection could not be
            opened (``ConnectError``, ``ConnectTimeout``; never a failed
            certificate verification), as httpx's and httpcore's
            ``retries``: each waits, up to the connect timeout, for the
            pool's next connection attempt (its ``backoff`` spaces them).
    """

    def __init__(
        self, options: dict[str, Any], ssl: ssl.SSLContext | bool | None, retries: int = 0
    ) -> None:
        check_count("retries", retries, 0)
        options.setdefault("wait_for_ready", False)
        options.setdefault("timeout", None)
        Pool("https://localhost", **options, ssl=ssl)  # checks every option; never started
        self._retries = retries
        self._pools = OriginPools(options, ssl=ssl)

    async def _open(
        self,
        origin: tuple[str, str, int | None],
        method: str,
        target: str,
        raw_headers: Sequence[tuple[bytes, bytes]],
        content: Any,
        extensions: Mapping[str, Any],
        table: ErrorTable,
        caller_request: Any,
        **context: Any,
    ) -> tuple[StreamedResponse, Response]:
        """Send a request through the pool of ``origin`` (scheme, host, port); hold its body.

        ``extensions`` are the request's (``timeout`` and ``trace`` are
        honoured); ``caller_request`` is the caller's request object, for
        tracing; ``context`` goes to the caller's error classes.
        """
        pool = self._pools.get(*origin)
        trace: TraceCallback | None = extensions.get("trace")
        tracer = Tracer(trace, caller_request, self._pools.trace_prefix(*origin))
        async with tracer.response_headers() as outcome:
            with translated(table, **context):
                for attempt in range(self._retries + 1):
                    held = StreamedResponse(
                        pool.stream(
                            method,
                            target,
                            headers=request_headers(raw_headers),
                            content=content,
                            timeout=timeouts_from(extensions.get("timeout")),
                            # A retry waits for the pool's next connection attempt.
                            wait_for_ready=True if attempt else None,
                            _observer=tracer.observer,
                        ),
                        tracer,
                    )
                    try:
                        response = await held.open()
                        break
                    except (errors.ConnectError, errors.ConnectTimeout) as exc:
                        failed_tls = isinstance(exc, errors.CertificateVerifyError)
                        if attempt == self._retries or failed_tls:
                            raise
            outcome["return_value"] = (response.status_code, response.headers)
        # The span ends under the name it started with; the body's events say what answered.
        tracer.prefix = self._pools.answered(*origin, response.http_version)
        return held, response

    def stats(self) -> dict[str, PoolStats]:
        """A snapshot of the pool of each origin used so far, by ``"scheme://host:port"``."""
        return self._pools.stats()

    async def aclose(self) -> None:
        """Close every pool gracefully."""
        await self._pools.aclose()
