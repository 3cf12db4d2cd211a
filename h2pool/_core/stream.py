"""What the core module keeps about one stream while it is open."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeAlias

from .._exceptions import H2PoolError
from .headers import HeaderList

__all__ = ["OutboundItem", "Stream"]

#: A queued send: a DATA slice and whether it ends the stream, or a trailer block.
OutboundItem: TypeAlias = tuple[memoryview, bool] | list[tuple[bytes, bytes]]


class Stream:
    """Receive buffer, send queue, waiters and priority of one open stream.

    Waiters are plain futures that are only woken: whoever waits re-reads the
    state (data, end, error) after waking, so one wake-up path serves success
    and failure alike.
    """

    __slots__ = (
        "buffered",
        "chunks",
        "end_queued",
        "ended",
        "error",
        "headers",
        "id",
        "incremental",
        "local_closed",
        "outbound",
        "rank",
        "recv_waiter",
        "reset",
        "send_waiter",
        "trailers",
        "urgency",
    )

    def __init__(self, stream_id: int, urgency: int = 3, incremental: bool = False) -> None:
        self.id = stream_id
        # Receive side.
        self.headers: HeaderList | None = None
        self.trailers: HeaderList | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.ended = False  # END_STREAM received
        self.recv_waiter: asyncio.Future[None] | None = None
        # Send side.
        self.outbound: deque[OutboundItem] = deque()
        self.end_queued = False  # END_STREAM accepted from the caller
        self.local_closed = False  # END_STREAM handed to h2
        self.send_waiter: asyncio.Future[None] | None = None
        # Both.
        self.error: H2PoolError | None = None
        self.reset = False
        # RFC 9218 scheduling: lower urgency first, then rank (stream id for
        # non-incremental streams, a turn counter for incremental ones).
        self.urgency = urgency
        self.incremental = incremental
        self.rank = stream_id

    @property
    def closed(self) -> bool:
        """Whether h2 considers the stream closed (both ends done, or reset)."""
        return self.reset or (self.ended and self.local_closed)

    def wake_receiver(self) -> None:
        """Wake whoever waits for headers, data, trailers or the end."""
        waiter = self.recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake_sender(self) -> None:
        """Wake whoever waits for queued data to leave."""
        waiter = self.send_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: H2PoolError) -> None:
        """Fail every pending and later operation on the stream with ``error``."""
        if self.error is None:
            self.error = error
        self.outbound.clear()
        self.wake_receiver()
        self.wake_sender()
