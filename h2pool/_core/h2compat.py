"""Every override of h2's private internals, in one place, version-gated.

h2pool depends on h2's ``H2Connection`` for framing, HPACK, flow control and
the per-stream state machine, and replaces a few behaviours through private
attributes (``_data_to_send``, ``_closed_streams``, ``_receive_goaway_frame``,
``_terminate_connection``, the frame buffer's ``_data`` (``data`` before h2
4.2) and ``_validate_frame_length``). Those are not
h2's public API, so this module checks at import that the installed h2 is one
of the versions they were checked against (``h2>=4.1,<5`` as in
pyproject.toml; the suite runs against the oldest and the newest).

Four behaviours of h2 4.x do not fit a client that must finish streams after
a GOAWAY or a server that refuses excess streams, so this subclass changes
them (each override names the h2 behaviour it replaces):

* Receiving or sending GOAWAY moves h2's state machine to CLOSED, after which
  every frame (DATA of streams allowed to finish, a PING) raises
  ProtocolError (python-hyper/h2 issues 1181 and 1199). Here GOAWAY is only
  reported; :class:`~h2pool._core.session.Session` tracks the drain.
* Counting open streams scans every stream, and exceeding our own
  MAX_CONCURRENT_STREAMS is a connection error. Here the counts come from
  the Session, which refuses excess streams with REFUSED_STREAM as
  RFC 9113 section 5.1.2 allows.
* Closed streams linger in ``streams`` until the next scan. Here the Session
  forgets each stream as soon as it closes.
* A frame header announcing more than our SETTINGS_MAX_FRAME_SIZE is only
  rejected once the whole body has arrived, so a peer that announces 16 MiB
  and stops parks the connection. Here it is rejected on its header.

And three do work nobody uses, on every request (see docs/performance.md):

* Every received frame is formatted with ``repr()`` for a trace log that h2's
  default logger throws away. Here it is not formatted.
* HPACK encodes the same request headers and decodes the same response
  headers again and again. Here the connection's encoder and decoder keep
  the blocks they made while their dynamic table stood still (see
  :mod:`~h2pool._core.hpackcache`). That relies on how hpack changes its table
  (``HeaderTable.add`` and the ``maxsize`` setter, checked in hpack 4.x, the
  versions h2 4.x requires); with another hpack, hpack's own coders are used.
* Sending a request's HEADERS (``send_headers``) re-encodes a block that is
  already checked bytes, builds validation flags for checks that are off,
  and makes frame objects only to serialize them; each DATA frame
  (``send_data``) builds and serializes a frame object too. Here
  :meth:`Connection.send_request` and :meth:`Connection.send_data_frame`
  make the same state changes through h2's own state machines (connection
  and stream states, the new stream and its windows, flow control, HPACK)
  and write the frames' bytes directly (RFC 9113 sections 4.1, 6.1, 6.2, 6.10).
* Receiving HEADERS on an open stream (a response, trailers) builds
  validation flags for h2's inbound checks even when they are off (the
  client's case: it checks responses itself). Here
  ``_receive_headers_frame`` skips them when they are off, and does the rest
  as h2 does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import h2
from h2.config import H2Configuration
from h2.connection import (
    AllowedStreamIDs,
    ConnectionInputs,
    ConnectionState,
    H2Connection,
    H2ConnectionStateMachine,
    _decode_headers,
)
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, Event, TrailersReceived
from h2.exceptions import (
    FlowControlError,
    FrameTooLargeError,
    ProtocolError,
    StreamClosedError,
    StreamIDTooLowError,
    TooManyStreamsError,
)
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from h2.stream import H2Stream, StreamClosedBy, StreamInputs, StreamState
from h2.utilities import is_informational_response
from hyperframe.exceptions import InvalidPaddingError
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

from .config import H2Config
from .hpackcache import HPACK_CHECKED, CachingDecoder, CachingEncoder

if TYPE_CHECKING:
    from h2._typing import Buffer  # h2 >= 4.2; only for type checking

__all__ = ["MAX_STREAM_ID", "Connection", "check_h2_version"]

MAX_STREAM_ID = 2**31 - 1

# A frame header (RFC 9113 section 4.1): 24-bit length (as its high byte and
# low 16 bits), type, flags, stream id (the reserved bit is never set here).
_FRAME_HEADER = struct.Struct(">BHBBL")
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9  # frame types (section 6)
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20  # flags (sections 6.1, 6.2)
_NOT_PLAIN_HEADERS = _END_HEADERS | _PADDED | _PRIORITY
# Connection states in which sending or receiving HEADERS and DATA changes
# nothing in h2's connection state machine (no function, the same state), as
# read from h2's own table: there the input need not be run through it.
_FRAME_INPUTS = (
    ConnectionInputs.SEND_HEADERS,
    ConnectionInputs.SEND_DATA,
    ConnectionInputs.RECV_HEADERS,
    ConnectionInputs.RECV_DATA,
)
_STEADY_STATES = tuple(
    state
    for state in (ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN)
    if all(
        H2ConnectionStateMachine._transitions.get((state, kind)) == (None, state)
        for kind in _FRAME_INPUTS
    )
)
# Stream states in which DATA and HEADERS may arrive (RFC 9113 section 5.1).
_RECEIVING = frozenset((StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL))


def _frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return _FRAME_HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id)


#: The h2 versions whose internals this module was checked against.
SUPPORTED = ((4, 1), (5, 0))


def check_h2_version(version: str) -> None:
    """Fail clearly when ``version`` of h2 is outside what h2pool supports.

    Raises:
        ImportError: The version is older than 4.1 or 5.0 or newer.
    """
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        raise ImportError(f"h2pool cannot read the h2 version {version!r}") from None
    low, high = SUPPORTED
    if not low <= (major, minor) < high:
        raise ImportError(
            f"h2pool needs h2>=4.1,<5 (it overrides h2 internals checked against"
            f" those versions); h2 {version} is installed"
        )


check_h2_version(h2.__version__)


# h2 4.2 renamed the frame buffer's received bytes from ``data`` to ``_data``.
_BUFFERED = "_data" if hasattr(FrameBuffer(), "_data") else "data"


class Connection(H2Connection):
    """An h2 ``H2Connection`` that survives GOAWAY and leaves admission to its owner.

    ``outbound_open`` tells h2 how many streams this side has open: the
    count belongs to the Session, h2 only reads it (when sending headers).
    """

    def __init__(
        self,
        *,
        client_side: bool,
        config: H2Config,
        concurrency: int,
        outbound_open: Callable[[], int],
    ) -> None:
        super().__init__(
            H2Configuration(
                client_side=client_side,
                header_encoding=None,
                # Outbound blocks are checked once, by headers.encode_headers and
                # the request/response checks where they are sent. Received
                # blocks are checked by the Receiver (headers.request_problem
                # and response_problem): h2 would make a malformed one a
                # connection error, RFC 9113 section 8.1.1 a stream error. A
                # server keeps h2's joining of cookie fields (section 8.2.3).
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
                normalize_inbound_headers=config.validate_headers and not client_side,
            )
        )
        self._outbound_open = outbound_open
        initial: dict[SettingCodes, int] = {
            SettingCodes.MAX_CONCURRENT_STREAMS: concurrency,
            SettingCodes.INITIAL_WINDOW_SIZE: config.stream_window,
            SettingCodes.MAX_FRAME_SIZE: config.max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: config.max_header_list_size,
        }
        if client_side:
            initial[SettingCodes.ENABLE_PUSH] = 0
        # Initial values are sent in the one SETTINGS frame of the preface and
        # apply to our side at once: accepting more than the peer knows we
        # accept is always safe.
        self.local_settings = Settings(client=client_side, initial_values=initial)
        self.max_inbound_frame_size = config.max_frame_size
        if HPACK_CHECKED:
            # Fresh ones, as h2 made them (nothing was encoded or decoded yet).
            self.encoder = CachingEncoder()
            self.decoder = CachingDecoder()
        self.decoder.max_header_list_size = config.max_header_list_size
        # Whether h2 takes received header blocks as they are (see _receive_headers_frame).
        self._inbound_as_is = not (
            self.config.validate_inbound_headers or self.config.normalize_inbound_headers
        )

    # Replaces h2's O(n) scan (which also culls closed streams): the Session
    # keeps exact counts and forgets streams as they close.
    @property
    def open_outbound_streams(self) -> int:
        return self._outbound_open()

    # Zero keeps h2 from turning an excess stream into a connection error;
    # the Session admits or refuses each new stream itself.
    @property
    def open_inbound_streams(self) -> int:
        return 0

    def forget_stream(self, stream_id: int) -> None:
        """Drop a closed stream's h2 state, remembering only how it closed.

        h2 keeps a bounded record of closed streams so that frames still in
        flight for them are handled as stream errors, not connection errors.
        """
        stream = self.streams.get(stream_id)
        if stream is not None and stream.closed:
            del self.streams[stream_id]
            self._closed_streams[stream_id] = stream.closed_by

    def _connection_input(self, kind: ConnectionInputs) -> list[Event]:
        """h2's connection state machine fed a HEADERS or DATA input (nothing to do when steady)."""
        machine = self.state_machine
        if machine.state in _STEADY_STATES:
            return []
        events: list[Event] = machine.process_input(kind)
        return events

    def send_request(
        self, stream_id: int, block: Sequence[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """Open a client stream with a request block already checked and encoded as bytes.

        What h2's ``send_headers`` does for a new client stream, through the
        same state machines and the same stream object (with its windows),
        less the work that the block's check made useless: h2's outbound
        validation and normalization are off, so its re-encoding of the block
        and its validation flags would only be thrown away. The HEADERS frame
        (and CONTINUATION frames past SETTINGS_MAX_FRAME_SIZE, section 6.10)
        is written here.

        Raises:
            TooManyStreamsError: The peer's MAX_CONCURRENT_STREAMS is reached.
            ProtocolError: The connection or the stream id forbids it (as h2).
        """
        limit = self.remote_settings.max_concurrent_streams
        if self.open_outbound_streams + 1 > limit:
            raise TooManyStreamsError(f"Max outbound streams is {limit}")
        self._connection_input(ConnectionInputs.SEND_HEADERS)
        stream = self._begin_new_stream(stream_id, AllowedStreamIDs.ODD)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_HEADERS)
        flags = _END_HEADERS
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
            flags |= _END_STREAM
        for name, value in block:  # what h2 records of a request (pseudo-headers first)
            if name[:1] != b":":
                break
            if name == b":method":
                stream.request_method = value  # a HEAD response has no body
            elif name == b":authority":
                stream._authority = value
        encoded = self.encoder.encode(block)
        size = self.max_outbound_frame_size
        out = self._data_to_send
        if len(encoded) <= size:
            out += _frame_header(len(encoded), _HEADERS, flags, stream_id)
            out += encoded
            return
        kind = _HEADERS
        flags &= _END_STREAM  # END_STREAM on the HEADERS frame, END_HEADERS on the last
        for start in range(0, len(encoded), size):
            chunk = encoded[start : start + size]
            if start + size >= len(encoded):
                flags |= _END_HEADERS
            out += _frame_header(len(chunk), kind, flags, stream_id)
            out += chunk
            kind, flags = _CONTINUATION, 0

    def send_data_frame(self, stream_id: int, data: bytes | memoryview, end_stream: bool) -> None:
        """One DATA frame without padding: h2's ``send_data``, written here.

        The same checks (flow-control windows, SETTINGS_MAX_FRAME_SIZE) and
        state changes (connection and stream state machines, both windows
        reduced, RFC 9113 sections 6.1 and 6.9) without a frame object.

        Raises:
            FlowControlError: ``data`` is larger than the window.
            FrameTooLargeError: ``data`` is larger than the peer's frame size.
            StreamClosedError: The stream is closed (as h2).
        """
        stream = self._get_stream_by_id(stream_id)
        size = len(data)
        window = min(self.outbound_flow_control_window, stream.outbound_flow_control_window)
        if size > window:
            raise FlowControlError(f"Cannot send {size} bytes, flow control window is {window}.")
        if size > self.max_outbound_frame_size:
            raise FrameTooLargeError(
                f"Cannot send frame size {size}, max frame size is {self.max_outbound_frame_size}"
            )
        self._connection_input(ConnectionInputs.SEND_DATA)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_DATA)
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        out = self._data_to_send
        out += _frame_header(size, _DATA, _END_STREAM if end_stream else 0, stream_id)
        out += data

    def abandon_stream(self, stream_id: int) -> None:
        """Forget a stream the peer will never process (above a GOAWAY's last id).

        Nothing is sent: RFC 9113 section 6.8 says the peer ignores such
        streams. Late frames for it are then treated as for a reset stream.
        """
        if self.streams.pop(stream_id, None) is not None:
            self._closed_streams[stream_id] = StreamClosedBy.SEND_RST_STREAM

    def send_goaway(
        self,
        error_code: int = ErrorCodes.NO_ERROR,
        last_stream_id: int | None = None,
        debug_data: bytes = b"",
    ) -> None:
        """Queue a GOAWAY frame without closing h2's state machine.

        Unlike h2's ``close_connection()``, streams up to ``last_stream_id``
        can still send and receive afterwards, as RFC 9113 section 6.8 intends.
        """
        frame = GoAwayFrame(stream_id=0)
        frame.last_stream_id = (
            self.highest_inbound_stream_id if last_stream_id is None else last_stream_id
        )
        frame.error_code = int(error_code)
        frame.additional_data = debug_data
        self._prepare_for_sending([frame])

    def receive_data(self, data: Buffer) -> list[Event]:
        """h2's ``receive_data``, with DATA and HEADERS of open streams taken without frame objects.

        h2's loop, error handling included; each frame that
        :meth:`_receive_open_stream_frame` does not take goes through h2's
        frame buffer and dispatch. And a frame announcing more than our
        SETTINGS_MAX_FRAME_SIZE is rejected as soon as its header is in: h2
        checks only once the whole announced body has arrived, so a peer
        announcing 16 MiB and then stalling would park the connection (what
        is left buffered is the start of one incomplete frame, checked once
        per batch).
        """
        buffer = self.incoming_buffer
        buffer.add_data(data)
        buffer.max_frame_size = self.max_inbound_frame_size
        events: list[Event] = []
        try:
            while True:
                if self._receive_open_stream_frame(events):
                    continue
                frame = next(buffer, None)
                if frame is None:
                    break
                events.extend(self._receive_frame(frame))
            pending = getattr(buffer, _BUFFERED)
            if len(pending) >= 9:
                buffer._validate_frame_length(int.from_bytes(pending[:3], "big"))
        except InvalidPaddingError as exc:
            self._terminate_connection(ErrorCodes.PROTOCOL_ERROR)
            raise ProtocolError("Received frame with invalid padding.") from exc
        except ProtocolError as exc:
            self._terminate_connection(exc.error_code)  # h2 queues GOAWAY naming it
            raise
        return events

    def _receive_open_stream_frame(self, events: list[Event]) -> bool:
        """Take the next buffered frame if it is plain DATA or HEADERS of a receiving stream.

        What h2's frame buffer and its ``_receive_data_frame`` or
        ``_receive_headers_frame`` would do with it, without building a
        frame object: only for a complete frame within the frame size, not
        in the middle of a header block, on a stream h2 has open or
        half-closed (local), without padding, priority or CONTINUATION
        frames; anything else is left to h2.

        Returns:
            False when the frame was left to h2 (or none is complete).
        """
        buffer = self.incoming_buffer
        pending = getattr(buffer, _BUFFERED)
        if len(pending) < 9 or buffer._headers_buffer:
            return False
        length = int.from_bytes(pending[:3], "big")
        kind, flags = pending[3], pending[4]
        if kind == _DATA:
            plain = not flags & _PADDED
        elif kind == _HEADERS:
            plain = flags & _NOT_PLAIN_HEADERS == _END_HEADERS and self._inbound_as_is
        else:
            return False
        if not plain or length > buffer.max_frame_size or len(pending) < 9 + length:
            return False
        stream = self.streams.get(int.from_bytes(pending[5:9], "big") & MAX_STREAM_ID)
        if stream is None or stream.state_machine.state not in _RECEIVING:
            return False
        body = bytes(pending[9 : 9 + length])
        if isinstance(pending, bytearray):
            del pending[: 9 + length]
        else:  # h2 < 4.2 keeps bytes
            setattr(buffer, _BUFFERED, pending[9 + length :])
        end_stream = bool(flags & _END_STREAM)
        if kind == _DATA:
            events += self._connection_input(ConnectionInputs.RECV_DATA)
            self._inbound_flow_control_window_manager.window_consumed(length)
            events += stream.receive_data(body, end_stream, length)[1]
        else:
            headers = list(_decode_headers(self.decoder, body))  # the event's own list
            events += self._connection_input(ConnectionInputs.RECV_HEADERS)
            events += _received_headers(stream, headers, end_stream)
        return True

    def take_output(self) -> bytearray:
        """Return and clear the bytes waiting to be sent (no copy, unlike ``data_to_send``)."""
        data: bytearray = self._data_to_send
        self._data_to_send = bytearray()
        return data

    def _receive_frame(self, frame: Frame) -> list[Event]:
        # h2's _receive_frame, less its first line: ``self.config.logger.trace(
        # "Received frame: %s", repr(frame))`` formats every frame for a logger
        # that discards it (h2pool gives h2 none). The error handling is h2's.
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        result: list[Event] = events
        return result

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[Event]]:
        # h2's, for a stream already open and h2's inbound header checks off:
        # the same decoding, state changes and checks, less the validation
        # flags that only those checks read. Anything else goes to h2.
        stream = self.streams.get(frame.stream_id)
        flags = frame.flags
        if stream is None or not self._inbound_as_is or "PRIORITY" in flags:
            return super()._receive_headers_frame(frame)
        headers = list(_decode_headers(self.decoder, frame.data))  # the event's own list
        events = self._connection_input(ConnectionInputs.RECV_HEADERS)
        return [], events + _received_headers(stream, headers, "END_STREAM" in flags)

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        # h2 moves to CLOSED and clears queued output (acks we owe) here; only
        # report the GOAWAY and leave the drain to the Session.
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def _received_headers(stream: H2Stream, headers: list[Any], end_stream: bool) -> list[Event]:
    """h2's ``H2Stream.receive_headers`` with its inbound checks off (headers kept as bytes)."""
    if is_informational_response(headers):
        if end_stream:
            raise ProtocolError("Cannot set END_STREAM on informational responses")
        kind = StreamInputs.RECV_INFORMATIONAL_HEADERS
    else:
        kind = StreamInputs.RECV_HEADERS
    machine = stream.state_machine
    events: list[Any] = machine.process_input(kind)
    if end_stream:
        ended = machine.process_input(StreamInputs.RECV_END_STREAM)
        events[0].stream_ended = ended[0]
        events += ended
    stream._initialize_content_length(headers)  # a body longer than content-length is refused
    if isinstance(events[0], TrailersReceived) and not end_stream:
        raise ProtocolError("Trailers must have END_STREAM set")
    events[0].headers = headers
    return events
