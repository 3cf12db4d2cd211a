"""Session: the state of one HTTP/2 connection, without I/O.

The Session is h2pool's sans-I/O connection layer, in the manner of h2 itself
and grpclib's synchronous events processor: it is fed bytes (``receive``) and
calls from the stream API, with the time passed in as a float, and answers
with bytes to send (``take_output``) and :class:`Wakeups` saying whom to wake.
It does no I/O, owns no timer and knows nothing of asyncio; the asyncio shim
(:mod:`h2pool._core.shim`) applies what it returns.

It owns, each in one place:

* the stream table and the open-stream counts: a stream is counted when
  admitted and uncounted in :meth:`Session._close`, which removes it from the
  table first, so no stream is ever counted closed twice;
* admission against MAX_CONCURRENT_STREAMS (:attr:`Session.free_slots`);
* the connection's life as an enum (:class:`ConnectionState`) with who is
  draining as flags (:class:`Drain`): GOAWAY sent and received;
* RST_STREAM and GOAWAY classification, through the table in ``errors.py``;
* RFC 9218 scheduling of queued DATA (``scheduler.py``) and flow control.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
from collections import deque
from typing import cast

from h2.errors import ErrorCodes
from h2.exceptions import H2Error, NoAvailableStreamIDError

from .._exceptions import (
    ConnectionClosed,
    ConnectionDead,
    ConnectionLost,
    H2PoolError,
    H2ProtocolError,
    LocalProtocolError,
    StreamClosed,
    StreamRefused,
)
from . import errors
from .config import H2Config
from .h2compat import MAX_STREAM_ID, Connection
from .headers import (
    HeaderList,
    HeadersIn,
    decode_headers,
    encode_headers,
    request_problem,
    response_problem,
)
from .health import PingBudget
from .priority import Priority
from .receiver import Receiver
from .scheduler import DataScheduler
from .states import CloseAction, ConnectionEvent, ConnectionState, Drain, Wakeups
from .streams import OutboundItem, RecvState, SendState, Stream

__all__ = ["Session"]

logger = logging.getLogger("h2pool.core")

# How many finished streams keep their final state (headers, trailers, error)
# so that late calls such as recv_trailers() still answer; older ones are
# forgotten, like h2's own bounded record of closed streams.
_FINISHED_KEPT = 128
# Queued output above which pump() stops so the shim can hand the bytes to
# the transport and see its back-pressure (pause_writing) in time.
_PUMP_FLUSH = 256 * 1024


class Session:
    """One HTTP/2 connection's streams, admission, drain and health state, without I/O.

    Args:
        client_side: True for the side that opens streams with requests.
        config: Window sizes and other connection settings.
        concurrency: MAX_CONCURRENT_STREAMS advertised, and a local cap on
            the streams this side opens.
        now: The current time, for the health state.
        ping_interval: Silence before a health PING.
        ping_budget: PINGs allowed while the peer sends no HEADERS or DATA,
            or None for no limit.
        authority: ``:authority`` added to requests that give none.
    """

    def __init__(
        self,
        *,
        client_side: bool,
        config: H2Config,
        concurrency: int,
        now: float,
        ping_interval: float,
        ping_budget: PingBudget | None = None,
        authority: str | None = None,
    ) -> None:
        self.client_side = client_side
        self.config = config
        self.concurrency = concurrency
        self.conn = Connection(
            client_side=client_side,
            config=config,
            concurrency=concurrency,
            outbound_open=lambda: self.outbound_open,
        )
        self.wakeups = Wakeups()
        self.scheduler = DataScheduler()
        self._defaults = [(b":scheme", b"http")]
        if authority is not None:
            self._defaults.append((b":authority", authority.encode()))
        # Lifecycle.
        self.state = ConnectionState.OPEN
        self.drain = Drain.NONE
        self.error: H2PoolError | None = None
        self.goaway_received_id: int | None = None  # lowest last_stream_id received
        self.goaway_sent_id: int | None = None  # lowest last_stream_id sent
        # Streams: open ones (counted), closed ones with unread data, finished.
        self.streams: dict[int, Stream] = {}
        self.unread: dict[int, Stream] = {}
        self.finished: dict[int, Stream] = {}
        self.outbound_open = 0
        self.inbound_open = 0
        self.max_streams = concurrency
        self.requests: deque[tuple[int, HeaderList]] = deque()
        # Health.
        self.last_received = now
        self.ping_interval = ping_interval
        self.ping_payload: bytes | None = None
        self.ping_sent_at: float | None = None
        self.rtt: float | None = None
        self.ping_budget = ping_budget
        self.pings_since_data = 0  # PINGs sent since HEADERS or DATA last arrived
        self.last_ping_sent = -math.inf
        self._ping_payloads = itertools.count(random.getrandbits(63))
        self._strict = config.validate_headers
        self._receiver = Receiver(self)

    # ------------------------------------------------------------------
    # Reading the state

    @property
    def accepting_streams(self) -> bool:
        """Whether new streams may start: the connection is OPEN."""
        return self.state is ConnectionState.OPEN

    @property
    def free_slots(self) -> int:
        """How many streams this side may open now without waiting; 0 unless OPEN."""
        if self.state is not ConnectionState.OPEN:
            return 0
        return max(0, self.max_streams - self.outbound_open)

    @property
    def open_streams(self) -> int:
        """Streams open in both directions."""
        return self.outbound_open + self.inbound_open

    def locally_initiated(self, stream_id: int) -> bool:
        """Whether this side opened ``stream_id`` (odd ids are the client's)."""
        return (stream_id % 2 == 1) == self.client_side

    def stream(self, stream_id: int) -> Stream:
        """The stream, open or closed but still answering calls.

        Raises:
            H2PoolError: The connection's error, if it failed and the stream is gone.
            StreamClosed: The stream is unknown or long closed.
        """
        stream = self.streams.get(stream_id) or self.unread.get(stream_id)
        if stream is None:
            stream = self.finished.get(stream_id)
            if stream is None:
                if self.error is not None:
                    raise self.error
                raise StreamClosed(f"stream {stream_id} is unknown or closed", stream_id=stream_id)
        return stream

    def sendable(self, stream_id: int) -> Stream:
        """The stream, if more may be queued on it.

        Raises:
            H2PoolError: The stream failed, or its end was already queued.
        """
        stream = self.stream(stream_id)
        if stream.error is not None:
            raise stream.error
        if stream.send is not SendState.OPEN:
            raise StreamClosed(f"stream {stream_id} was already ended", stream_id=stream_id)
        return stream

    def use_tls(self) -> None:
        """Requests go over TLS: their default ``:scheme`` is https."""
        self._defaults[0] = (b":scheme", b"https")

    def receive(self, data: bytes, now: float) -> None:
        """Process received bytes (see :class:`~h2pool._core.receiver.Receiver`)."""
        self._receiver.receive(data, now)

    def take_output(self) -> bytearray:
        """The bytes to send, taken (see ``Connection.take_output``)."""
        return self.conn.take_output()

    # ------------------------------------------------------------------
    # Stream life: admission, the two halves, closing (exactly once)

    def check_new_stream(self) -> None:
        """Raise the never-processed error that forbids a new stream, if any."""
        if self.error is not None:
            raise ConnectionClosed(
                f"connection unusable: {self.error}", never_processed=True
            ) from self.error
        if self.state is not ConnectionState.OPEN:
            raise ConnectionClosed(
                "connection is draining (GOAWAY or shutdown): no new streams",
                never_processed=True,
            )

    def open_stream(self, headers: HeadersIn, end_stream: bool, checked: bool = False) -> int:
        """Open a client stream and queue its headers; the caller checked ``free_slots``.

        ``checked``: ``headers`` is a complete request block of bytes pairs
        that the caller built from :func:`encode_headers` output and checked
        already (the pool does, once per request): it is sent as it is.

        Raises:
            ConnectionClosed: No new stream is possible (never processed).
            LocalProtocolError: The headers are invalid (never processed).
        """
        self.check_new_stream()
        conn = self.conn
        try:
            stream_id = conn.get_next_available_stream_id()
        except NoAvailableStreamIDError:
            self.start_drain(Drain.LOCAL)
            raise ConnectionClosed(
                "stream ids exhausted on this connection", never_processed=True
            ) from None
        block: list[tuple[bytes, bytes]]
        if checked:
            block = cast("list[tuple[bytes, bytes]]", headers)
        else:
            block = encode_headers(headers, self._defaults, validate=self._strict)
            problem = request_problem(block) if self._strict else None
            if problem is not None:
                raise LocalProtocolError(f"cannot send request headers: {problem}")
        try:
            conn.send_request(stream_id, block, end_stream)
        except H2Error as exc:
            conn.streams.pop(stream_id, None)
            raise LocalProtocolError(
                f"cannot send request headers: {exc}", stream_id=stream_id
            ) from exc
        send = SendState.CLOSED if end_stream else SendState.OPEN
        stream = Stream(stream_id, send=send, recv=RecvState.HEADERS)
        self.streams[stream_id] = stream
        self.outbound_open += 1
        return stream_id

    def admit_request(self, stream_id: int, block: list[tuple[bytes, bytes]]) -> None:
        stream = Stream(stream_id, send=SendState.OPEN, recv=RecvState.BODY)
        stream.block = block
        stream.headers = headers = decode_headers(block)
        for name, value in headers:
            if name == "priority":
                self.scheduler.prioritize(stream, Priority.parse(value))
        self.streams[stream_id] = stream
        self.inbound_open += 1
        self.requests.append((stream_id, headers))
        self.wakeups.requests = True

    def end_sent(self, stream: Stream) -> None:
        stream.send = SendState.CLOSED
        if stream.done:
            self._close(stream)

    def end_received(self, stream: Stream) -> None:
        stream.recv = RecvState.ENDED
        self.wakeups.receivers.append(stream.id)
        if stream.done:
            self._close(stream)

    def abandon(self, stream: Stream, error: H2PoolError, *, keep_body: bool) -> None:
        """End both halves of a stream with ``error`` (nothing is sent here).

        With ``keep_body``, a stream whose receiving half had ended keeps its
        data readable; otherwise what was received is dropped unread.
        """
        if stream.error is None:
            stream.error = error
        stream.outbound.clear()
        stream.send = SendState.CLOSED
        if not (keep_body and stream.recv is RecvState.ENDED):
            stream.recv = RecvState.RESET
            stream.chunks.clear()
            stream.buffered = 0
        wakeups = self.wakeups
        wakeups.receivers.append(stream.id)
        wakeups.senders.append(stream.id)
        self._close(stream)

    def abort(self, stream: Stream, code: int, error: H2PoolError) -> None:
        """Reset a stream from this side (RST_STREAM ``code``) and abandon it."""
        if stream.id in self.streams and self.error is None:
            # h2 refuses a reset of a stream it already sees closed (both END_STREAMs
            # processed): then nothing may be sent on it (RFC 9113 section 5.1).
            with contextlib.suppress(H2Error):
                self.conn.reset_stream(stream.id, code)
        self.abandon(stream, error, keep_body=False)

    def _close(self, stream: Stream) -> None:
        """The one place a stream stops being counted: it leaves the table first."""
        stream_id = stream.id
        if self.streams.pop(stream_id, None) is None:
            self._retire(stream)  # already closed: only its unread data may change
            return
        conn = self.conn
        self.scheduler.discard(stream_id)
        if self.locally_initiated(stream_id):
            self.outbound_open -= 1
            self.wakeups.events.append(ConnectionEvent.SLOT_FREED)
        else:
            self.inbound_open -= 1
        if self.error is None and stream.buffered:
            # The stream is over, so its unread data no longer holds the
            # connection window: a body nobody reads must not stall the others.
            # (Before forget_stream: h2 then skips the stream without raising.)
            conn.acknowledge_received_data(stream.buffered, stream_id)
        conn.forget_stream(stream_id)
        self._retire(stream)
        self.close_if_drained()

    def _retire(self, stream: Stream) -> None:
        # A closed stream answers late calls: from `unread` while data waits,
        # then from the bounded `finished` record.
        stream_id = stream.id
        if stream.chunks:
            self.unread[stream_id] = stream
            return
        self.unread.pop(stream_id, None)
        finished = self.finished
        finished.pop(stream_id, None)
        finished[stream_id] = stream
        if len(finished) > _FINISHED_KEPT:
            del finished[next(iter(finished))]

    # ------------------------------------------------------------------
    # Calls from the stream API

    def respond(self, stream: Stream, headers: HeadersIn, end: bool) -> None:
        """Send response headers (a 1xx informational block, or the final one).

        Raises:
            LocalProtocolError: The headers are invalid.
        """
        self.send_headers(stream, self._response_block(stream, headers, trailers=False), end)

    def queue_trailers(self, stream: Stream, trailers: HeadersIn) -> None:
        """Queue trailers behind the stream's data; they end it.

        Raises:
            LocalProtocolError: The trailers are invalid.
        """
        block = self._response_block(stream, trailers, trailers=True)
        # h2 cannot send an empty header block: end with empty DATA instead.
        self.queue(stream, block if block else (memoryview(b""), True), True)

    def _response_block(
        self, stream: Stream, headers: HeadersIn, *, trailers: bool
    ) -> list[tuple[bytes, bytes]]:
        """Headers or trailers a server sends, encoded and checked (RFC 9113 section 8.3.2)."""
        block = encode_headers(headers, validate=self._strict)
        if self._strict:
            problem = response_problem(block, trailers=trailers, strict=False)
            if problem is not None:
                what = "trailers" if trailers else "headers"
                raise LocalProtocolError(f"cannot send {what}: {problem}", stream_id=stream.id)
        return block

    def send_headers(self, stream: Stream, block: list[tuple[bytes, bytes]], end: bool) -> None:
        """Send response headers or trailers now (h2 queues them in order).

        Raises:
            LocalProtocolError: h2 refused the header block.
        """
        try:
            self.conn.send_headers(stream.id, block, end_stream=end)
        except H2Error as exc:
            raise LocalProtocolError(f"cannot send headers: {exc}", stream_id=stream.id) from exc
        if end:
            self.end_sent(stream)

    def queue(self, stream: Stream, item: OutboundItem, end: bool) -> None:
        """Queue a DATA slice ``(memoryview, end)`` or a trailer block; the pump sends it."""
        if end:
            stream.send = SendState.ENDING
        stream.outbound.append(item)
        self.scheduler.add(stream)

    def send_or_queue(self, stream: Stream, view: memoryview, end: bool) -> bool:
        """Send DATA at once when :meth:`pump` would send it whole now, else queue it.

        Only while no stream has output queued, so the RFC 9218 order is
        the same; the frame must fit the windows and the frame size, and
        leave the output under the flush mark. The common case: a request's
        small body, sent right behind its HEADERS.

        Returns:
            True when it was queued (the caller pumps).
        """
        conn = self.conn
        if (
            self.scheduler.ready
            or self.error is not None
            or len(view) > conn.max_outbound_frame_size
            or len(view) + len(conn._data_to_send) >= _PUMP_FLUSH
            or len(view) > conn.local_flow_control_window(stream.id)
        ):
            self.queue(stream, (view, end), end)
            return True
        conn.send_data_frame(stream.id, view, end)
        self.scheduler.sent(stream)
        if end:
            self.end_sent(stream)
        return False

    def consumed(self, stream: Stream, size: int) -> None:
        """The application read ``size`` bytes: reopen the window (flow control)."""
        stream.buffered -= size
        if stream.id in self.streams:
            if size and self.error is None:
                self.conn.acknowledge_received_data(size, stream.id)
        elif not stream.chunks:
            self._retire(stream)

    def reset(self, stream_id: int, code: int) -> None:
        """Abort a stream from this side; on a closed stream, drop its unread data."""
        stream = self.streams.get(stream_id) or self.unread.get(stream_id)
        if stream is not None:
            error = StreamClosed(
                f"stream {stream_id} was reset locally ({errors.error_name(code)})",
                stream_id=stream_id,
                error_code=code,
            )
            self.abort(stream, code, error)

    def prioritize(self, stream_id: int, priority: Priority) -> None:
        """Set the RFC 9218 priority by which this side schedules the stream's DATA."""
        stream = self.stream(stream_id)
        if stream.error is not None:
            raise stream.error
        self.scheduler.prioritize(stream, priority)

    def pump(self) -> bool:
        """Move queued DATA and trailers into h2 while flow control allows.

        Returns:
            True when it stopped because much output is queued: send it and
            call again (if the transport still takes data).
        """
        conn = self.conn
        scheduler = self.scheduler
        while scheduler.ready and self.error is None:
            stream = scheduler.next(conn)
            if stream is None:
                return False  # every stream with data waits for window
            item = stream.outbound[0]
            if isinstance(item, list):
                stream.outbound.popleft()
                try:
                    self.send_headers(stream, item, end=True)
                except H2ProtocolError as exc:  # invalid trailers: the stream cannot end well
                    self.abort(stream, ErrorCodes.INTERNAL_ERROR, exc)
                    continue
            else:
                view, end = item
                size = min(
                    len(view),
                    conn.local_flow_control_window(stream.id),
                    conn.max_outbound_frame_size,
                )
                if size < len(view):
                    conn.send_data_frame(stream.id, view[:size], False)
                    stream.outbound[0] = (view[size:], end)
                else:
                    stream.outbound.popleft()
                    conn.send_data_frame(stream.id, view, end)
                scheduler.sent(stream)
                if size == len(view) and end:
                    self.end_sent(stream)
            if not stream.outbound:
                scheduler.discard(stream.id)
                self.wakeups.senders.append(stream.id)
            if len(conn._data_to_send) >= _PUMP_FLUSH:
                return True
        return False

    def send_ping(self, now: float) -> None:
        """Send a PING whose ACK measures the round trip (replacing any outstanding one)."""
        payload = (next(self._ping_payloads) % 2**64).to_bytes(8, "big")
        self.ping_payload = payload
        self.ping_sent_at = self.last_ping_sent = now
        self.pings_since_data += 1
        self.conn.ping(payload)

    def announce_goaway(self) -> None:
        """Send GOAWAY(NO_ERROR, 2^31-1): a shutdown is coming (RFC 9113 section 6.8).

        Nothing changes yet: requests in flight towards this side stay welcome.
        """
        self.conn.send_goaway(ErrorCodes.NO_ERROR, MAX_STREAM_ID)

    def send_goaway(self, code: int, last_stream_id: int | None, debug_data: bytes) -> None:
        """Send GOAWAY and drain: streams the peer opened above the last id are refused."""
        if self.error is not None:
            return
        conn = self.conn
        if last_stream_id is None:
            last_stream_id = conn.highest_inbound_stream_id
        if self.goaway_sent_id is not None:
            last_stream_id = min(last_stream_id, self.goaway_sent_id)
        self.goaway_sent_id = last_stream_id
        conn.send_goaway(code, last_stream_id, debug_data)
        for stream in list(self.streams.values()):
            if not self.locally_initiated(stream.id) and stream.id > last_stream_id:
                error = StreamRefused(
                    f"stream {stream.id} refused by our GOAWAY", stream_id=stream.id
                )
                self.abort(stream, ErrorCodes.REFUSED_STREAM, error)
        self.requests = deque(item for item in self.requests if item[0] <= last_stream_id)
        self.start_drain(Drain.LOCAL)
        self.close_if_drained()

    def close_locally(self) -> None:
        """Close at once: GOAWAY(NO_ERROR) and fail everything with ConnectionClosed."""
        if self.error is None:
            self.conn.send_goaway(ErrorCodes.NO_ERROR)
            self.fail(ConnectionClosed("connection closed locally"))

    # ------------------------------------------------------------------
    # The connection's life

    def start_drain(self, side: Drain) -> None:
        self.drain |= side
        if self.state is ConnectionState.OPEN:
            self.state = ConnectionState.DRAINING
            self.wakeups.events.append(ConnectionEvent.DRAINING)
        self.wakeups.requests = True

    def close_if_drained(self) -> None:
        if self.state is ConnectionState.DRAINING and self.open_streams == 0:
            self.fail(ConnectionClosed("connection closed after GOAWAY: all streams finished"))
            self.wakeups.close = CloseAction.CLOSE

    def fail(self, error: H2PoolError) -> None:
        """Make the connection unusable: every open stream and later call fails.

        Data of streams whose receiving half had ended stays readable.
        """
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED
        self.error = error
        last_id = self.goaway_received_id
        drain_cut = last_id is not None and isinstance(error, ConnectionLost | ConnectionDead)
        for stream in list(self.streams.values()):
            stream_error = error
            if drain_cut and last_id is not None and self.locally_initiated(stream.id):
                stream_error = errors.drain_interrupted(error, last_id, stream.id)
            self.abandon(stream, stream_error, keep_body=True)
        self.scheduler.ready.clear()
        wakeups = self.wakeups
        wakeups.requests = wakeups.pings = True
        wakeups.events.append(ConnectionEvent.CLOSED)
