"""Response bodies streamed on the loop and read by a blocking caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Generic, TypeVar

from .._exceptions import PoolClosed
from .loop import LoopThread
from .upload import CallerUpload

__all__ = ["BlockingBody", "Held"]

T_co = TypeVar("T_co", covariant=True)


class Held(Generic[T_co]):
    """An async context manager entered on the loop for a caller in another thread.

    The caller may stop waiting while it is being entered (KeyboardInterrupt):
    :meth:`release` then runs on the loop after the cancellation, and whatever
    was entered anyway is exited, by :meth:`release` or by :meth:`enter` itself.
    """

    def __init__(self, manager: contextlib.AbstractAsyncContextManager[T_co]) -> None:
        self._manager = manager
        self._entered = False
        self._released = False

    async def enter(self) -> T_co:
        """Enter the manager (on the loop)."""
        value = await self._manager.__aenter__()
        self._entered = True
        if self._released:  # the caller stopped waiting before this ended
            await self.release()
            raise asyncio.CancelledError
        return value

    async def release(self) -> None:
        """Exit the manager if it was entered; idempotent."""
        self._released = True
        if self._entered:
            self._entered = False
            await self._manager.__aexit__(None, None, None)


class BlockingBody:
    """A body streamed on the loop, iterated in the calling thread.

    Args:
        loop: The loop the body lives on.
        held: What holds the body's stream open.
        chunks: The body, as the loop iterates it.
        upload: The request body, if it is still being sent: this thread goes
            on feeding it while it waits for the response body (full duplex).
    """

    def __init__(
        self,
        loop: LoopThread,
        held: Held[object],
        chunks: AsyncIterator[bytes],
        upload: CallerUpload | None = None,
    ) -> None:
        self._loop = loop
        self._held = held
        self._chunks = chunks
        self._upload = upload
        self._released = False

    def __iter__(self) -> Iterator[bytes]:
        """Each chunk as it arrives; each wait bounded by the request's timeouts."""
        while chunk := self._loop.call(self._next, upload=self._upload):
            yield chunk
        self._released = True

    async def _next(self) -> bytes:
        chunk = await anext(self._chunks, b"")
        if not chunk:  # the end: release now, saving close() a trip to the loop
            await self._held.release()
        return chunk

    def close(self) -> None:
        """Release the stream (an unread rest is abandoned: RST_STREAM CANCEL)."""
        if not self._released:
            self._released = True
            with contextlib.suppress(PoolClosed):  # closing the pool released it
                self._loop.call(self._held.release)
