"""Channels: what the pool sends requests over, one per connection.

A :class:`Channel` hides whether a connection speaks HTTP/2 (the core
module's :class:`~h2pool._core.protocol.H2Protocol`, many streams at once) or
HTTP/1.1 (httpcore's connection, one request at a time), so that routing,
health and retries are the same for both.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from .._core.headers import HeaderList
from .._core.protocol import ConnectionEvent, H2Protocol
from .._exceptions import H2PoolError, ReadTimeout, WriteTimeout
from .outgoing import Observer, OutgoingRequest, Upload
from .timeouts import bounded

__all__ = [
    "BodySource",
    "Channel",
    "ChannelListener",
    "Fetched",
    "H2Channel",
    "Reply",
]

ChannelListener = Callable[["Channel", ConnectionEvent], None]


class BodySource(Protocol):
    """The receiving side of one exchange, as a channel provides it."""

    trailers: HeaderList

    async def read(self, size: int | None) -> bytes:
        """The next chunk (``size`` None) or all the rest (-1); ``b""`` at the end."""
        ...

    def reset(self) -> None:
        """Abandon what was not read now, freeing the stream's slot; ``aclose()`` still follows."""
        ...

    async def aclose(self) -> None:
        """Finish: abandon what was not read and free the connection."""
        ...


@dataclass(slots=True)
class Fetched:
    """A whole response: what ``Pool.request()`` returns the content of."""

    status: int
    headers: HeaderList
    content: bytes
    trailers: HeaderList
    http_version: str


@dataclass(slots=True)
class Reply:
    """The response headers of one exchange, and where its body comes from."""

    status: int
    headers: HeaderList
    body: BodySource
    http_version: str


class Channel(abc.ABC):
    """One connection, as routing and the pool see it.

    Attributes:
        address: The endpoint's ``"host:port"``, for messages.
        reserved: Slots the scheduler handed to requests that have not
            opened their stream yet; :meth:`exchange` takes one back as it
            opens the stream.
    """

    http_version: str

    def __init__(self, address: str) -> None:
        self.address = address
        self.reserved = 0

    def context(self, request: OutgoingRequest) -> str:
        """``"METHOD path to host:port"``, for error messages."""
        return f"{request.target} to {self.address}"

    @property
    @abc.abstractmethod
    def functional(self) -> bool:
        """False once the connection failed or closed."""

    @property
    @abc.abstractmethod
    def accepting_streams(self) -> bool:
        """Whether new requests may be sent on it (no GOAWAY, not closing)."""

    @property
    @abc.abstractmethod
    def open_streams(self) -> int:
        """Requests in progress on it."""

    @property
    @abc.abstractmethod
    def max_streams(self) -> int:
        """How many requests it may carry at once."""

    @property
    @abc.abstractmethod
    def last_received(self) -> float:
        """Event-loop time of the latest proof of life."""

    @property
    @abc.abstractmethod
    def rtt(self) -> float | None:
        """Latest measured round trip, if any."""

    @property
    @abc.abstractmethod
    def ping_interval(self) -> float:
        """Silence before a health PING (HTTP/2)."""

    @property
    @abc.abstractmethod
    def error(self) -> H2PoolError | None:
        """Why it is unusable, or None."""

    @abc.abstractmethod
    def set_listener(self, listener: ChannelListener | None) -> None:
        """Be told of slots freed, drains and closes."""

    @abc.abstractmethod
    async def wait_functional(self) -> float:
        """Prove the connection alive now; the round-trip time."""

    @abc.abstractmethod
    async def exchange(self, request: OutgoingRequest) -> Reply:
        """Send a request on a slot reserved for it; wait for its response headers.

        Errors name the request and the endpoint.
        """

    async def fetch(self, request: OutgoingRequest) -> Fetched:
        """:meth:`exchange`, then the whole body and the trailers; the stream is released."""
        reply = await self.exchange(request)
        source = reply.body
        try:
            content = await source.read(-1)
        finally:
            await source.aclose()  # after a failure: abandon the stream
        return Fetched(reply.status, reply.headers, content, source.trailers, reply.http_version)

    @abc.abstractmethod
    def close(self) -> None:
        """Close at once."""

    @abc.abstractmethod
    async def shutdown(self, timeout: float | None) -> None:
        """Close gracefully: let requests in progress finish, within ``timeout``."""


