"""One event loop in a background thread, for callers that block.

A :class:`LoopThread` starts its thread on first use; every call submits a
coroutine to it and waits in the calling thread, so any number of threads
share the loop (and what lives on it: the pool's connections). The thread
is a daemon: a process that never closes its pool still exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .._exceptions import PoolClosed
from .._pool.deadlines import adopt, caller_deadline
from .upload import CallerUpload

__all__ = ["LoopState", "LoopThread"]

T = TypeVar("T")

# Seconds the calls left after closing get to end on their own before they are cancelled.
_GRACE = 1.0


class LoopState(enum.Enum):
    """Where a :class:`LoopThread` is in its life."""

    NEW = "new"  # no thread yet: started by the first call
    RUNNING = "running"
    CLOSED = "closed"  # closed (or closing): calls raise PoolClosed


def refuse_running_loop(what: str) -> None:
    """Raise RuntimeError when called from a coroutine: blocking there would stall its loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{what} blocks, and this thread runs an event loop: use h2pool.Pool "
        "(await pool.request(...)) in async code, or call it from another thread"
    )


class LoopThread:
    """An event loop in a daemon thread, started on first use, stopped by :meth:`close`.

    Args:
        owner: What uses it, for messages and the thread's name (``"SyncPool"``).
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._lock = threading.Lock()  # guards the state, the thread and submissions
        self._state = LoopState.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0  # the process that started the thread

    def call(
        self,
        factory: Callable[[], Awaitable[T]],
        *,
        upload: CallerUpload | None = None,
        abandon: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> T:
        """Run ``factory()`` on the loop and wait for its result in this thread.

        The coroutine bounds itself (the request's timeouts); if this thread
        stops waiting (KeyboardInterrupt, or any exception raised into it),
        the coroutine is cancelled and ``abandon()`` runs on the loop after
        that cancellation, to release what it may have opened anyway.

        Args:
            factory: Makes the coroutine, on the loop (nothing to clean up
                when the call is refused).
            upload: A request body read in this thread while waiting.
            abandon: Cleanup for a caller that stopped waiting.

        Raises:
            PoolClosed: The loop is closed, or was closed during the call.
            RuntimeError: Called from a running event loop.
        """
        refuse_running_loop(self._owner)
        # The calling thread's h2pool.deadline(), which the loop's thread cannot see.
        future = self._submit(_run(factory, caller_deadline()))
        try:
            if upload is not None:
                upload.feed(future)
            try:
                return future.result()
            except concurrent.futures.CancelledError:
                # Only close() cancels a call this thread still waits for.
                raise PoolClosed(f"the {self._owner} was closed during the call") from None
        except BaseException:
            future.cancel()  # a no-op once it ended
            if abandon is not None:
                self._queue(abandon)
            raise

    def close(self, finish: Callable[[], Awaitable[None]]) -> None:
        """Run ``finish()`` on the loop, cancel what is left, stop the loop and join its thread.

        Idempotent; calls in flight that ``finish()`` does not end raise PoolClosed.
        """
        with self._lock:
            if self._state is LoopState.RUNNING:
                refuse_running_loop(self._owner)
            state, self._state = self._state, LoopState.CLOSED
        thread = self._thread
        if state is LoopState.RUNNING and self._pid != os.getpid():
            return  # a forked child: the loop's thread is the parent's, nothing runs it here
        if state is not LoopState.RUNNING:
            if thread is not None and thread is not threading.current_thread():
                thread.join()  # another close() is stopping it
            return
        loop = self._running_loop()
        assert thread is not None
        try:
            asyncio.run_coroutine_threadsafe(_finish(finish), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._state is LoopState.CLOSED:
                coroutine.close()
                raise PoolClosed(f"the {self._owner} is closed")
            if self._state is LoopState.NEW:
                self._start()
            elif self._pid != os.getpid():
                coroutine.close()
                raise RuntimeError(
                    f"this {self._owner} was started before the process forked: its loop "
                    "thread and connections belong to the parent; create (or first use) "
                    "pools in each worker process, after the fork"
                )
            return asyncio.run_coroutine_threadsafe(coroutine, self._running_loop())

    def _queue(self, cleanup: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``cleanup()`` on the loop without waiting, after what is queued already.

        Nothing to do once closing: closing cancels and releases everything.
        """
        with self._lock:
            if self._state is LoopState.RUNNING:
                asyncio.run_coroutine_threadsafe(cleanup(), self._running_loop())

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=_serve, args=(loop,), name=f"h2pool {self._owner} loop", daemon=True
        )
        thread.start()
        self._loop, self._thread, self._state = loop, thread, LoopState.RUNNING
        self._pid = os.getpid()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop


async def _run(factory: Callable[[], Awaitable[T]], deadline: float | None) -> T:
    adopt(deadline)  # this task's own context: no other call sees it
    return await factory()


async def _finish(finish: Callable[[], Awaitable[None]]) -> None:
    """``finish()``, then let the other tasks on the loop end, cancelling them after a bound."""
    try:
        await finish()
    finally:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        if tasks:
            # Calls whose connections finish() closed end on their own, with
            # the pool's own error (saying whether the request was processed).
            _, pending = await asyncio.wait(tasks, timeout=_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The thread: run the loop until stopped, then close it as ``asyncio.run`` does."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            # Name resolution runs in the default executor: its threads end here.
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
