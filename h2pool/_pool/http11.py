"""HTTP/1.1 channels: httpcore's HTTP/1.1 connection behind the pool's channel interface.

No HTTP/1.1 parser is written here: httpcore (with h11) speaks the protocol.
What is here is the plumbing: an asyncio transport offered to httpcore as
its network stream (so no other async library is needed), the mapping of
httpcore's exceptions to h2pool's at this one edge, and the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import httpcore

from .._core.headers import HeaderList, decode_headers
from .._core.protocol import ConnectionEvent
from .._exceptions import (
    ConnectError,
    ConnectionClosed,
    ConnectionLost,
    ConnectTimeout,
    H2PoolError,
    H2ProtocolError,
    LocalProtocolError,
    PoolTimeout,
    ReadTimeout,
    WriteTimeout,
)
from .channel import Channel, ChannelListener, Reply
from .outgoing import Observer, OutgoingRequest

__all__ = ["H11Channel", "StreamProtocol", "map_httpcore_errors"]


# httpcore's exceptions as h2pool's, most specific first (the one table of this edge):
# (httpcore class, h2pool class, never_processed when it differs from the class's).
_ERRORS: tuple[tuple[type[Exception], type[H2PoolError], bool | None], ...] = (
    (httpcore.ConnectTimeout, ConnectTimeout, None),
    (httpcore.ReadTimeout, ReadTimeout, None),
    (httpcore.WriteTimeout, WriteTimeout, None),
    (httpcore.PoolTimeout, PoolTimeout, None),
    (httpcore.ConnectError, ConnectError, None),
    (httpcore.ReadError, ConnectionLost, None),
    (httpcore.WriteError, ConnectionLost, None),
    (httpcore.RemoteProtocolError, H2ProtocolError, None),
    (httpcore.LocalProtocolError, LocalProtocolError, None),
    (httpcore.UnsupportedProtocol, LocalProtocolError, None),
    (httpcore.ConnectionNotAvailable, ConnectionClosed, True),
)


@contextlib.contextmanager
def map_httpcore_errors(context: str, peer_closed: Callable[[], bool]) -> Iterator[None]:
    """Turn httpcore's exceptions into h2pool's, naming ``context`` (request and endpoint).

    A broken response from a peer that closed the connection (``peer_closed``:
    httpcore says "Server disconnected") is a lost connection, not a protocol error.
    """
    try:
        yield
    except httpcore.RemoteProtocolError as exc:
        kind: type[H2PoolError] = ConnectionLost if peer_closed() else H2ProtocolError
        raise kind(str(exc)).in_context(context) from exc
    except Exception as exc:
        for source, kind, never_processed in _ERRORS:
            if isinstance(exc, source):
                error = kind(str(exc) or type(exc).__name__, never_processed=never_processed)
                raise error.in_context(context) from exc
        raise


class StreamProtocol(asyncio.Protocol):
    """Buffers what a transport receives, for :class:`_AsyncioStream` to read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: Exception | None = None
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not isinstance(): uvloop's transports have asyncio.Transport's
        # methods without deriving from it.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake_reader()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake_reader()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    async def wait_readable(self) -> None:
        if not self.buffer and not self.eof:
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable

    async def wait_writable(self) -> None:
        if self._writable is not None:
            await self._writable