class H2Channel(Channel):
    """An HTTP/2 connection of the core module."""

    http_version = "HTTP/2"

    def __init__(self, protocol: H2Protocol, address: str, scheme: bytes, authority: bytes) -> None:
        super().__init__(address)
        self.protocol = protocol
        self._pseudo = ((b":scheme", scheme), (b":authority", authority))

    @property
    def functional(self) -> bool:
        return self.protocol.functional

    @property
    def accepting_streams(self) -> bool:
        return self.protocol.accepting_streams

    @property
    def open_streams(self) -> int:
        return self.protocol.open_streams

    @property
    def max_streams(self) -> int:
        return self.protocol.max_streams

    @property
    def last_received(self) -> float:
        return self.protocol.last_received

    @property
    def rtt(self) -> float | None:
        return self.protocol.rtt

    @property
    def ping_interval(self) -> float:
        return self.protocol.ping_interval

    @property
    def error(self) -> H2PoolError | None:
        return self.protocol.error

    def set_listener(self, listener: ChannelListener | None) -> None:
        if listener is None:
            self.protocol.set_listener(None)
        else:
            self.protocol.set_listener(lambda _, event: listener(self, event))

    async def wait_functional(self) -> float:
        return await self.protocol.wait_functional()

    def close(self) -> None:
        self.protocol.close_connection()

    async def shutdown(self, timeout: float | None) -> None:
        await self.protocol.shutdown(timeout)

    async def _start(self, request: OutgoingRequest) -> tuple[int, asyncio.Task[None] | None]:
        """Open the stream on the reserved slot, send the body; the stream and its sender."""
        protocol = self.protocol
        headers = [
            (b":method", request.wire_method),
            *self._pseudo,
            (b":path", request.wire_path),
            *request.headers,
        ]
        # The reservation guarantees a free slot: start_request does not wait.
        self.reserved -= 1
        try:
            stream_id = await protocol.start_request(
                headers, end_stream=request.body is None and request.upload is None, checked=True
            )
            if request.observer is not None:
                return stream_id, await self._observed(stream_id, request, request.observer)
        except H2PoolError as exc:
            raise exc.in_context(self.context(request)) from exc
        return stream_id, self._send_body(stream_id, request, None)

    def _send_body(
        self, stream_id: int, request: OutgoingRequest, observer: Observer | None
    ) -> asyncio.Task[None] | None:
        """Queue the body in memory, or start sending the streamed one; its sender."""
        if request.body is not None:
            self.protocol.queue_data(stream_id, request.body, end_stream=True)
        elif request.upload is not None:
            write_timeout = request.timeouts.write
            upload = _send_upload(self.protocol, stream_id, request.upload, write_timeout, observer)
            return asyncio.ensure_future(upload)
        return None

    async def _observed(
        self, stream_id: int, request: OutgoingRequest, observer: Observer
    ) -> asyncio.Task[None] | None:
        """:meth:`_send_body`, telling ``observer`` of the headers and the body.

        The HEADERS frame is queued when the stream opens, and leaves with the
        connection's next write, as the body queued in memory does; a streamed
        body is over when its sender has handed its end to the connection.
        """
        try:
            async with _step(observer, "send_request_headers", stream_id):
                pass  # queued by start_request
            if request.upload is not None:
                return self._send_body(stream_id, request, observer)
            async with _step(observer, "send_request_body", stream_id):
                return self._send_body(stream_id, request, observer)
        except BaseException:
            self.protocol.reset_stream(stream_id)
            raise

    async def _failed(
        self,
        exc: BaseException,
        request: OutgoingRequest,
        stream_id: int,
        sender: asyncio.Task[None] | None,
    ) -> NoReturn:
        """Abandon the stream after ``exc``; raise it, or the body's own error, in context.

        Response headers that had arrived are kept on the request (and the
        error): a failure in the body does not hide what the server answered.
        """
        received = self.protocol.received_response(stream_id)
        if received is not None:
            request.response_headers = _split(received)[1]
        self.protocol.reset_stream(stream_id)
        error = exc
        if sender is not None:
            upload_error = await _stop(sender)
            if upload_error is not None and not isinstance(exc, asyncio.CancelledError):
                error = upload_error  # the caller's body failed: say so
        if isinstance(error, H2PoolError):
            failure = error.in_context(self.context(request))
            failure.response_headers = request.response_headers
            raise failure from error
        if error is not exc:
            raise error from exc
        raise exc

    # exchange() and fetch() are single coroutines around the waits: every
    # await level is paid again on each wake-up.

    async def exchange(self, request: OutgoingRequest) -> Reply:
        protocol = self.protocol
        stream_id, sender = await self._start(request)
        read_timeout = request.timeouts.read
        try:
            if read_timeout is None:
                response = await protocol.recv_response(stream_id)
            else:
                async with bounded(read_timeout, ReadTimeout, "waiting for the response"):
                    response = await protocol.recv_response(stream_id)
        except BaseException as exc:
            await self._failed(exc, request, stream_id, sender)
        status, fields = _split(response)
        body = _H2Body(protocol, stream_id, sender, read_timeout, self, request)
        return Reply(status, fields, body, self.http_version)

    async def fetch(self, request: OutgoingRequest) -> Fetched:
        protocol = self.protocol
        stream_id, sender = await self._start(request)
        read_timeout = request.timeouts.read
        try:
            if read_timeout is None:
                response, content, trailers = await protocol.recv_whole_response(stream_id)
            else:
                async with bounded(read_timeout, ReadTimeout, "waiting for the response"):
                    response = await protocol.recv_response(stream_id)
                content = await _read_all(protocol, stream_id, read_timeout)
                trailers = await protocol.recv_trailers(stream_id)
        except BaseException as exc:
            await self._failed(exc, request, stream_id, sender)
        if sender is not None:
            await _stop(sender)  # the response is complete: the rest of the body is not needed
        status, fields = _split(response)
        return Fetched(status, fields, content, trailers, self.http_version)


