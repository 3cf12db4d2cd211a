"""Receiver: what the peer's frames do to a Session.

h2 parses the bytes and runs its per-stream state machine; this module turns
the events it reports into the Session's explicit transitions (a half ended,
a stream reset or abandoned, a drain begun) and checks what h2 does not
check (request and response header blocks, and trailers, RFC 9113 section
8.1.1: a malformed one is a stream error, not a connection error).
Synchronous and without I/O, like the Session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h2.events as ev
from h2.errors import ErrorCodes
from h2.exceptions import H2Error
from h2.settings import SettingCodes
from hyperframe.frame import ExtensionFrame

from .._exceptions import H2ProtocolError
from . import errors
from .headers import CheckedResponses, decode_headers, request_problem, response_problem
from .priority import PRIORITY_UPDATE_FRAME, parse_priority_update
from .states import CloseAction, ConnectionEvent, Drain
from .streams import RecvState

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Receiver"]

logger = logging.getLogger("h2pool.core")

_TOO_MANY_PINGS = b"too_many_pings"
# Events of HEADERS or DATA frames from the peer: they renew the ping budget,
# as they are what resets the ping strikes of gRPC servers (health.PingBudget).
_RENEWING = frozenset(
    {
        ev.RequestReceived,
        ev.ResponseReceived,
        ev.TrailersReceived,
        ev.InformationalResponseReceived,
        ev.DataReceived,
    }
)


class Receiver:
    """Feeds received bytes to h2 and applies each event to the Session."""

    __slots__ = ("_handlers", "_responses", "_session", "_strict")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._strict = session.config.validate_headers
        self._responses = CheckedResponses(strict=self._strict)
        self._handlers: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.RequestReceived: self._on_request,
            ev.ResponseReceived: self._on_response,
            ev.TrailersReceived: self._on_trailers,
            ev.InformationalResponseReceived: self._on_informational,
            ev.DataReceived: self._on_data,
            ev.StreamEnded: self._on_stream_ended,
            ev.StreamReset: self._on_stream_reset,
            ev.RemoteSettingsChanged: self._on_settings_changed,
            ev.PingAckReceived: self._on_ping_ack,
            ev.ConnectionTerminated: self._on_goaway,
            ev.UnknownFrameReceived: self._on_unknown_frame,
        }

    def receive(self, data: bytes, now: float) -> None:
        """Process received bytes; a violation fails the connection (GOAWAY queued)."""
        session = self._session
        session.last_received = now
        handlers = self._handlers
        try:
            for event in session.conn.receive_data(data):
                kind = type(event)
                if kind in _RENEWING:
                    session.pings_since_data = 0
                handler = handlers.get(kind)
                if handler is not None:
                    handler(event)
                # Other events (PING, SETTINGS ack, PRIORITY, ALTSVC) need no action.
        except H2Error as exc:
            session.fail(errors.violation(exc))  # h2 has queued a GOAWAY naming it
            session.wakeups.close = CloseAction.CLOSE
        except Exception as exc:  # a defect must not leave awaits hanging
            logger.exception("failed to process received data")
            session.fail(H2ProtocolError(f"cannot process received data: {exc!r}"))
            session.wakeups.close = CloseAction.ABORT

    def _on_request(self, event: ev.RequestReceived) -> None:
        session = self._session
        stream_id: int = event.stream_id
        sent = session.goaway_sent_id
        if (
            session.error is not None
            or (sent is not None and stream_id > sent)
            or session.inbound_open >= session.concurrency
        ):
            # RFC 9113 sections 5.1.2 and 8.7: refused streams were not processed.
            session.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            session.conn.forget_stream(stream_id)
            return
        problem = request_problem(event.headers, received=True) if self._strict else None
        if problem is not None:
            # RFC 9113 section 8.1.1: a malformed request is a stream error
            # (PROTOCOL_ERROR); the connection and its other streams go on.
            logger.debug("stream %d: malformed request refused: %s", stream_id, problem)
            session.conn.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
            session.conn.forget_stream(stream_id)
            return
        session.admit_request(stream_id, event.headers)

    def _on_response(self, event: ev.ResponseReceived) -> None:
        session = self._session
        stream = session.streams.get(event.stream_id)
        if stream is None:
            return
        block = event.headers
        problem, fields = self._responses.check(block)
        if problem is not None:
            session.abort(stream, ErrorCodes.PROTOCOL_ERROR, errors.malformed(stream.id, problem))
            return
        stream.block = block
        stream.headers = fields  # what recv_response() returns
        stream.recv = RecvState.BODY
        session.wakeups.receivers.append(stream.id)

    def _on_informational(self, event: ev.InformationalResponseReceived) -> None:
        session = self._session
        stream = session.streams.get(event.stream_id)
        if stream is None:
            return
        problem = response_problem(event.headers, trailers=False, strict=self._strict)
        if problem is not None:
            session.abort(stream, ErrorCodes.PROTOCOL_ERROR, errors.malformed(stream.id, problem))
            return
        logger.debug("stream %d: informational response %s", event.stream_id, event.headers)

    def _on_trailers(self, event: ev.TrailersReceived) -> None:
        session = self._session
        stream = session.streams.get(event.stream_id)
        if stream is None:
            return
        # Either side's trailers: h2 checks none of them (see request_problem).
        problem = response_problem(event.headers, trailers=True, strict=self._strict)
        if problem is not None:
            session.abort(stream, ErrorCodes.PROTOCOL_ERROR, errors.malformed(stream.id, problem))
            return
        stream.trailers = decode_headers(event.headers)

    def _on_data(self, event: ev.DataReceived) -> None:
        session = self._session
        stream_id: int = event.stream_id
        data: bytes = event.data
        flow_length: int = event.flow_controlled_length
        stream = session.streams.get(stream_id)
        if stream is None or stream.recv is RecvState.RESET:
            # Nobody will read it: give the window back at once.
            session.conn.acknowledge_received_data(flow_length, stream_id)
            return
        if flow_length > len(data):  # padding is never read: return it now
            session.conn.acknowledge_received_data(flow_length - len(data), stream_id)
        if data:
            stream.chunks.append(data)
            stream.buffered += len(data)
            session.wakeups.receivers.append(stream_id)

    def _on_stream_ended(self, event: ev.StreamEnded) -> None:
        session = self._session
        stream = session.streams.get(event.stream_id)
        if stream is not None:
            session.end_received(stream)

    def _on_stream_reset(self, event: ev.StreamReset) -> None:
        session = self._session
        stream = session.streams.get(event.stream_id)
        if stream is None:
            return
        code = int(event.error_code or 0)
        if stream.recv is RecvState.ENDED and code == ErrorCodes.NO_ERROR:
            # RFC 9113 section 8.1: the response is complete and the peer
            # wants no more of the request body. Not an error.
            stream.outbound.clear()
            session.wakeups.senders.append(stream.id)
            session.end_sent(stream)
            return
        error = errors.peer_reset(stream.id, code, by_peer=event.remote_reset)
        session.abandon(stream, error, keep_body=True)

    def _on_settings_changed(self, event: ev.RemoteSettingsChanged) -> None:
        session = self._session
        changed = event.changed_settings
        if SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            peer_limit = changed[SettingCodes.MAX_CONCURRENT_STREAMS].new_value
            session.max_streams = min(session.concurrency, peer_limit)
            session.wakeups.events.append(ConnectionEvent.LIMIT_CHANGED)

    def _on_ping_ack(self, event: ev.PingAckReceived) -> None:
        session = self._session
        if event.ping_data != session.ping_payload or session.ping_sent_at is None:
            return
        session.rtt = session.last_received - session.ping_sent_at
        session.ping_payload = session.ping_sent_at = None
        session.wakeups.pings = True

    def _on_goaway(self, event: ev.ConnectionTerminated) -> None:
        session = self._session
        code = int(event.error_code or 0)
        last_id = event.last_stream_id or 0
        debug = event.additional_data or b""
        log = logger.debug if code == ErrorCodes.NO_ERROR else logger.warning
        log("GOAWAY received: %s, last_stream_id=%d, %r", errors.error_name(code), last_id, debug)
        if code == ErrorCodes.ENHANCE_YOUR_CALM and _TOO_MANY_PINGS in debug:
            session.ping_interval *= 2
            logger.warning(
                "peer sent too_many_pings: ping interval now %.3fs", session.ping_interval
            )
        if session.goaway_received_id is not None:
            last_id = min(last_id, session.goaway_received_id)
        session.goaway_received_id = last_id
        for stream in list(session.streams.values()):
            if session.locally_initiated(stream.id) and stream.id > last_id:
                # RFC 9113 section 6.8: never processed, safe to retry anywhere.
                session.conn.abandon_stream(stream.id)
                error = errors.refused_by_goaway(stream.id, last_id, code)
                session.abandon(stream, error, keep_body=False)
        session.start_drain(Drain.REMOTE)
        session.close_if_drained()

    def _on_unknown_frame(self, event: ev.UnknownFrameReceived) -> None:
        session = self._session
        frame = event.frame
        if session.client_side or not isinstance(frame, ExtensionFrame):
            return
        update = parse_priority_update(frame.body) if frame.type == PRIORITY_UPDATE_FRAME else None
        stream = session.streams.get(update[0]) if update is not None else None
        if update is not None and stream is not None:
            session.scheduler.prioritize(stream, update[1])
