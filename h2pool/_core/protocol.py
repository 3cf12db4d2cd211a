"""H2Protocol: one HTTP/2 connection's awaitable stream API, client and server.

The aioh2-shaped API (``start_request``, ``read_stream``, ``recv_request``...)
on top of the asyncio shim (:mod:`h2pool._core.shim`), which drives the
sans-I/O :class:`~h2pool._core.session.Session`. Every await ends: waiters
are woken by the event that satisfies them or by the first error that makes
them impossible (stream reset, GOAWAY, connection lost, health check
failed); that error is stored and raised again by every later call, as
httpcore does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from h2.errors import ErrorCodes

from .._exceptions import (
    ConnectionClosed,
    H2PoolError,
    H2ProtocolError,
    StreamClosed,
    StreamError,
)
from .config import check_duration
from .headers import HeaderList, HeadersIn, decode_headers
from .priority import Priority
from .shim import ConnectedCallback, Listener, ProtocolShim
from .states import ConnectionEvent
from .streams import RecvState, Stream

__all__ = ["ConnectedCallback", "ConnectionEvent", "H2Protocol", "Listener"]


class H2Protocol(ProtocolShim):
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
        ping_budget: PINGs allowed while the peer sends no HEADERS or DATA
            (:class:`h2pool.PingBudget`), or None (the default here, and
            always on the server side) for no limit. While the budget forbids
            a PING, the health check waits for it, and ``wait_functional``
            presumes the connection alive.
        authority: ``:authority`` added to requests that do not give one.
        on_connected: Server side: called with this protocol once connected.

    Raises:
        ValueError: A duration is NaN, infinite or not positive, or
            ``concurrency`` is below 1.
        TypeError: A duration is not a number.
    """

    # ------------------------------------------------------------------
    # Properties

    @property
    def functional(self) -> bool:
        """False once the connection is dead, lost or closed; True before."""
        return self._session.error is None

    @property
    def error(self) -> H2PoolError | None:
        """Why the connection is unusable (dead, lost, closed), or None while it is usable."""
        return self._session.error

    @property
    def rtt(self) -> float | None:
        """Round-trip time in seconds of the latest PING answered, or None."""
        return self._session.rtt

    @property
    def accepting_streams(self) -> bool:
        """Whether a new stream may be started: open, no GOAWAY, not draining."""
        return self._session.accepting_streams

    @property
    def open_streams(self) -> int:
        """Streams currently open on this connection, both directions."""
        return self._session.open_streams

    @property
    def max_streams(self) -> int:
        """How many streams this side may have open at once right now."""
        return self._session.max_streams

    @property
    def free_slots(self) -> int:
        """How many new streams this side may open now without waiting.

        ``max_streams`` minus the streams this side has open, and 0 while the
        connection is draining or closed. A ``start_request`` made while it is
        positive (and nobody else waits for a slot) does not suspend.
        """
        return self._session.free_slots

    @property
    def last_received(self) -> float:
        """Event-loop time at which bytes were last received."""
        return self._session.last_received

    @property
    def ping_interval(self) -> float:
        """Silence before a health PING; doubled by each ``too_many_pings`` GOAWAY."""
        return self._session.ping_interval

    @property
    def goaway_received(self) -> bool:
        """Whether the peer sent GOAWAY (the connection is draining)."""
        return self._session.goaway_received_id is not None

    @property
    def goaway_last_stream_id(self) -> int | None:
        """The lowest last_stream_id of the GOAWAY frames received, or None."""
        return self._session.goaway_received_id

    # ------------------------------------------------------------------
    # Client API

    async def start_request(
        self, headers: HeadersIn, *, end_stream: bool = False, checked: bool = False
    ) -> int:
        """Open a stream and send request headers; return the stream id.

        Waits for a free slot under the peer's MAX_CONCURRENT_STREAMS (and
        ``concurrency``); does not suspend when one is free. ``:scheme`` and
        ``:authority`` are added when missing.

        Args:
            headers: The request's header fields, pseudo-header fields included.
            end_stream: The request has no body.
            checked: ``headers`` is a complete block of bytes pairs, pseudo-header
                fields first, whose regular fields came from
                :func:`~h2pool._core.headers.encode_headers`: it is sent without
                a second check (the pool checks each request once, when built).

        Raises:
            ConnectionClosed: The connection takes no new streams (GOAWAY,
                shutdown, failure); ``never_processed`` is True, so retry elsewhere.
            LocalProtocolError: The headers are invalid; nothing was sent.
        """
        if not self._client_side:
            raise H2ProtocolError("start_request() is for the client side")
        session = self._session
        if session.free_slots <= 0 or self._slot_waiters:
            session.check_new_stream()
            await self._wait_for_slot()
        try:
            stream_id = session.open_stream(headers, end_stream, checked)
        except H2PoolError:
            self._apply()  # running out of stream ids drains the connection
            raise
        self._watch()
        self._schedule_flush()
        return stream_id

    async def recv_response(self, stream_id: int) -> HeaderList:
        """Wait for the final response headers (1xx responses are skipped).

        Raises:
            H2ProtocolError: The response was malformed (for example its
                ``:status`` is not a three-digit code); the stream was reset.
            StreamError: The stream was reset or refused.
            H2ConnectionError: The connection ended first.
        """
        stream = self._session.stream(stream_id)
        headers = stream.headers
        if headers is None:
            headers = stream.headers = decode_headers(await self._response_block(stream))
        return headers

    async def recv_response_bytes(self, stream_id: int) -> list[tuple[bytes, bytes]]:
        """Like :meth:`recv_response`, with names and values as received (bytes).

        Skips decoding to str: for layers that keep header fields as bytes.
        Lower-case names in wire order; do not modify the list.
        """
        return await self._response_block(self._session.stream(stream_id))

    def received_response(self, stream_id: int) -> HeaderList | None:
        """The final response headers of a stream if they arrived, without waiting; else None.

        For a caller whose wait failed (a timeout, a reset): what the peer
        had answered by then. None also for an unknown or forgotten stream.
        """
        session = self._session
        stream = (
            session.streams.get(stream_id)
            or session.unread.get(stream_id)
            or session.finished.get(stream_id)
        )
        if stream is None or stream.block is None:
            return None
        if stream.headers is None:
            stream.headers = decode_headers(stream.block)
        return stream.headers

    async def recv_whole_response(self, stream_id: int) -> tuple[HeaderList, bytes, HeaderList]:
        """The final response headers, the whole body and the trailers, in one call.

        The same as :meth:`recv_response`, ``read_stream(stream_id, -1)`` and
        :meth:`recv_trailers` in turn, with one coroutine instead of three (and
        their inner ones): each coroutine between a caller and the future it
        waits on is resumed again on every wake-up. Received data is read (and
        acknowledged) as it arrives, so flow control never holds the body back.

        Raises:
            H2ProtocolError: The response was malformed; the stream was reset.
            StreamError: The stream was reset or refused, or ended without a response.
            H2ConnectionError: The connection ended first.
        """
        stream = self._session.stream(stream_id)
        parts: list[bytes] = []
        while True:
            if stream.block is None:
                if stream.error is not None:
                    raise stream.error
                if stream.recv is RecvState.ENDED:
                    raise StreamClosed("stream ended without a response", stream_id=stream_id)
            else:
                chunks = stream.chunks
                if chunks:
                    parts += chunks
                    chunks.clear()
                    self._consumed(stream, stream.buffered)
                if stream.recv is RecvState.ENDED:
                    break
                if stream.error is not None:
                    raise stream.error
            await self._wait(self._recv_waiters, stream_id)
        headers = stream.headers
        if headers is None:
            headers = stream.headers = decode_headers(stream.block)
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return headers, body, stream.trailers or []

    async def _response_block(self, stream: Stream) -> list[tuple[bytes, bytes]]:
        while stream.block is None:
            if stream.error is not None:
                raise stream.error
            if stream.recv is RecvState.ENDED:
                raise StreamClosed("stream ended without a response", stream_id=stream.id)
            await self._wait(self._recv_waiters, stream.id)
        return stream.block

    # ------------------------------------------------------------------
    # Server API

    async def recv_request(self) -> tuple[int, HeaderList]:
        """Wait for the next request: (stream id, request headers).

        Raises:
            H2ConnectionError: The connection ended; no more requests come.
        """
        session = self._session
        while not session.requests:
            if session.error is not None:
                raise session.error
            if not session.accepting_streams:
                raise ConnectionClosed("no more requests: the connection is draining")
            waiter = self._request_waiter
            if waiter is None or waiter.done():
                waiter = self._request_waiter = self._loop.create_future()
            await waiter
        return session.requests.popleft()

    async def start_response(
        self, stream_id: int, headers: HeadersIn, *, end_stream: bool = False
    ) -> None:
        """Send response headers (informational 1xx ones may come first)."""
        session = self._session
        session.respond(session.sendable(stream_id), headers, end_stream)
        self._after()

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
        session = self._session
        stream = session.sendable(stream_id)
        if data or end_stream:
            view = memoryview(data)
            if view.itemsize != 1:  # count bytes, not items, of typed buffers
                view = view.cast("B")
            if not self._writable:
                session.queue(stream, (view, end_stream), end_stream)
            elif session.send_or_queue(stream, view, end_stream):
                self._pump()
            self._after()
        return stream

    async def end_stream(self, stream_id: int) -> None:
        """End the local side of a stream (an empty DATA frame with END_STREAM)."""
        await self.send_data(stream_id, b"", end_stream=True)

    async def send_trailers(self, stream_id: int, trailers: HeadersIn) -> None:
        """Send trailers after any queued data; this ends the stream."""
        session = self._session
        stream = session.sendable(stream_id)
        session.queue_trailers(stream, trailers)
        self._pump()
        self._after()
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
        session = self._session
        stream = session.stream(stream_id)
        if size is None:
            while not stream.chunks:
                if stream.recv is RecvState.ENDED:
                    return b""
                if stream.error is not None:
                    raise stream.error
                await self._wait(self._recv_waiters, stream_id)
            chunk = stream.chunks.popleft()
            self._consumed(stream, len(chunk))
            return chunk
        if size < 0 and stream.recv is RecvState.ENDED and len(stream.chunks) == 1:
            chunk = stream.chunks.popleft()  # the common small body: no copy
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
            if stream.recv is RecvState.ENDED:
                break
            if stream.error is not None:
                raise stream.error
            await self._wait(self._recv_waiters, stream_id)
        return b"".join(parts)

    def _consumed(self, stream: Stream, size: int) -> None:
        self._session.consumed(stream, size)
        self._schedule_flush()

    async def recv_trailers(self, stream_id: int) -> HeaderList:
        """Wait for the end of the stream and return its trailers (empty if none).

        Read the body first: waiting for trailers while unread data is
        buffered could wait forever on flow control, so it is an error.
        """
        stream = self._session.stream(stream_id)
        while stream.recv is not RecvState.ENDED:
            if stream.error is not None:
                raise stream.error
            if stream.chunks:
                raise StreamError(
                    f"stream {stream_id} has unread data: read it before the trailers",
                    stream_id=stream_id,
                )
            await self._wait(self._recv_waiters, stream_id)
        return stream.trailers or []

    def reset_stream(self, stream_id: int, error_code: int = ErrorCodes.CANCEL) -> Awaitable[None]:
        """Abort a stream with RST_STREAM and free it at once.

        Safe to call from cleanup code and on streams that already ended
        (then it only frees what is still buffered). The reset happens before
        this returns; the result may be awaited or ignored.
        """
        self._session.reset(stream_id, error_code)
        self._after()
        return self._done

    def set_priority(self, stream_id: int, priority: Priority) -> None:
        """Set the RFC 9218 priority by which this side schedules the stream's DATA."""
        self._session.prioritize(stream_id, priority)

    # ------------------------------------------------------------------
    # Both sides: the connection

    async def wait_functional(self) -> float:
        """Wait until the connection is proven alive; return the round-trip time.

        If a frame arrived within the functional timeout and an RTT is known,
        returns it at once; otherwise sends a PING (unless one is already
        outstanding) and returns its round-trip time in seconds. When the
        ping budget forbids a PING now (the peer answered the PINGs allowed
        but sent no HEADERS or DATA since), the connection is presumed alive
        and the latest RTT is returned at once, without a PING.

        Raises:
            H2ConnectionError: The connection is or becomes dead or closed.
        """
        session = self._session
        if session.error is not None:
            raise session.error
        now = self._loop.time()
        if (
            session.rtt is not None
            and session.ping_sent_at is None
            and (now - session.last_received < self._ping_timeout or self._ping_allowed_at() > now)
        ):
            return session.rtt
        return await self._ping_round_trip(send=session.ping_sent_at is None)

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
        self._session.send_goaway(error_code, last_stream_id, debug_data)
        self._after()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Close gracefully: GOAWAY(NO_ERROR), let open streams finish, then close.

        A server first announces the shutdown with last_stream_id 2^31-1 and a
        PING, and sends the final GOAWAY once the PING is answered, so that
        requests already in flight towards it are not refused (RFC 9113
        section 6.8). After ``timeout`` seconds, streams still open are
        abandoned and the connection is closed anyway.

        Raises:
            ValueError: ``timeout`` is NaN, infinite or not positive.
            TypeError: ``timeout`` is not a number.
        """
        check_duration("timeout", timeout)
        if self._transport is None:
            return
        session = self._session
        try:
            async with asyncio.timeout(timeout):
                if (
                    session.error is None
                    and not self._client_side
                    and session.goaway_sent_id is None
                ):
                    session.announce_goaway()
                    with contextlib.suppress(TimeoutError, H2PoolError):
                        async with asyncio.timeout(self._ping_timeout):
                            await self._ping_round_trip(send=True)
                self.send_goaway(ErrorCodes.NO_ERROR)
                await asyncio.shield(self._closed)
        except TimeoutError:
            session.fail(ConnectionClosed("connection shut down before its streams finished"))
            self._apply()
            self._close_transport()
            await asyncio.shield(self._closed)
        except asyncio.CancelledError:
            # A cancelled graceful close still closes: the socket must not
            # outlive whoever gave up waiting for it (a pool closing, say).
            self.close_connection()
            raise

    def close_connection(self) -> None:
        """Close at once: every pending operation fails with ConnectionClosed."""
        if self._transport is None:
            return
        self._session.close_locally()
        self._apply()
        self._close_transport()
