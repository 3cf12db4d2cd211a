"""Responses of the pool, with bodies read from their stream on demand."""

from __future__ import annotations

import codecs
import datetime
import http
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._core.headers import HeaderList
from .._exceptions import H2PoolError, ResponseNotRead
from .._messages import Headers, Request, adopt_fields
from .channel import BodySource, Fetched
from .outgoing import OutgoingRequest
from .timeouts import deadline_scope

__all__ = ["Body", "HTTPStatusError", "Response", "charset_of"]

# Trailers of a response that has none (yet): read-only, so one for all.
_NO_FIELDS = Headers()


class HTTPStatusError(H2PoolError):
    """A response with a 4xx or 5xx status, raised by :meth:`Response.raise_for_status`.

    The server answered and processed the request; the message says what
    it answered, to which URL, from which endpoint.

    Attributes:
        response: The response (its body was read, unless it came from
            ``Pool.stream()``).
        request: The request it answers, or None when not known (a
            response made by hand).
        endpoint: The ``"host:port"`` of the endpoint that answered.
    """

    def __init__(self, message: str, *, request: Request | None, response: Response) -> None:
        super().__init__(message)
        self.request = request
        self.response = response
        self.endpoint = response.endpoint


def charset_of(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a ``content-type`` value, if any (RFC 9110 section 8.3).

    ``charset_of('text/plain; charset="ISO-8859-1"')`` is ``"ISO-8859-1"``.
    """
    if content_type is None:
        return None
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None


class Body:
    """A response body read from a channel, released exactly once when finished.

    ``on_close`` is called when the body was read to its end or abandoned,
    so that the pool counts the request as finished. ``deadline`` bounds each
    read (the request's total timeout) when nothing else does.

    Attributes:
        done: Whether the body was read to its end.
        ended: ``time.perf_counter()`` when it was read to its end or
            abandoned, or None before.
        by_caller: ``deadline`` is the caller's (``h2pool.deadline``), not
            the request's own timeout: its expiry says so.
    """

    def __init__(
        self, source: BodySource, *, deadline: float | None, on_close: Callable[[], None]
    ) -> None:
        self._source = source
        self._deadline = deadline
        self._on_close: Callable[[], None] | None = on_close
        self._closed = False
        self._trailers = _NO_FIELDS
        self.done = False
        self.ended: float | None = None
        self.by_caller = False
        # What errors of a read name: the response's request and endpoint (once sent).
        self.response: Response | None = None

    @property
    def trailers(self) -> Headers:
        """Trailer fields, once the body was read to its end."""
        return self._trailers

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
                async with deadline_scope(
                    self._deadline, "reading the response body", by_caller=self.by_caller
                ):
                    chunk = await self._source.read(size)
        except H2PoolError as exc:
            await self.aclose()
            response = self.response
            if response is None:
                raise
            raise exc.for_request(response.request, response.endpoint) from exc
        except BaseException:
            await self.aclose()
            raise
        if not chunk or size == -1:
            self.done = True
            # The source read them with the end of the body; they never change after.
            self._trailers = adopt_fields(self._source.trailers)
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
            self.ended = time.perf_counter()
            on_close()


class Response:
    """An HTTP response from the pool.

    ``headers`` and ``trailers`` are :class:`~h2pool.Headers`:
    ``response.headers["Content-Type"]`` in any case, ``get_list()`` for a
    field sent more than once (``set-cookie``), iteration in wire order.

    Attributes:
        status_code: The status, as an int.
        headers: Response header fields (the pseudo-header ``:status`` is
            ``status_code``).
        http_version: ``"HTTP/2"``, or ``"HTTP/1.1"`` from an HTTP/1.1 endpoint.
        endpoint: The ``"host:port"`` of the endpoint that served it.
        draining: Whether its connection was draining (GOAWAY received, or
            closing) when the response headers arrived: the server is
            shutting that connection down.
    """

    # Set later, or never: class defaults keep the constructor short (it runs
    # for every response, thousands a second under the gRPC client).
    _text: str | None = None
    # What was asked for, and when: set by the pool that sent it (_sent).
    _outgoing: OutgoingRequest | None = None
    _origin = ""
    _request: Request | None = None
    _started: float | None = None
    _ended: float | None = None

    def __init__(
        self,
        status_code: int,
        headers: Headers | HeaderList,
        endpoint: str,
        body: Body | None,
        http_version: str = "HTTP/2",
        *,
        content: bytes = b"",
        trailers: Headers | HeaderList | None = None,
        draining: bool = False,
    ) -> None:
        self.status_code = status_code
        # type(), not isinstance(): an ABC's isinstance() costs more than the rest here.
        self.headers = headers if type(headers) is Headers else Headers(headers)
        self.endpoint = endpoint
        self.http_version = http_version
        self._body = body
        self._content: bytes | None = None if body is not None else content
        if trailers is None:
            trailers = _NO_FIELDS
        self._trailers = trailers if type(trailers) is Headers else Headers(trailers)
        self.draining = draining

    @classmethod
    def read_whole(cls, fetched: Fetched, endpoint: str, *, draining: bool) -> Response:
        """A response whose body and trailers were read with it (``Channel.fetch``)."""
        return cls(
            fetched.status,
            adopt_fields(fetched.headers),  # decoded for this response alone
            endpoint,
            None,
            fetched.http_version,
            content=fetched.content,
            trailers=adopt_fields(fetched.trailers),
            draining=draining,
        )

    def _sent(
        self, request: OutgoingRequest, origin: str, started: float, by_caller: bool = False
    ) -> Response:
        """This response, told the request it answers (``origin``: ``scheme://authority``),
        when it started (``time.perf_counter()``) and whether its deadline is the caller's
        (``h2pool.deadline``); a whole response ends now."""
        self._outgoing = request
        self._origin = origin
        self._started = started
        if self._body is None:
            self._ended = time.perf_counter()
        else:
            self._body.response = self
            self._body.by_caller = by_caller
        return self

    # ------------------------------------------------------------------
    # What the response says

    @property
    def trailers(self) -> Headers:
        """Trailer fields; empty until the body has been read to its end."""
        if self._body is not None:
            return self._body.trailers
        return self._trailers

    @property
    def request(self) -> Request:
        """The request this response answers: method, URL as requested, header fields.

        Raises:
            RuntimeError: The response was not returned by a pool (made by hand).
        """
        if self._request is None:
            if self._outgoing is None:
                raise RuntimeError("the request of this response is not known: it was not sent")
            self._request = self._outgoing.described(self._origin)
        return self._request

    @property
    def reason_phrase(self) -> str:
        """The standard reason phrase of the status (``"Not Found"``), or ``""``.

        HTTP/2 carries no reason phrase (RFC 9113 section 8.3.2): this is
        the one of RFC 9110 section 15, whatever the server meant.
        """
        try:
            return http.HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status_code < 300

    @property
    def is_client_error(self) -> bool:
        """Whether the status is 4xx."""
        return 400 <= self.status_code < 500

    @property
    def is_server_error(self) -> bool:
        """Whether the status is 5xx."""
        return 500 <= self.status_code < 600

    @property
    def is_error(self) -> bool:
        """Whether the status is 4xx or 5xx."""
        return 400 <= self.status_code < 600

    def raise_for_status(self) -> Response:
        """Raise :class:`~h2pool.HTTPStatusError` for a 4xx or 5xx status; else return self.

        So that it chains: ``data = (await pool.get("/x")).raise_for_status().json()``.
        Unlike httpx, 1xx and 3xx pass too (the pool follows no redirects:
        a 3xx is an answer to read).

        Raises:
            HTTPStatusError: The status is 4xx or 5xx; the message names the
                status, the URL and the endpoint.
        """
        if not self.is_error:
            return self
        kind = "Client error" if self.is_client_error else "Server error"
        status = f"{self.status_code} {self.reason_phrase}".rstrip()
        request = self.request if self._outgoing is not None else None
        where = f" for url '{request.url}'" if request is not None else ""
        raise HTTPStatusError(
            f"{kind} '{status}'{where} from endpoint {self.endpoint}",
            request=request,
            response=self,
        )

    @property
    def elapsed(self) -> datetime.timedelta:
        """Time from the request's start to the response's end, as httpx measures it.

        It starts when the pool starts sending the request (after checking
        it; connecting, waiting for a connection, retries and backoff count)
        and ends when the body was read to its end or abandoned: when
        ``Pool.request()`` returns, or when a ``Pool.stream()`` body ends.

        Raises:
            ResponseNotRead: The streamed body was not read to its end nor
                closed yet.
            RuntimeError: The response was not returned by a pool.
        """
        if self._started is None:
            raise RuntimeError("this response was not sent by a pool: no elapsed time")
        ended = self._ended if self._body is None else self._body.ended
        if ended is None:
            raise ResponseNotRead("elapsed is known once the body was read or the response closed")
        return datetime.timedelta(seconds=ended - self._started)

    # ------------------------------------------------------------------
    # The body

    @property
    def content(self) -> bytes:
        """The whole body, once read.

        Raises:
            ResponseNotRead: The body was not read yet (use ``await aread()``).
        """
        if self._content is None:
            raise ResponseNotRead("the response body was not read: await response.aread() first")
        return self._content

    @property
    def encoding(self) -> str:
        """The charset that :attr:`text` decodes with: ``content-type``'s, if Python knows
        it, else ``"utf-8"``."""
        charset = charset_of(self.headers.get("content-type"))
        if charset is not None:
            try:
                return codecs.lookup(charset).name
            except LookupError:
                pass
        return "utf-8"

    @property
    def text(self) -> str:
        """The body decoded with :attr:`encoding`; undecodable bytes become U+FFFD, as in httpx.

        Raises:
            ResponseNotRead: The body was not read yet (use ``await aread()``).
        """
        if self._text is None:
            self._text = self.content.decode(self.encoding, errors="replace")
        return self._text

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON (``json.loads``, which finds UTF-8, -16 or -32 by itself).

        Args:
            **kwargs: Passed to ``json.loads`` (``object_hook``, ``parse_float``...).

        Raises:
            ResponseNotRead: The body was not read yet (use ``await aread()``).
            ValueError: The body is not JSON (``json.JSONDecodeError``), or
                not in UTF-8, -16 or -32 (``UnicodeDecodeError``), as with httpx.
        """
        return json.loads(self.content, **kwargs)

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
        """The first value of header field ``name`` (any case), or ``default``.

        ``headers.get(name)`` says the same for a field sent once (it joins
        the values of a repeated one with ``", "``); prefer it.
        """
        values = self.headers.get_list(name)
        return values[0] if values else default

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}] from {self.endpoint}>"
