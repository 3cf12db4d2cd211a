"""Request bodies given as sync iterables, read in the calling thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

__all__ = ["CallerUpload", "bridged"]

# A chunk the loop asks the calling thread for; None once the iterable ended.
_Demand = concurrent.futures.Future[bytes | None]


class CallerUpload:
    """A sync iterable of bytes, sent by the pool as the async iterable it expects.

    The loop asks for each chunk and the calling thread, waiting for its
    call anyway, takes it from the iterable (:meth:`feed`): the caller's
    code (a file, a framework's request stream, thread-local state) runs in
    the caller's thread, and a slow iterable never stalls the shared loop.
    """

    def __init__(self, source: Iterable[bytes]) -> None:
        self._chunks = iter(source)
        self._demands: queue.SimpleQueue[_Demand | None] = queue.SimpleQueue()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """On the loop: each chunk, asked of the calling thread."""
        while True:
            demand: _Demand = concurrent.futures.Future()
            self._demands.put(demand)
            chunk = await asyncio.wrap_future(demand)
            if chunk is None:
                return
            yield chunk

    def feed(self, call: concurrent.futures.Future[Any]) -> None:
        """In the calling thread: answer the loop's demands until ``call`` ended.

        Called again for each later call that waits while the body may still
        be sent (the response body's reads of a stream).
        """
        call.add_done_callback(lambda _: self._demands.put(None))
        while (demand := self._demands.get()) is not None:
            if not demand.set_running_or_notify_cancel():
                continue  # the loop stopped waiting for it
            try:
                chunk = next(self._chunks, None)
            except Exception as exc:  # the caller's iterable failed: the upload fails with it
                demand.set_exception(exc)
            else:
                demand.set_result(chunk)


def bridged(content: Any) -> tuple[Any, CallerUpload | None]:
    """``content`` as the pool takes it: a sync iterable of chunks becomes a CallerUpload.

    Bytes, str, async iterables and anything else go through unchanged (the
    pool checks them); so do mappings, which are not bodies.
    """
    if isinstance(content, Iterable) and not isinstance(
        content, str | bytes | bytearray | memoryview | Mapping
    ):
        upload = CallerUpload(content)
        return upload, upload
    return content, None
