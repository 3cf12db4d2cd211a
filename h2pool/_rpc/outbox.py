"""The request messages of a streaming call, on their way to the pool.

A call writes messages into an :class:`Outbox`; the pool's body sender
iterates it and sends each as DATA (waiting for flow-control window), so a
writer faster than the network waits in :meth:`Outbox.write`. The outbox
keeps what it gave until the call is committed (its response headers
arrived), so that an attempt the server never processed can be sent again
from the first message: gRFC A6's replay buffer, bounded per call.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .._exceptions import H2PoolError

__all__ = ["REPLAY_LIMIT", "Outbox", "OutboxClosed"]

#: Bytes of sent messages kept per call for a replay (grpc's per-RPC retry buffer
#: is 256 KiB by default); past it, a started call is no longer retried.
REPLAY_LIMIT = 256 * 1024


class OutboxClosed(H2PoolError):
    """A message was written after ``done_writing()`` or after the call ended."""


class Outbox:
    """Framed request messages, handed one at a time to the pool's sender.

    ``write()`` returns once the sender took the message (one message in
    hand at a time: the backpressure of the HTTP/2 window reaches the writer).
    Iterating after :meth:`rewind` gives the kept messages again first.
    """

    def __init__(self, replay_limit: int = REPLAY_LIMIT) -> None:
        self._ready: deque[bytes] = deque()
        self._taken: asyncio.Event = asyncio.Event()
        self._arrived: asyncio.Event = asyncio.Event()
        self._ended = False
        self._error: BaseException | None = None
        self._kept: list[bytes] | None = []
        self._kept_bytes = 0
        self._replay_limit = replay_limit
        self._position = 0

    # -- the writer's side ------------------------------------------------

    @property
    def ended(self) -> bool:
        """Whether ``end()`` was called: no more messages."""
        return self._ended

    async def write(self, frame: bytes) -> None:
        """Queue one framed message; return once the sender took it.

        Raises:
            OutboxClosed: The outbox was ended or failed.
        """
        if self._ended or self._error is not None:
            raise OutboxClosed("the request stream is closed: no more messages can be written")
        self._ready.append(frame)
        self._arrived.set()
        while self._ready and self._error is None:
            self._taken.clear()
            await self._taken.wait()

    def end(self) -> None:
        """No more messages: the request stream ends after those queued."""
        self._ended = True
        self._arrived.set()

    def fail(self, error: BaseException) -> None:
        """Stop: the sender and any writer get ``error``."""
        self._error = error
        self._ready.clear()
        self._arrived.set()
        self._taken.set()

    def commit(self) -> None:
        """The call is committed: nothing will be replayed, drop what was kept."""
        self._kept = None

    # -- the pool's side (h2pool._pool.outgoing.Rewindable) ---------------

    @property
    def rewindable(self) -> bool:
        """Whether every message given so far is still kept."""
        return self._kept is not None

    def rewind(self) -> None:
        """Start again from the first message at the next iteration."""
        self._position = 0

    def __aiter__(self) -> Outbox:
        return self

    async def __anext__(self) -> bytes:
        kept = self._kept
        if kept is not None and self._position < len(kept):
            self._position += 1
            return kept[self._position - 1]
        while not self._ready:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._arrived.clear()
            await self._arrived.wait()
        frame = self._ready.popleft()
        self._taken.set()
        if kept is not None:
            self._kept_bytes += len(frame)
            if self._kept_bytes > self._replay_limit:
                self._kept = None
            else:
                kept.append(frame)
                self._position += 1
        return frame
