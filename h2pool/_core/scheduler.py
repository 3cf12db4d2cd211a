"""The RFC 9218 DATA scheduler: which stream's queued output goes next.

RFC 9218 section 10: lower urgency first; within one urgency,
non-incremental streams one after the other in stream-id order, incremental
ones in turns. A stream's ``rank`` encodes that order: its id while it is
non-incremental, a turn number (above every stream id) taken each time an
incremental stream sends a frame.
"""

from __future__ import annotations

import itertools

from h2.connection import H2Connection

from .h2compat import MAX_STREAM_ID
from .priority import Priority
from .streams import Stream

__all__ = ["DataScheduler"]


class DataScheduler:
    """Streams with queued output, and the order in which they send."""

    __slots__ = ("_turns", "ready")

    def __init__(self) -> None:
        #: Streams with something queued, by id.
        self.ready: dict[int, Stream] = {}
        self._turns = itertools.count(MAX_STREAM_ID + 1)

    def add(self, stream: Stream) -> None:
        """Note that ``stream`` has output queued."""
        self.ready[stream.id] = stream

    def discard(self, stream_id: int) -> None:
        """Forget a stream that has nothing more to send."""
        self.ready.pop(stream_id, None)

    def next(self, conn: H2Connection) -> Stream | None:
        """The stream that sends next, or None when every one waits for window."""
        connection_open = conn.outbound_flow_control_window > 0
        best: Stream | None = None
        for stream in self.ready.values():
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

    def sent(self, stream: Stream) -> None:
        """``stream`` sent a frame: an incremental one goes to the back of its urgency."""
        if stream.incremental:
            stream.rank = next(self._turns)

    def prioritize(self, stream: Stream, priority: Priority) -> None:
        """Apply a new priority (RFC 9218 section 7) to ``stream``."""
        stream.urgency = priority.urgency
        if priority.incremental != stream.incremental:
            stream.incremental = priority.incremental
            stream.rank = next(self._turns) if priority.incremental else stream.id