class _AsyncioStream(httpcore.AsyncNetworkStream):
    """An asyncio transport as httpcore's network stream."""

    def __init__(self, protocol: StreamProtocol) -> None:
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        try:
            async with asyncio.timeout(timeout):
                await protocol.wait_readable()
        except TimeoutError:
            raise httpcore.ReadTimeout("no data within the read timeout") from None
        if not protocol.buffer and protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error))
        data = bytes(protocol.buffer[:max_bytes])
        del protocol.buffer[:max_bytes]
        return data  # b"" at EOF

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        transport.write(buffer)
        try:
            async with asyncio.timeout(timeout):
                await self._protocol.wait_writable()
        except TimeoutError:
            raise httpcore.WriteTimeout("the peer did not read within the write timeout") from None

    async def aclose(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise NotImplementedError("TLS is set up before the stream is handed over")

    def get_extra_info(self, info: str) -> Any:
        protocol = self._protocol
        if info == "is_readable":  # httpcore: has an idle connection been closed by the peer?
            return bool(protocol.buffer) or protocol.eof
        if protocol.transport is None:
            return None
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        return protocol.transport.get_extra_info(name)


class H11Channel(Channel):
    """An HTTP/1.1 connection (httpcore), carrying one request at a time."""

    http_version = "HTTP/1.1"

    def __init__(
        self,
        protocol: StreamProtocol,
        address: str,
        scheme: str,
        host: str,
        port: int,
        authority: bytes,
    ) -> None:
        super().__init__(address)
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self._origin = httpcore.Origin(scheme.encode(), host.encode(), port)
        self._connection = httpcore.AsyncHTTP11Connection(
            origin=self._origin, stream=_AsyncioStream(protocol)
        )
        self._authority = authority
        self._busy = False
        self._idle = asyncio.Event()  # set while no request is in progress
        self._idle.set()
        self._error: H2PoolError | None = None
        self._listener: ChannelListener | None = None
        self._opened_at = self._loop.time()

    @property
    def functional(self) -> bool:
        return self._usable()

    @property
    def accepting_streams(self) -> bool:
        return self._usable()

    def _usable(self) -> bool:
        """Not failed, and not closed or expired while idle (a pure read)."""
        if self._error is not None:
            return False
        connection = self._connection
        return self._busy or not (connection.is_closed() or connection.has_expired())

    @property
    def open_streams(self) -> int:
        return int(self._busy)

    @property
    def max_streams(self) -> int:
        return 1

    @property
    def last_received(self) -> float:
        # HTTP/1.1 has no PING; httpcore notices a peer that closed an idle
        # connection (has_expired), so a live one never counts as stale.
        return self._loop.time()

    @property
    def rtt(self) -> float | None:
        return None

    @property
    def ping_interval(self) -> float:
        return 0.0

    @property
    def error(self) -> H2PoolError | None:
        return self._error

    def _fail(self, error: H2PoolError) -> None:
        if self._error is None:
            self._error = error
            self._notify(ConnectionEvent.CLOSED)

    def _notify(self, event: ConnectionEvent) -> None:
        if self._listener is not None:
            self._listener(self, event)

    def set_listener(self, listener: ChannelListener | None) -> None:
        self._listener = listener

    async def wait_functional(self) -> float:
        if not self._usable():
            raise self._error or ConnectionClosed("the HTTP/1.1 connection was closed")
        return 0.0

    def close(self) -> None:
        self._fail(ConnectionClosed("connection closed locally"))
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    async def shutdown(self, timeout: float | None) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._idle.wait()  # the request in progress, if any
        finally:
            # Also when the wait is cancelled (the pool closing while this
            # connection drains): the socket must not outlive the pool.
            self._fail(ConnectionClosed("connection shut down"))
            if self._protocol.transport is not None:
                self._protocol.transport.close()
        await self._connection.aclose()

    async def exchange(self, request: OutgoingRequest) -> Reply:
        timeouts = request.timeouts
        content = request.body if request.body is not None else request.upload
        outgoing = httpcore.Request(
            request.wire_method,
            httpcore.URL(
                scheme=self._origin.scheme,
                host=self._origin.host,
                port=self._origin.port,
                target=request.wire_path,
            ),
            headers=[(b"host", self._authority), *request.headers],
            content=content if content is not None else b"",
            extensions={"timeout": {"read": timeouts.read, "write": timeouts.write}},
        )
        if request.observer is not None:
            outgoing.extensions["trace"] = _sending_steps(request.observer)
        self.reserved -= 1
        self._set_busy(True)
        context = self.context(request)
        try:
            with map_httpcore_errors(context, self.peer_closed):
                response = await self._connection.handle_async_request(outgoing)
        except BaseException as exc:
            self._set_busy(False)
            if self._connection.is_closed():  # httpcore closes it after most failures
                reason = exc if isinstance(exc, H2PoolError) else None
                self._fail(reason or ConnectionClosed("the HTTP/1.1 connection was closed"))
            raise
        # Lower case, as HTTP/2 requires, so callers see one form for both.
        headers = [(name.lower(), value) for name, value in decode_headers(response.headers)]
        # HTTP/1.0 servers (Python's http.server) answer as such; say so.
        version = response.extensions.get("http_version", b"HTTP/1.1").decode("ascii")
        return Reply(response.status, headers, _H11Body(self, response, context), version)

    def peer_closed(self) -> bool:
        """Whether the peer closed the connection (EOF or lost)."""
        return self._protocol.eof

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        if busy:
            self._idle.clear()
        else:
            self._idle.set()

    def released(self) -> None:
        """The response of the request in progress was read or abandoned."""
        self._set_busy(False)
        if self._usable():
            self._notify(ConnectionEvent.SLOT_FREED)


# httpcore's trace events of sending a request: those, and only those, an observer is told of.
_SENDING_STEPS = ("send_request_headers.", "send_request_body.")


def _sending_steps(observer: Observer) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """httpcore's ``trace`` extension, telling ``observer`` of the steps of sending."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        step = event.partition(".")[2]  # without httpcore's "http11." prefix
        if step.startswith(_SENDING_STEPS):
            # httpcore's own request object is no one else's business.
            await observer("HTTP/1.1", step, {k: v for k, v in info.items() if k != "request"})

    return trace


class _H11Body:
    """The body of one HTTP/1.1 response; HTTP/1.1 responses here have no trailers."""

    def __init__(self, channel: H11Channel, response: httpcore.Response, context: str) -> None:
        self._channel = channel
        self._response = response
        self._context = context
        self._chunks = response.aiter_stream()
        self.trailers: HeaderList = []

    async def read(self, size: int | None) -> bytes:
        with map_httpcore_errors(self._context, self._channel.peer_closed):
            if size == -1:
                return b"".join([chunk async for chunk in self._chunks])
            return await anext(self._chunks, b"")

    def reset(self) -> None:
        """Nothing to do at once: HTTP/1.1 abandons a response by closing in ``aclose()``."""

    async def aclose(self) -> None:
        try:
            with map_httpcore_errors(self._context, self._channel.peer_closed):
                await self._response.aclose()
        finally:
            self._channel.released()
