"""h2pool for ``httpx.Client``: the async transport run on a loop in a background thread.

httpx is optional (the ``httpx`` extra): this module is imported
only when ``h2pool.SyncHTTPTransport`` is first used.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

from .._pool.pool import PoolStats
from .._sync.body import BlockingBody, Held
from .._sync.loop import LoopThread
from .._sync.upload import CallerUpload
from .httpx import AsyncHTTPTransport

__all__ = ["SyncHTTPTransport"]


class SyncHTTPTransport(httpx.BaseTransport):
    """An ``httpx.Client`` transport that sends every request through h2pool.

    ``httpx.Client(transport=h2pool.SyncHTTPTransport())``: what
    :class:`h2pool.AsyncHTTPTransport` is for ``httpx.AsyncClient``, for
    blocking code. Its pools run on one event loop in a background daemon
    thread, started by the first request and stopped by :meth:`close`
    (``httpx.Client.close()`` and leaving its ``with`` block call it); any
    number of threads may share the client. Errors are httpx's classes, as
    with the async transport.

    Args:
        **options: The arguments of :class:`h2pool.AsyncHTTPTransport`
            (``verify``, and the options of each pool).
    """

    def __init__(self, **options: Any) -> None:
        self._transport = AsyncHTTPTransport(**options)
        self._loop = LoopThread("SyncHTTPTransport")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pool of its origin; the body streams on demand."""
        sent, upload = _bridged(request)
        held = Held(_opened(self._transport, sent))
        response = self._loop.call(held.enter, upload=upload, abandon=held.release)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        body = BlockingBody(self._loop, held, aiter(response.stream), upload)
        return httpx.Response(
            response.status_code,
            headers=response.headers.raw,
            stream=_Body(body),
            extensions=response.extensions,
        )

    def stats(self) -> dict[str, PoolStats]:
        """A snapshot of the pool of each origin used so far, by ``"scheme://host:port"``."""
        return self._loop.call(self._stats)

    async def _stats(self) -> dict[str, PoolStats]:
        return self._transport.stats()

    def close(self) -> None:
        """Close every pool gracefully and end the loop's thread; idempotent."""
        self._loop.close(self._transport.aclose)


def _bridged(request: httpx.Request) -> tuple[httpx.Request, CallerUpload | None]:
    """The request as the async transport takes it, and its streamed body if it has one."""
    extensions = dict(request.extensions)
    trace = extensions.get("trace")
    if trace is not None:  # httpx.Client's trace callback is sync; the async transport awaits it
        extensions["trace"] = _awaitable_trace(trace)
    try:
        request.content  # noqa: B018 - in memory (replayable), or httpx.RequestNotRead
    except httpx.RequestNotRead:
        assert isinstance(request.stream, httpx.SyncByteStream)
        upload = CallerUpload(request.stream)
        stream: httpx.AsyncByteStream = _Upload(upload)
        return httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            stream=stream,
            extensions=extensions,
        ), upload
    if trace is None:
        return request, None
    return httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        content=request.content,
        extensions=extensions,
    ), None


def _awaitable_trace(trace: Callable[[str, dict[str, Any]], object]) -> Any:
    async def traced(name: str, info: dict[str, Any]) -> None:
        trace(name, info)

    return traced


@contextlib.asynccontextmanager
async def _opened(
    transport: AsyncHTTPTransport, request: httpx.Request
) -> AsyncIterator[httpx.Response]:
    """The async transport's response to ``request``, closed on exit."""
    response = await transport.handle_async_request(request)
    try:
        yield response
    finally:
        await response.aclose()


class _Upload(httpx.AsyncByteStream):
    def __init__(self, upload: CallerUpload) -> None:
        self._upload = upload

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._upload:
            yield chunk


class _Body(httpx.SyncByteStream):
    def __init__(self, body: BlockingBody) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        self._body.close()
