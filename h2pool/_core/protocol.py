"""H2Protocol: where h2's state machine meets asyncio, for clients and servers.

One ``H2Protocol`` drives one HTTP/2 connection. It is an ``asyncio.Protocol``:
bytes received are fed to h2 synchronously and the resulting events update
per-stream state and wake whoever waits; nothing here runs a task per stream.
Output is coalesced: frames queued during one pass of the event loop leave in
one ``transport.write``.

Every await ends. Waiters are woken by the event that satisfies them or by
the first error that makes them impossible (stream reset, GOAWAY, connection
lost, health check failed); that error is stored and raised again by every
later call, as httpcore does.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import h2.events as ev
from h2.errors import ErrorCodes
from h2.exceptions import H2Error, NoAvailableStreamIDError
from h2.settings import SettingCodes
from hyperframe.frame import ExtensionFrame

from .._exceptions import (
    ConnectError,
    ConnectionClosed,
    ConnectionDead,
    ConnectionLost,
    DrainInterrupted,
    H2ConnectionError,
    H2PoolError,
    H2ProtocolError,
    StreamClosed,
    StreamError,
    StreamRefused,
    StreamReset,
)
from .config import H2Config
from .connection import MAX_STREAM_ID, Connection
from .headers import HeaderList, HeadersIn, decode_headers, encode_headers
from .health import HealthAction, check_health
from .priority import PRIORITY_UPDATE_FRAME, Priority, parse_priority_update
from .stream import Stream

__all__ = ["ConnectedCallback", "ConnectionEvent", "H2Protocol", "Listener"]

logger = logging.getLogger("h2pool.core")

#: What ``start_server`` calls with each new server-side protocol.
ConnectedCallback = Callable[["H2Protocol"], Any]


class ConnectionEvent(enum.Enum):
    """What changed on a connection, as told to its listener (see ``set_listener``)."""

    SLOT_FREED = "slot_freed"  #: a stream this side opened has closed
    LIMIT_CHANGED = "limit_changed"  #: the peer changed MAX_CONCURRENT_STREAMS
    DRAINING = "draining"  #: GOAWAY sent or received: no new streams
    CLOSED = "closed"  #: the connection is unusable; ``error`` says why


#: A function told of every :class:`ConnectionEvent` of a connection.
Listener = Callable[["H2Protocol", ConnectionEvent], None]

# How many ended streams keep their final state (headers, trailers, error) so
# that late calls such as recv_trailers() still answer; older ones are
# forgotten, like h2's own bounded record of closed streams.
_FINISHED_KEPT = 128
# Queued output above which the send pump hands bytes to the transport at
# once, so that transport back-pressure (pause_writing) is seen in time.
_PUMP_FLUSH = 256 * 1024
# Used by wait_functional() and graceful shutdown when no functional_timeout
# was configured: a PING must still be answered in bounded time.
_DEFAULT_PING_TIMEOUT = 10.0
_TOO_MANY_PINGS = b"too_many_pings"


def _error_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


class H2Protocol(asyncio.Protocol):
    """One HTTP/2 connection, client or server side.

    Create it through :func:`h2pool.open_connection` or
    :func:`h2pool.start_server` rather than directly.

    Args:
        client_side: True for the side that opens streams with requests.
        functional_timeout: Seconds of silence after which a PING is sent
            while somebody waits on the connection, and then seconds without
            any frame after which the connection is declared dead. None turns
            the health check off for streams (``wait_functional`` still pings).
        concurrency: Server: the MAX_CONCURRENT_STREAMS advertised, with
            excess streams refused. Client: also a local cap on open streams,
            below the peer's own limit.
        config: Window sizes and other connection settings.
        ping_interval: Silence before a PING, when it must differ from
            ``functional_timeout`` (the pool passes a doubled interval to
            peers that complained of too many pings).
        authority: ``:authority`` added to requests that do not give one.
        on_connected: Server side: called with this protocol once connected.
    """

    def __init__(
        self,
        *,
        client_side: bool,
        functional_timeout: float | None = None,
        concurrency: int = 100,
        config: H2Config | None = None,
        ping_interval: float | None = None,
        authority: str | None = None,
        on_connected: ConnectedCallback | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if functional_timeout is not None and functional_timeout <= 0:
            raise ValueError("functional_timeout must be positive")
        self._loop = asyncio.get_running_loop()
        self._config = config or H2Config()
        self._client_side = client_side
        self._concurrency = concurrency
        self._conn = Connection(
            client_side=client_side, config=self._config, concurrency=concurrency
        )
        self._transport: asyncio.Transport | None = None
        self._authority = authority
        self._scheme = b"http"
        self._on_connected = on_connected
        self._handler: asyncio.Future[Any] | None = None  # referenced so it is not collected
        self._listener: Listener | None = None

        self._streams: dict[int, Stream] = {}
        self._finished: dict[int, Stream] = {}
        self._requests: deque[tuple[int, HeaderList]] = deque()
        self._request_waiter: asyncio.Future[None] | None = None
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._outbound_limit = concurrency
        self._sendable: dict[int, Stream] = {}
        self._writable = True
        self._turns = itertools.count(MAX_STREAM_ID + 1)
        self._flush_handle: asyncio.Handle | None = None

        # Health (see health.py).
        self._functional_timeout = functional_timeout
        self._ping_timeout = functional_timeout or _DEFAULT_PING_TIMEOUT
        self._ping_interval = ping_interval or functional_timeout or _DEFAULT_PING_TIMEOUT
        self._last_received = self._loop.time()
        self._ping_payloads = itertools.count(random.getrandbits(63))
        self._ping_payload: bytes | None = None
        self._ping_sent_at: float | None = None
        self._ping_waiters: list[asyncio.Future[float]] = []
        self._health_timer: asyncio.TimerHandle | None = None
        self._rtt: float | None = None

        # Lifecycle.
        self._goaway_last_id: int | None = None  # lowest last_stream_id received
        self._goaway_sent_id: int | None = None  # lowest last_stream_id sent
        self._draining = False  # no new streams; close when none is open
        self._error: H2PoolError | None = None  # why the connection is unusable
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._done.set_result(None)

        self._handlers: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.RequestReceived: self._on_request,
            ev.ResponseReceived: self._on_response,
            ev.TrailersReceived: self._on_trailers,
            ev.InformationalResponseReceived: self._on_informational,
            ev.DataReceived: self._on_data,
            ev.StreamEnded: self._on_stream_ended,
            ev.StreamReset: self._on_stream_reset,
            ev.WindowUpdated: self._on_window_updated,
            ev.RemoteSettingsChanged: self._on_settings_changed,
            ev.PingAckReceived: self._on_ping_ack,
            ev.ConnectionTerminated: self._on_goaway,
            ev.UnknownFrameReceived: self._on_unknown_frame,
        }

    # ------------------------------------------------------------------
    # Properties

    @property
    def functional(self) -> bool:
        """False once the connection is dead, lost or closed; True before."""
        return self._error is None

    @property
    def error(self) -> H2PoolError | None:
        """Why the connection is unusable (dead, lost, closed), or None while it is usable."""
        return self._error

    @property
    def rtt(self) -> float | None:
        """Round-trip time in seconds of the latest PING answered, or None."""
        return self._rtt

    @property
    def accepting_streams(self) -> bool:
        """Whether a new stream may be started: open, no GOAWAY, not draining."""
        return self._error is None and not self._draining and self._goaway_last_id is None

    @property
    def open_streams(self) -> int:
        """Streams currently open on this connection, both directions."""
        return self._conn.outbound_open + self._conn.inbound_open

    @property
    def max_streams(self) -> int:
        """How many streams this side may have open at once right now."""
        return self._outbound_limit

    @property
    def last_received(self) -> float:
        """Event-loop time at which bytes were last received."""
        return self._last_received

    @property
    def ping_interval(self) -> float:
        """Silence before a health PING; doubled by each ``too_many_pings`` GOAWAY."""
        return self._ping_interval

    @property
    def goaway_received(self) -> bool:
        """Whether the peer sent GOAWAY (the connection is draining)."""
        return self._goaway_last_id is not None

    @property
    def goaway_last_stream_id(self) -> int | None:
        """The lowest last_stream_id of the GOAWAY frames received, or None."""
        return self._goaway_last_id

    async def wait_closed(self) -> None:
        """Wait until the transport is closed."""
        await asyncio.shield(self._closed)

    def set_listener(self, listener: Listener | None) -> None:
        """Call ``listener(self, event)`` on every :class:`ConnectionEvent` from now on.

        The listener runs synchronously inside h2pool's event handling: it
        must not block or raise. The pool uses it to wake requests waiting
        for capacity and to notice failures without polling.
        """
        self._listener = listener

    def _notify(self, event: ConnectionEvent) -> None:
        listener = self._listener
        if listener is not None:
            try:
                listener(self, event)
            except Exception:  # a listener bug must not break the connection
                logger.exception("connection listener failed")

    # ------------------------------------------------------------------
    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the connection preface; on the server side, hand the protocol over."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=self._config.write_buffer_high)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._scheme = b"https"
            alpn = ssl_object.selected_alpn_protocol()
            if alpn not in (None, "h2"):
                self._error = ConnectError(f"the peer chose {alpn!r} with ALPN, not 'h2'")
                transport.abort()
                return
        self._last_received = self._loop.time()
        self._conn.initiate_connection()
        extra_window = self._config.connection_window - 65_535
        if extra_window > 0:
            self._conn.increment_flow_control_window(extra_window)
        self._flush()
        if self._on_connected is not None:
            self._start_handler(self._on_connected)

    def _start_handler(self, callback: ConnectedCallback) -> None:
        result = callback(self)
        if inspect.isawaitable(result):
            handler = asyncio.ensure_future(result)
            handler.add_done_callback(self._handler_done)
            self._handler = handler

    @staticmethod
    def _handler_done(handler: asyncio.Future[Any]) -> None:
        # A handler that stops because its connection ended did nothing wrong.
        if handler.cancelled():
            return
        exc = handler.exception()
        if isinstance(exc, H2ConnectionError):
            logger.debug("connection handler ended: %s", exc)
        elif exc is not None:
            logger.error("connection handler failed", exc_info=exc)

    def data_received(self, data: bytes) -> None:
        """Feed received bytes to h2 and act on the events."""
        self._last_received = self._loop.time()
        handlers = self._handlers
        try:
            for event in self._conn.receive_data(data):
                handler = handlers.get(type(event))
                if handler is not None:
                    handler(event)
                # Other events (PING, SETTINGS ack, PRIORITY, ALTSVC) need no action.
        except H2Error as exc:
            # h2 has queued a GOAWAY naming the violation.
            code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
            self._fail(H2ProtocolError(f"peer violated HTTP/2: {exc}", error_code=code))
            self._close_transport()
            return
        except Exception as exc:  # a defect must not leave awaits hanging
            logger.exception("failed to process received data")
            self._fail(H2ProtocolError(f"cannot process received data: {exc!r}"))
            self._close_transport(abort=True)
            return
        self._flush()

    def eof_received(self) -> bool | None:
        """The peer closed its side: nothing more will arrive."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail everything still pending; the connection is gone."""
        if self._error is None:
            reason = f": {exc}" if exc is not None else ""
            self._fail(ConnectionLost(f"connection lost{reason}"))
        self._transport = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        """The transport buffer is full: stop sending DATA until it drains."""
        self._writable = False

    def resume_writing(self) -> None:
        """The transport buffer drained: resume sending DATA."""
        self._writable = True
        self._pump()

    # ------------------------------------------------------------------
    # Client API

    async def start_request(self, headers: HeadersIn, *, end_stream: bool = False) -> int:
        """Open a stream and send request headers; return the stream id.

        Waits for a free slot under the peer's MAX_CONCURRENT_STREAMS (and
        ``concurrency``). ``:scheme`` and ``:authority`` are added when missing.

        Raises:
            ConnectionClosed: The connection takes no new streams (GOAWAY,
                shutdown); ``never_processed`` is True, so retry elsewhere.
            H2ConnectionError: The connection failed (``never_processed``).
            H2ProtocolError: The headers are invalid.
        """
        if not self._client_side:
            raise H2ProtocolError("start_request() is for the client side")
        self._check_new_stream()
        if self._conn.outbound_open >= self._outbound_limit or self._slot_waiters:
            await self._wait_for_slot()
        conn = self._conn
        try:
            stream_id = conn.get_next_available_stream_id()
        except NoAvailableStreamIDError:
            self._draining = True
            raise ConnectionClosed(
                "stream ids exhausted on this connection", never_processed=True
            ) from None
        defaults = [(b":scheme", self._scheme)]
        if self._authority is not None:
            defaults.append((b":authority", self._authority.encode()))
        wire = encode_headers(headers, defaults)
        try:
            conn.send_headers(stream_id, wire, end_stream=end_stream)
        except H2Error as exc:
            conn.streams.pop(stream_id, None)
            raise H2ProtocolError(
                f"cannot send request headers: {exc}", stream_id=stream_id, never_processed=True
            ) from None
        stream = Stream(stream_id)
        stream.end_queued = stream.local_closed = end_stream
        self._streams[stream_id] = stream
        conn.outbound_open += 1
        self._watch()
        self._schedule_flush()
        return stream_id

    async def recv_response(self, stream_id: int) -> HeaderList:
        """Wait for the final response headers (1xx responses are skipped)."""
        stream = self._get_stream(stream_id)
        while stream.headers is None:
            if stream.error is not None:
                raise stream.error
            if stream.ended:
                raise StreamClosed("stream ended without a response", stream_id=stream_id)
            await self._wait_receive(stream)
        return stream.headers

    # ------------------------------------------------------------------
    # Server API

    async def recv_request(self) -> tuple[int, HeaderList]:
        """Wait for the next request: (stream id, request headers).

        Raises:
            H2ConnectionError: The connection ended; no more requests come.
        """
        while not self._requests:
            if self._error is not None:
                raise self._error
            if self._goaway_sent_id is not None or self._goaway_last_id is not None:
                raise ConnectionClosed("no more requests: the connection is draining")
            waiter = self._request_waiter
            if waiter is None or waiter.done():
                waiter = self._request_waiter = self._loop.create_future()
            await waiter
        return self._requests.popleft()

    async def start_response(
        self, stream_id: int, headers: HeadersIn, *, end_stream: bool = False
    ) -> None:
        """Send response headers (informational 1xx ones may come first)."""
        stream = self._get_live_stream(stream_id)
        self._send_headers(stream, encode_headers(headers), end_stream)

    # ------------------------------------------------------------------
    # Both sides: streams

    async def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send ``data`` on a stream, waiting for flow-control window as needed.

        Returns once every byte has been handed to the transport; data is
        split into frames no larger than the peer's SETTINGS_MAX_FRAME_SIZE.
        Cancelling the wait does not take back what was accepted: reset the
        stream to abandon it.
        """
        await self._wait_sent(self._queue_data(stream_id, data, end_stream))

    def queue_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Queue ``data`` on a stream and return at once, without back-pressure.

        The data leaves as flow control allows, like with :meth:`send_data`;
        a failure shows on the stream's next call (such as ``recv_response``).
        For callers that already hold the whole body in memory.
        """
        self._queue_data(stream_id, data, end_stream)

    def _queue_data(self, stream_id: int, data: bytes, end_stream: bool) -> Stream:
        stream = self._get_live_stream(stream_id)
        if stream.end_queued:
            raise StreamClosed(f"stream {stream_id} was already ended", stream_id=stream_id)
        if data or end_stream:
            stream.end_queued = end_stream
            view = memoryview(data)
            if view.itemsize != 1:  # count bytes, not items, of typed buffers
                view = view.cast("B")
            stream.outbound.append((view, end_stream))
            self._sendable[stream_id] = stream
            self._pump()
        return stream

    async def end_stream(self, stream_id: int) -> None:
        """End the local side of a stream (an empty DATA frame with END_STREAM)."""
        await self.send_data(stream_id, b"", end_stream=True)

    async def send_trailers(self, stream_id: int, trailers: HeadersIn) -> None:
        """Send trailers after any queued data; this ends the stream."""
        stream = self._get_live_stream(stream_id)
        if stream.end_queued:
            raise StreamClosed(f"stream {stream_id} was already ended", stream_id=stream_id)
        stream.end_queued = True
        block = encode_headers(trailers)
        # h2 cannot send an empty header block: end with empty DATA instead.
        stream.outbound.append(block if block else (memoryview(b""), True))
        self._sendable[stream_id] = stream
        self._pump()
        await self._wait_sent(stream)

    async def read_stream(self, stream_id: int, size: int | None = None) -> bytes:
        """Read received data of a stream.

        Args:
            stream_id: The stream.
            size: None for the next chunk as received; -1 for everything up
                to the end of the stream; n > 0 for exactly n bytes, fewer
                only at the end of the stream.

        Returns:
            The data; ``b""`` only at the end of the stream.

        Raises:
            StreamReset: The peer reset the stream.
            H2ConnectionError: The connection ended before the stream did.
        """
        stream = self._get_stream(stream_id)
        if size is None:
            while not stream.chunks:
                if stream.ended:
                    return b""
                if stream.error is not None:
                    raise stream.error
                await self._wait_receive(stream)
            chunk = stream.chunks.popleft()
            self._consumed(stream, len(chunk))
            return chunk
        parts: list[bytes] = []
        wanted = size if size > 0 else -1
        while wanted:
            chunks = stream.chunks
            if chunks:
                taken = 0
                while chunks and wanted:
                    chunk = chunks.popleft()
                    if 0 < wanted < len(chunk):
                        chunks.appendleft(chunk[wanted:])
                        chunk = chunk[:wanted]
                    parts.append(chunk)
                    taken += len(chunk)
                    if wanted > 0:
                        wanted -= len(chunk)
                self._consumed(stream, taken)
                continue
            if stream.ended:
                break
            if stream.error is not None:
                raise stream.error
            await self._wait_receive(stream)
        return b"".join(parts)

    async def recv_trailers(self, stream_id: int) -> HeaderList:
        """Wait for the end of the stream and return its trailers (empty if none).

        Read the body first: waiting for trailers while unread data is
        buffered could wait forever on flow control, so it is an error.
        """
        stream = self._get_stream(stream_id)
        while not stream.ended:
            if stream.error is not None:
                raise stream.error
            if stream.chunks:
                raise StreamError(
                    f"stream {stream_id} has unread data: read it before the trailers",
                    stream_id=stream_id,
                )
            await self._wait_receive(stream)
        return stream.trailers or []

    def reset_stream(self, stream_id: int, error_code: int = ErrorCodes.CANCEL) -> Awaitable[None]:
        """Abort a stream with RST_STREAM and free it at once.

        Safe to call from cleanup code and on streams that already ended
        (then it only frees what is still buffered). The reset happens before
        this returns; the result may be awaited or ignored.
        """
        stream = self._streams.get(stream_id)
        if stream is not None:
            error = StreamClosed(
                f"stream {stream_id} was reset locally ({_error_name(error_code)})",
                stream_id=stream_id,
                error_code=error_code,
            )
            self._abort_stream(stream, error_code, error)
        return self._done

    def _abort_stream(self, stream: Stream, error_code: int, error: H2PoolError) -> None:
        """Reset a stream from this side (RST_STREAM) and drop it."""
        if not stream.closed and self._error is None:
            with contextlib.suppress(H2Error):  # h2 may already see it closed
                self._conn.reset_stream(stream.id, error_code)
            self._schedule_flush()
        # Abandoned here: what was received must not be read as if complete
        # (a stream refused by our GOAWAY must never be processed).
        stream.ended = False
        self._drop_stream(stream, error)

    def _drop_stream(self, stream: Stream, error: H2PoolError) -> None:
        """Fail every wait on a stream that is over, and free it.

        Data of a stream whose receiving side had ended stays readable.
        """
        stream.fail(error)
        stream.reset = True
        self._close_stream(stream)

    def set_priority(self, stream_id: int, priority: Priority) -> None:
        """Set the RFC 9218 priority by which this side schedules the stream's DATA."""
        stream = self._get_live_stream(stream_id)
        stream.urgency = priority.urgency
        if priority.incremental != stream.incremental:
            stream.incremental = priority.incremental
            stream.rank = next(self._turns) if priority.incremental else stream_id

    # ------------------------------------------------------------------
    # Both sides: the connection

    async def wait_functional(self) -> float:
        """Wait until the connection is proven alive; return the round-trip time.

        If a frame arrived within the functional timeout and an RTT is known,
        returns it at once; otherwise sends a PING (unless one is already
        outstanding) and returns its round-trip time in seconds.

        Raises:
            H2ConnectionError: The connection is or becomes dead or closed.
        """
        if self._error is not None:
            raise self._error
        now = self._loop.time()
        if (
            self._rtt is not None
            and self._ping_sent_at is None
            and now - self._last_received < self._ping_timeout
        ):
            return self._rtt
        return await self._ping_round_trip(send=self._ping_sent_at is None)

    async def _ping_round_trip(self, *, send: bool) -> float:
        # A new PING replaces an outstanding one: its ACK proves the peer has
        # read everything sent before it (used by graceful shutdown).
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._ping_waiters.append(waiter)
        try:
            if send:
                self._send_ping()
            self._watch()
            return await waiter
        finally:
            if waiter in self._ping_waiters:
                self._ping_waiters.remove(waiter)

    def send_goaway(
        self,
        error_code: int = ErrorCodes.NO_ERROR,
        last_stream_id: int | None = None,
        debug_data: bytes = b"",
    ) -> None:
        """Send GOAWAY and stop taking new streams; open ones may finish.

        ``last_stream_id`` defaults to the highest stream the peer opened.
        Streams the peer opened above it are refused (REFUSED_STREAM): by
        sending it, this side promises not to process them.
        """
        if self._error is not None:
            return
        conn = self._conn
        if last_stream_id is None:
            last_stream_id = conn.highest_inbound_stream_id
        if self._goaway_sent_id is not None:
            last_stream_id = min(last_stream_id, self._goaway_sent_id)
        self._goaway_sent_id = last_stream_id
        self._draining = True
        conn.send_goaway(error_code, last_stream_id, debug_data)
        for stream in list(self._streams.values()):
            if not self._locally_initiated(stream.id) and stream.id > last_stream_id:
                error = StreamRefused(
                    f"stream {stream.id} refused by our GOAWAY", stream_id=stream.id
                )
                self._abort_stream(stream, ErrorCodes.REFUSED_STREAM, error)
        self._drop_requests_above(last_stream_id)
        self._fail_slot_waiters()
        self._wake_request_waiter()
        self._schedule_flush()
        self._notify(ConnectionEvent.DRAINING)
        self._close_if_drained()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Close gracefully: GOAWAY(NO_ERROR), let open streams finish, then close.

        A server first announces the shutdown with last_stream_id 2^31-1 and a
        PING, and sends the final GOAWAY once the PING is answered, so that
        requests already in flight towards it are not refused (RFC 9113
        section 6.8). After ``timeout`` seconds, streams still open are
        abandoned and the connection is closed anyway.
        """
        if self._transport is None:
            return
        try:
            async with asyncio.timeout(timeout):
                if self._error is None and not self._client_side and self._goaway_sent_id is None:
                    self._conn.send_goaway(ErrorCodes.NO_ERROR, MAX_STREAM_ID)
                    with contextlib.suppress(TimeoutError, H2PoolError):
                        async with asyncio.timeout(self._ping_timeout):
                            await self._ping_round_trip(send=True)
                self.send_goaway(ErrorCodes.NO_ERROR)
                await asyncio.shield(self._closed)
        except TimeoutError:
            self._fail(ConnectionClosed("connection shut down before its streams finished"))
            self._close_transport()
            await asyncio.shield(self._closed)

    def close_connection(self) -> None:
        """Close at once: every pending operation fails with ConnectionClosed."""
        if self._transport is None:
            return
        if self._error is None:
            self._conn.send_goaway(ErrorCodes.NO_ERROR)
            self._fail(ConnectionClosed("connection closed locally"))
        self._close_transport()

    # ------------------------------------------------------------------
    # h2 events

    def _on_request(self, event: ev.RequestReceived) -> None:
        stream_id: int = event.stream_id
        refuse = (self._goaway_sent_id is not None and stream_id > self._goaway_sent_id) or (
            self._conn.inbound_open >= self._concurrency
        )
        if refuse or self._error is not None:
            # RFC 9113 section 5.1.2 / 8.7: refused streams were not processed.
            self._conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self._conn.forget_stream(stream_id)
            return
        stream = Stream(stream_id)
        stream.headers = headers = decode_headers(event.headers)
        for name, value in headers:
            if name == "priority":
                priority = Priority.parse(value)
                stream.urgency, stream.incremental = priority.urgency, priority.incremental
        self._streams[stream_id] = stream
        self._conn.inbound_open += 1
        self._requests.append((stream_id, headers))
        self._wake_request_waiter()
        self._watch()

    def _on_response(self, event: ev.ResponseReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.headers = decode_headers(event.headers)
            stream.wake_receiver()

    def _on_informational(self, event: ev.InformationalResponseReceived) -> None:
        logger.debug("stream %d: informational response %s", event.stream_id, event.headers)

    def _on_trailers(self, event: ev.TrailersReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.trailers = decode_headers(event.headers)

    def _on_data(self, event: ev.DataReceived) -> None:
        stream_id: int = event.stream_id
        data: bytes = event.data
        flow_length: int = event.flow_controlled_length
        stream = self._streams.get(stream_id)
        if stream is None or stream.reset:
            # Nobody will read it: give the window back at once.
            self._conn.acknowledge_received_data(flow_length, stream_id)
            return
        if flow_length > len(data):  # padding is never read: return it now
            self._conn.acknowledge_received_data(flow_length - len(data), stream_id)
        if data:
            stream.chunks.append(data)
            stream.buffered += len(data)
            stream.wake_receiver()

    def _on_stream_ended(self, event: ev.StreamEnded) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.ended = True
            stream.wake_receiver()
            if stream.local_closed:
                self._close_stream(stream)

    def _on_stream_reset(self, event: ev.StreamReset) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        code = int(event.error_code or 0)
        stream_id = stream.id
        if stream.ended and code == ErrorCodes.NO_ERROR:
            # RFC 9113 section 8.1: the response is complete and the peer
            # wants no more of the request body. Not an error.
            stream.outbound.clear()
            stream.wake_sender()
            stream.reset = True
            self._close_stream(stream)
            return
        error: H2PoolError
        if not event.remote_reset:
            error = H2ProtocolError(
                f"stream {stream_id}: peer broke HTTP/2 ({_error_name(code)}); stream reset",
                stream_id=stream_id,
                error_code=code,
            )
        elif code == ErrorCodes.REFUSED_STREAM:
            error = StreamRefused(
                f"stream {stream_id} refused by the peer (REFUSED_STREAM)",
                stream_id=stream_id,
                error_code=code,
            )
        else:
            error = StreamReset(
                f"stream {stream_id} reset by the peer ({_error_name(code)})",
                stream_id=stream_id,
                error_code=code,
            )
        self._drop_stream(stream, error)

    def _on_window_updated(self, event: ev.WindowUpdated) -> None:
        if self._sendable:
            self._pump()

    def _on_settings_changed(self, event: ev.RemoteSettingsChanged) -> None:
        changed = event.changed_settings
        if SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            peer_limit = changed[SettingCodes.MAX_CONCURRENT_STREAMS].new_value
            self._outbound_limit = min(self._concurrency, peer_limit)
            # Woken waiters re-check the limit, so a lowered limit is safe too.
            self._wake_slot_waiters()
            self._notify(ConnectionEvent.LIMIT_CHANGED)
        if self._sendable and (
            SettingCodes.INITIAL_WINDOW_SIZE in changed or SettingCodes.MAX_FRAME_SIZE in changed
        ):
            self._pump()

    def _on_ping_ack(self, event: ev.PingAckReceived) -> None:
        if event.ping_data != self._ping_payload or self._ping_sent_at is None:
            return
        rtt = self._loop.time() - self._ping_sent_at
        self._rtt = rtt
        self._ping_payload = self._ping_sent_at = None
        waiters, self._ping_waiters = self._ping_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(rtt)

    def _on_goaway(self, event: ev.ConnectionTerminated) -> None:
        code = int(event.error_code or 0)
        last_id = event.last_stream_id or 0
        debug = event.additional_data or b""
        log = logger.debug if code == ErrorCodes.NO_ERROR else logger.warning
        log("GOAWAY received: %s, last_stream_id=%d, %r", _error_name(code), last_id, debug)
        if code == ErrorCodes.ENHANCE_YOUR_CALM and _TOO_MANY_PINGS in debug:
            self._ping_interval *= 2
            logger.warning("peer sent too_many_pings: ping interval now %.3fs", self._ping_interval)
        if self._goaway_last_id is not None:
            last_id = min(last_id, self._goaway_last_id)
        self._goaway_last_id = last_id
        self._draining = True
        for stream in list(self._streams.values()):
            if self._locally_initiated(stream.id) and stream.id > last_id and not stream.closed:
                # RFC 9113 section 6.8: never processed, safe to retry anywhere.
                self._conn.abandon_stream(stream.id)
                error = StreamRefused(
                    f"stream {stream.id} not processed: GOAWAY last_stream_id={last_id}",
                    stream_id=stream.id,
                    error_code=code,
                )
                self._drop_stream(stream, error)
        self._fail_slot_waiters()
        self._wake_request_waiter()
        self._notify(ConnectionEvent.DRAINING)
        self._close_if_drained()

    def _on_unknown_frame(self, event: ev.UnknownFrameReceived) -> None:
        frame = event.frame
        if not isinstance(frame, ExtensionFrame) or frame.type != PRIORITY_UPDATE_FRAME:
            return
        if self._client_side:
            return
        update = parse_priority_update(frame.body)
        stream = self._streams.get(update[0]) if update is not None else None
        if update is not None and stream is not None:
            priority = update[1]
            stream.urgency, stream.incremental = priority.urgency, priority.incremental

    # ------------------------------------------------------------------
    # Streams: lookup, waiting, closing

    def _locally_initiated(self, stream_id: int) -> bool:
        return (stream_id % 2 == 1) == self._client_side

    def _get_stream(self, stream_id: int) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._finished.get(stream_id)
            if stream is None:
                if self._error is not None:
                    raise self._error
                raise StreamClosed(f"stream {stream_id} is unknown or closed", stream_id=stream_id)
        return stream

    def _get_live_stream(self, stream_id: int) -> Stream:
        stream = self._get_stream(stream_id)
        if stream.error is not None:
            raise stream.error
        if stream.reset or stream.local_closed:
            raise StreamClosed(f"stream {stream_id} is closed for sending", stream_id=stream_id)
        return stream

    async def _wait_receive(self, stream: Stream) -> None:
        waiter = stream.recv_waiter
        if waiter is None or waiter.done():
            waiter = stream.recv_waiter = self._loop.create_future()
        await waiter

    async def _wait_sent(self, stream: Stream) -> None:
        while stream.outbound:
            if stream.error is not None:
                raise stream.error
            waiter = stream.send_waiter
            if waiter is None or waiter.done():
                waiter = stream.send_waiter = self._loop.create_future()
            await waiter
        if stream.error is not None:
            raise stream.error

    def _consumed(self, stream: Stream, size: int) -> None:
        # Flow control: the window reopens only as the application reads.
        stream.buffered -= size
        if size and self._error is None and not stream.closed:  # closed: acked already
            self._conn.acknowledge_received_data(size, stream.id)
            self._schedule_flush()
        if not stream.chunks and stream.closed:
            self._finish(stream)

    def _send_headers(
        self, stream: Stream, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        try:
            self._conn.send_headers(stream.id, headers, end_stream=end_stream)
        except H2Error as exc:
            raise H2ProtocolError(f"cannot send headers: {exc}", stream_id=stream.id) from None
        if end_stream:
            stream.end_queued = stream.local_closed = True
            if stream.ended:
                self._close_stream(stream)
        self._schedule_flush()

    def _close_stream(self, stream: Stream) -> None:
        """Account for a stream that h2 now considers closed."""
        stream_id = stream.id
        if self._streams.get(stream_id) is not stream:
            return
        conn = self._conn
        self._sendable.pop(stream_id, None)
        if self._locally_initiated(stream_id):
            conn.outbound_open -= 1
            self._wake_slot_waiters()
            self._notify(ConnectionEvent.SLOT_FREED)
        else:
            conn.inbound_open -= 1
        conn.forget_stream(stream_id)
        if stream.chunks:
            # The stream is over, so its unread data no longer needs to hold
            # the connection window: a body nobody reads must not stall the
            # other streams. Data of an ended stream stays readable.
            if self._error is None:
                conn.acknowledge_received_data(stream.buffered, stream_id)
            if not stream.ended:  # reset mid-body: never to be read
                stream.chunks.clear()
                stream.buffered = 0
        if not stream.chunks:
            self._finish(stream)
        self._close_if_drained()

    def _finish(self, stream: Stream) -> None:
        """Move an ended stream whose data was all read to the bounded record."""
        if self._streams.pop(stream.id, None) is None:
            return
        finished = self._finished
        finished[stream.id] = stream
        if len(finished) > _FINISHED_KEPT:
            del finished[next(iter(finished))]

    def _drop_requests_above(self, last_stream_id: int) -> None:
        self._requests = deque(item for item in self._requests if item[0] <= last_stream_id)

    # ------------------------------------------------------------------
    # New-stream admission (client)

    def _check_new_stream(self) -> None:
        if self._error is not None:
            raise type(self._error)(str(self._error), never_processed=True)
        if not self.accepting_streams:
            raise ConnectionClosed(
                "connection is draining (GOAWAY or shutdown): no new streams",
                never_processed=True,
            )

    async def _wait_for_slot(self) -> None:
        while True:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._slot_waiters:
                    self._slot_waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake_slot_waiters()  # pass the free slot on
                raise
            self._check_new_stream()
            if self._conn.outbound_open < self._outbound_limit:
                return

    def _wake_slot_waiters(self) -> None:
        free = self._outbound_limit - self._conn.outbound_open
        waiters = self._slot_waiters
        while free > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def _fail_slot_waiters(self) -> None:
        # Wake them: each re-checks and raises a never-processed error.
        waiters, self._slot_waiters = self._slot_waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_request_waiter(self) -> None:
        waiter = self._request_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------
    # Sending: RFC 9218 scheduling, flow control, coalesced writes

    def _pump(self) -> None:
        """Move queued DATA and trailers into h2 while windows and the transport allow."""
        conn = self._conn
        sendable = self._sendable
        while sendable and self._writable and self._error is None:
            stream = self._next_to_send()
            if stream is None:
                break  # every stream with data waits for window
            item = stream.outbound[0]
            if isinstance(item, list):
                stream.outbound.popleft()
                try:
                    self._send_headers(stream, item, end_stream=True)
                except H2ProtocolError as exc:  # invalid trailers: the stream cannot end well
                    self._abort_stream(stream, ErrorCodes.INTERNAL_ERROR, exc)
                    continue
            else:
                view, end = item
                size = min(
                    len(view),
                    conn.local_flow_control_window(stream.id),
                    conn.max_outbound_frame_size,
                )
                if size < len(view):
                    conn.send_data(stream.id, view[:size])
                    stream.outbound[0] = (view[size:], end)
                else:
                    stream.outbound.popleft()
                    conn.send_data(stream.id, view, end_stream=end)
                    if end:
                        stream.local_closed = True
                if stream.incremental:
                    stream.rank = next(self._turns)
            if not stream.outbound:
                sendable.pop(stream.id, None)
                stream.wake_sender()
                if stream.local_closed and stream.ended:
                    self._close_stream(stream)
            if len(conn._data_to_send) >= _PUMP_FLUSH:
                self._flush()
        self._schedule_flush()

    def _next_to_send(self) -> Stream | None:
        conn = self._conn
        connection_open = conn.outbound_flow_control_window > 0
        best: Stream | None = None
        for stream in self._sendable.values():
            item = stream.outbound[0]
            # Trailers and empty END_STREAM frames need no window.
            ready = (
                isinstance(item, list)
                or not item[0]
                or (connection_open and conn.local_flow_control_window(stream.id) > 0)
            )
            if ready and (
                best is None or (stream.urgency, stream.rank) < (best.urgency, best.rank)
            ):
                best = stream
        return best

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._transport is not None:
            self._flush_handle = self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        data = self._conn.take_output()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # ------------------------------------------------------------------
    # Health (tickless functional timeout)

    def _needs_watch(self) -> bool:
        if self._ping_waiters or self._ping_sent_at is not None:
            return True
        return self._functional_timeout is not None and self.open_streams > 0

    def _watch(self) -> None:
        """Someone waits on the connection: make sure its health is being checked."""
        if self._health_timer is None and self._error is None and self._needs_watch():
            self._check_health()

    def _check_health(self) -> None:
        self._health_timer = None
        if self._error is not None or not self._needs_watch():
            return  # idle and nobody waits: nothing runs, nothing is sent
        action, deadline = check_health(
            self._loop.time(),
            self._last_received,
            self._ping_sent_at,
            self._ping_interval,
            self._ping_timeout,
        )
        if action is HealthAction.DEAD:
            silent = self._loop.time() - self._last_received
            self._fail(
                ConnectionDead(
                    f"connection dead: PING unanswered and nothing received for {silent:.3f}s"
                    f" (functional timeout {self._ping_timeout}s)"
                )
            )
            self._close_transport(abort=True)
            return
        if action is HealthAction.PING:
            self._send_ping()
        self._health_timer = self._loop.call_at(deadline, self._check_health)

    def _send_ping(self) -> None:
        payload = (next(self._ping_payloads) % 2**64).to_bytes(8, "big")
        self._ping_payload = payload
        self._ping_sent_at = self._loop.time()
        self._conn.ping(payload)
        self._schedule_flush()

    # ------------------------------------------------------------------
    # Failure and closing

    def _fail(self, error: H2PoolError) -> None:
        """Make the connection unusable: fail every pending and later operation."""
        if self._error is None:
            self._error, first = error, True
        else:
            error, first = self._error, False
        self._draining = True
        if self._health_timer is not None:
            self._health_timer.cancel()
            self._health_timer = None
        drain_cut = self._goaway_last_id is not None and isinstance(
            error, ConnectionLost | ConnectionDead
        )
        for stream in list(self._streams.values()):
            # Data of streams that had ended stays readable (see _close_stream).
            stream_error = error
            if drain_cut and self._locally_initiated(stream.id):
                stream_error = DrainInterrupted(
                    f"{error}; the peer had sent GOAWAY(last_stream_id={self._goaway_last_id})"
                    f" and did not finish stream {stream.id}",
                    stream_id=stream.id,
                )
            self._drop_stream(stream, stream_error)
        self._sendable.clear()
        self._fail_slot_waiters()
        self._wake_request_waiter()
        waiters, self._ping_waiters = self._ping_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        if first:
            self._notify(ConnectionEvent.CLOSED)

    def _close_if_drained(self) -> None:
        if self._draining and self._error is None and self.open_streams == 0:
            self._fail(ConnectionClosed("connection closed after GOAWAY: all streams finished"))
            self._close_transport()

    def _close_transport(self, *, abort: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._flush()
        if abort:
            transport.abort()
        else:
            transport.close()
