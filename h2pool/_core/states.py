"""The states of a connection, and what a Session asks of its driver.

The connection moves forward only: :attr:`ConnectionState.OPEN` ->
:attr:`ConnectionState.DRAINING` (with :class:`Drain` saying which side sent
GOAWAY) -> :attr:`ConnectionState.CLOSED`. Each Session call records in
:class:`Wakeups` whom to wake and what to tell the listener; the asyncio shim
applies and clears them.
"""

from __future__ import annotations

import enum

__all__ = ["CloseAction", "ConnectionEvent", "ConnectionState", "Drain", "Wakeups"]


class ConnectionEvent(enum.Enum):
    """What changed on a connection, as told to its listener (see ``set_listener``)."""

    SLOT_FREED = "slot_freed"  #: a stream this side opened has closed
    LIMIT_CHANGED = "limit_changed"  #: the peer changed MAX_CONCURRENT_STREAMS
    DRAINING = "draining"  #: GOAWAY sent or received: no new streams
    CLOSED = "closed"  #: the connection is unusable; ``error`` says why


class ConnectionState(enum.Enum):
    """The life of a connection; it only moves forward."""

    OPEN = "open"  #: new streams may start
    DRAINING = "draining"  #: no new streams; open ones may finish (see :class:`Drain`)
    CLOSED = "closed"  #: unusable; ``Session.error`` says why


class Drain(enum.Flag):
    """Which side stopped new streams on a draining connection."""

    NONE = 0
    LOCAL = enum.auto()  #: this side sent GOAWAY, or ran out of stream ids
    REMOTE = enum.auto()  #: the peer sent GOAWAY


class CloseAction(enum.Enum):
    """What the shim must do with the transport."""

    CLOSE = "close"  #: send what is queued, then close
    ABORT = "abort"  #: drop at once


class Wakeups:
    """What a Session call asks its driver to do; drained by the driver after each call.

    Attributes:
        receivers: Ids of streams whose readers must re-check their stream.
        senders: Ids of streams whose writers must re-check their queue.
        events: Connection events for the listener, in order.
        requests: Whoever waits in ``recv_request`` must re-check.
        pings: PING waiters must re-check (answered, or the connection failed).
        close: Close or abort the transport.
    """

    __slots__ = ("close", "events", "pings", "receivers", "requests", "senders")

    def __init__(self) -> None:
        self.receivers: list[int] = []
        self.senders: list[int] = []
        self.events: list[ConnectionEvent] = []
        self.requests = False
        self.pings = False
        self.close: CloseAction | None = None
