"""One stream's state: its send half and receive half, as enums.

A stream is open (counted against MAX_CONCURRENT_STREAMS) from the moment it
is admitted until its send half is ``SendState.CLOSED`` and its receive half
is ``RecvState.ENDED`` or ``RecvState.RESET``; the
:class:`~h2pool._core.session.Session` then closes it exactly once (RFC 9113
section 5.1: a stream is closed when both halves are, or on RST_STREAM).
Data received before the end stays readable after that.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TypeAlias

from .._exceptions import H2PoolError
from .headers import HeaderList

__all__ = ["OutboundItem", "RecvState", "SendState", "Stream"]

#: A queued send: a DATA slice and whether it ends the stream, or a trailer block.
OutboundItem: TypeAlias = tuple[memoryview, bool] | list[tuple[bytes, bytes]]


class SendState(enum.Enum):
    """What this side may still send on a stream."""

    OPEN = "open"  #: DATA and trailers may be queued
    ENDING = "ending"  #: END_STREAM queued behind data not yet handed to h2
    CLOSED = "closed"  #: END_STREAM handed to h2, or the stream was reset


class RecvState(enum.Enum):
    """What this side may still receive on a stream."""

    HEADERS = "headers"  #: waiting for the (final) response headers
    BODY = "body"  #: headers in; DATA and trailers may follow
    ENDED = "ended"  #: END_STREAM received: the buffered data is the whole body
    RESET = "reset"  #: abandoned (reset either way, or failed): nothing more is read


class Stream:
    """Receive buffer, send queue, state and priority of one stream.

    Attributes:
        id: The stream id.
        send: The send half.
        recv: The receive half.
        block: Request (server) or final response (client) headers as received
            (bytes pairs), None until they arrive.
        headers: The same as (str, str) pairs, decoded on first use.
        trailers: Trailers received, if any.
        chunks: Received DATA not yet read.
        buffered: Bytes in ``chunks``.
        outbound: DATA slices and trailers queued for sending.
        error: Why the stream failed, raised by every later call on it.
        urgency: RFC 9218 urgency, 0 (first) to 7.
        incremental: RFC 9218 incremental flag.
        rank: Order among streams of the same urgency (see scheduler.py).
    """

    __slots__ = (
        "block",
        "buffered",
        "chunks",
        "error",
        "headers",
        "id",
        "incremental",
        "outbound",
        "rank",
        "recv",
        "send",
        "trailers",
        "urgency",
    )

    def __init__(self, stream_id: int, *, send: SendState, recv: RecvState) -> None:
        self.id = stream_id
        self.send = send
        self.recv = recv
        self.block: list[tuple[bytes, bytes]] | None = None
        self.headers: HeaderList | None = None
        self.trailers: HeaderList | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.outbound: deque[OutboundItem] = deque()
        self.error: H2PoolError | None = None
        self.urgency = 3
        self.incremental = False
        self.rank = stream_id

    @property
    def done(self) -> bool:
        """Whether both halves are over, so the stream is closed (RFC 9113 section 5.1)."""
        return self.send is SendState.CLOSED and (
            self.recv is RecvState.ENDED or self.recv is RecvState.RESET
        )