def _split(response: HeaderList) -> tuple[int, HeaderList]:
    """The status and the regular fields of a response header block."""
    if response and response[0][0] == ":status":
        status = int(response[0][1])
        # Pseudo-header fields come first (RFC 9113 section 8.3), and a
        # response has only :status (section 8.3.2): the rest is regular.
        if len(response) == 1 or not response[1][0].startswith(":"):
            return status, response[1:]
    else:
        status = 0
    return status, [(name, value) for name, value in response if not name.startswith(":")]


async def _read_all(protocol: H2Protocol, stream_id: int, read_timeout: float) -> bytes:
    """The rest of a body; the read timeout bounds each wait for data, not the whole."""
    chunks: list[bytes] = []
    while True:
        async with bounded(read_timeout, ReadTimeout, "reading the body"):
            chunk = await protocol.read_stream(stream_id)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class _H2Body:
    """The body and trailers of one HTTP/2 response stream."""

    def __init__(
        self,
        protocol: H2Protocol,
        stream_id: int,
        sender: asyncio.Task[None] | None,
        read_timeout: float | None,
        channel: Channel,
        request: OutgoingRequest,
    ) -> None:
        self._protocol = protocol
        self._stream_id = stream_id
        self._sender = sender
        self._read_timeout = read_timeout
        self._channel = channel
        self._request = request  # for error messages only
        self._done = False
        self.trailers: HeaderList = []

    async def read(self, size: int | None) -> bytes:
        try:
            if self._read_timeout is None:
                chunk = await self._protocol.read_stream(self._stream_id, size)
            elif size == -1:
                chunk = await _read_all(self._protocol, self._stream_id, self._read_timeout)
            else:
                async with bounded(self._read_timeout, ReadTimeout, "reading the body"):
                    chunk = await self._protocol.read_stream(self._stream_id, size)
            if not chunk or size == -1:
                self.trailers = await self._protocol.recv_trailers(self._stream_id)
                self._done = True
        except H2PoolError as exc:
            raise exc.in_context(self._channel.context(self._request)) from exc
        return chunk

    def reset(self) -> None:
        if not self._done:
            self._done = True
            self._protocol.reset_stream(self._stream_id)  # RST_STREAM CANCEL
        if self._sender is not None:
            self._sender.cancel()

    async def aclose(self) -> None:
        self.reset()
        if self._sender is not None:
            await _stop(self._sender)


@contextlib.asynccontextmanager
async def _step(observer: Observer, step: str, stream_id: int) -> AsyncIterator[None]:
    """Tell ``observer`` of a step of an HTTP/2 request: started, then complete or failed."""
    await observer("HTTP/2", f"{step}.started", {"stream_id": stream_id})
    try:
        yield
    except BaseException as exc:
        await observer("HTTP/2", f"{step}.failed", {"exception": exc})
        raise
    await observer("HTTP/2", f"{step}.complete", {"return_value": None})


async def _send_upload(
    protocol: H2Protocol,
    stream_id: int,
    upload: Upload,
    write_timeout: float | None,
    observer: Observer | None,
) -> None:
    try:
        if observer is None:
            await _upload(protocol, stream_id, upload, write_timeout)
        else:
            async with _step(observer, "send_request_body", stream_id):
                await _upload(protocol, stream_id, upload, write_timeout)
    except BaseException:
        protocol.reset_stream(stream_id)  # wakes the wait for the response
        raise


async def _upload(
    protocol: H2Protocol, stream_id: int, upload: Upload, write_timeout: float | None
) -> None:
    async for chunk in upload:
        if write_timeout is None:
            await protocol.send_data(stream_id, chunk)
        else:
            async with bounded(write_timeout, WriteTimeout, "sending the request body"):
                await protocol.send_data(stream_id, chunk)
    await protocol.end_stream(stream_id)


async def _stop(task: asyncio.Task[None] | None) -> BaseException | None:
    """Cancel a body sender if it still runs; return the error it ended with, if any."""
    if task is None:
        return None
    if not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return None
    except BaseException as exc:
        return exc
    return None
