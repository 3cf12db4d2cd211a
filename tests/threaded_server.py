"""h2pool's own server on its own event loop in its own thread, for blocking clients."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import h2pool
from tests.servers import Handler, Server

T = TypeVar("T")


class ThreadedServer:
    """A :class:`tests.servers.Server` whose loop runs in a thread of its own.

    The test's thread stays free to block (``SyncPool``, ``httpx.Client``);
    :meth:`run` runs a coroutine on the server's loop and waits for it.
    A handler's h2pool errors (a client that reset its stream) are kept in
    ``handler_errors`` rather than left for the loop to log as never
    retrieved: that log formats a traceback in whichever thread collects
    the task, and CPython 3.11's traceback formatting (``ast.parse``) is not
    safe in two threads at once (gh-106905).
    """

    def __init__(self, handler: Handler, **kwargs: object) -> None:
        self.handler_errors: list[h2pool.H2PoolError] = []

        async def guarded(
            proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
        ) -> None:
            try:
                await handler(proto, stream_id, headers)
            except h2pool.H2PoolError as exc:
                self.handler_errors.append(exc)

        self.server = Server(guarded, **kwargs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="test server loop", daemon=True
        )

    @property
    def port(self) -> int:
        """The server's port on 127.0.0.1."""
        return self.server.port

    def url(self, path: str = "") -> str:
        """``http://127.0.0.1:port`` followed by ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the server's loop; bounded."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` on the server's loop (to set an ``asyncio.Event``, say)."""
        self.loop.call_soon_threadsafe(callback)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        self.run(self.server.__aenter__())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self.server.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds: for states with no event to wait for (as
    ``tests.waiting.eventually``, for a blocking test).

    Raises:
        TimeoutError: The condition did not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not hold in time")
        time.sleep(0.005)
