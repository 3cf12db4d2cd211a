"""Responses of the pool, with bodies read from their stream on demand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from .._core.headers import HeaderList
from .._exceptions import ResponseNotRead
from .channel import BodySource, Fetched
from .timeouts import deadline_scope

__all__ = ["Body", "Response"]


class Body:
    """A response body read from a channel, released exactly once when finished.

    ``on_close`` is called when the body was read to its end or abandoned,
    so that the pool counts the request as finished. ``deadline`` bounds each
    read (the request's total timeout) when nothing else does.
    """

    def __init__(
        self, source: BodySource, *, deadline: float | None, on_close: Callable[[], None]
    ) -> None:
        self._source = source
        self._deadline = deadline
        self._on_close: Callable[[], None] | None = on_close
        self._closed = False
        self.done = False

    @property
    def trailers(self) -> HeaderList:
        """Trailer fields, once the body was read to its end."""
        return self._source.trailers

    async def read(self, size: int | None = None) -> bytes:
        """Body data: the next chunk (``size`` None) or all the rest (-1).

        Returns ``b""`` once the body ended; the trailers are read at its end.
        """
        if self.done:
            return b""
        try:
            if self._deadline is None:
                chunk = await self._source.read(size)
            else:
                async with deadline_scope(self._deadline, "reading the response body"):
                    chunk = await self._source.read(size)
        except BaseException:
            await self.aclose()
            raise
        if not chunk or size == -1:
            self.done = True
            await self.aclose()
        return chunk

    def reset(self) -> None:
        """Abandon what was not read now (RST_STREAM CANCEL) and release; ``aclose()`` follows."""
        if not self._closed:
            self._source.reset()
            self._release()

    async def aclose(self) -> None:
        """Finish: abandon what was not read (RST_STREAM CANCEL) and release."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._source.aclose()
        finally:
            self._release()

    def _release(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


class Response:
    """An HTTP response from the pool.

    Attributes:
        status_code: The status, as an int.
        headers: Response header fields, (name, value) in wire order.
        trailers: Trailer fields, available once the body was read.
        http_version: ``"HTTP/2"``, or ``"HTTP/1.1"`` from an HTTP/1.1 endpoint.
        endpoint: The ``"host:port"`` of the endpoint that served it.
        draining: Whether its connection was draining (GOAWAY received, or
            closing) when the response headers arrived: the server is
            shutting that connection down.
    """

    def __init__(
        self,
        status_code: int,
        headers: HeaderList,
        endpoint: str,
        body: Body | None,
        http_version: str = "HTTP/2",
        *,
        content: bytes = b"",
        trailers: HeaderList | None = None,
        draining: bool = False,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.endpoint = endpoint
        self.http_version = http_version
        self._body = body
        self._content: bytes | None = None if body is not None else content
        self._trailers = trailers
        self.draining = draining

    @classmethod
    def read_whole(cls, fetched: Fetched, endpoint: str, *, draining: bool) -> Response:
        """A response whose body and trailers were read with it (``Channel.fetch``)."""
        return cls(
            fetched.status,
            fetched.headers,
            endpoint,
            None,
            fetched.http_version,
            content=fetched.content,
            trailers=fetched.trailers,
            draining=draining,
        )

    @property
    def trailers(self) -> HeaderList:
        """Trailer fields; empty until the body has been read to its end."""
        if self._body is not None:
            return self._body.trailers
        return self._trailers if self._trailers is not None else []

    @property
    def content(self) -> bytes:
        """The whole body, once read.

        Raises:
            ResponseNotRead: The body was not read yet (use ``await aread()``).
        """
        if self._content is None:
            raise ResponseNotRead("the response body was not read: await response.aread() first")
        return self._content

    async def aread(self) -> bytes:
        """Read the rest of the body (and the trailers) and return the whole body."""
        if self._content is None:
            assert self._body is not None
            self._content = await self._body.read(-1)
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body in chunks as they arrive; the trailers are read at its end."""
        if self._content is not None:
            if self._content:
                yield self._content
            return
        assert self._body is not None
        while chunk := await self._body.read():
            yield chunk

    def reset(self) -> None:
        """Abandon an unread body at once (RST_STREAM CANCEL), freeing its stream's slot.

        For a caller that must not wait (a deadline timer, ``cancel()``):
        ``aclose()`` (or leaving ``Pool.stream()``) still releases the rest.
        """
        if self._body is not None:
            self._body.reset()

    async def aclose(self) -> None:
        """Release the stream; an unread body is abandoned (RST_STREAM CANCEL)."""
        if self._body is not None:
            await self._body.aclose()

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header field ``name`` (any case), or ``default``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}] from {self.endpoint}>"
