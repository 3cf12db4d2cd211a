"""SyncPool: the pool for blocking code (threads, Flask, Django), a thin shell over Pool.

Every call runs the async :class:`~h2pool.Pool` on one event loop in a
background thread (:class:`.loop.LoopThread`) and waits for it, so threads
share the pool's connections and every rule of the async pool applies.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any

from .._core.headers import HeadersIn
from .._pool.outgoing import Content
from .._pool.pool import Pool, PoolStats
from .._pool.response import Response
from .._pool.verbs import DEFAULT, QueryParams, Verbs
from .body import BlockingBody, Held
from .loop import LoopThread
from .upload import bridged

__all__ = ["SyncContent", "SyncPool", "SyncResponse", "forwarded"]

#: A request body for a blocking call: what Pool takes, or a sync iterable of bytes.
SyncContent = Content | Iterable[bytes]

# Response's own async methods, and what a SyncResponse offers instead.
_BLOCKING_INSTEAD = {"aread": "read()", "aiter_bytes": "iter_bytes()", "aclose": "close()"}


def forwarded(*, timeout: Any, hedge: Any = DEFAULT, **given: Any) -> dict[str, Any]:
    """The keywords to pass on to ``Pool.request()`` or ``Pool.stream()``: those given.

    None (and ``DEFAULT`` for ``timeout`` and ``hedge``, where None means
    "no bound" and "no hedging") means "the pool's default": such keywords
    are left out.
    """
    options = {name: value for name, value in given.items() if value is not None}
    if timeout is not DEFAULT:
        options["timeout"] = timeout
    if hedge is not DEFAULT:
        options["hedge"] = hedge
    return options


class SyncResponse:
    """The response of :meth:`SyncPool.stream`: its body read by blocking calls.

    Every attribute of :class:`h2pool.Response` reads through it
    (``status_code``, ``headers``, ``endpoint``, ``http_version``;
    ``trailers`` and ``content`` once the body was read), with the blocking
    :meth:`iter_bytes`, :meth:`read` and :meth:`close` in place of
    ``aiter_bytes()``, ``aread()`` and ``aclose()``.

    Attributes:
        response: The :class:`h2pool.Response` itself (its body lives on the
            pool's loop: read it through this object).
    """

    def __init__(self, response: Response, loop: LoopThread, body: BlockingBody) -> None:
        self.response = response
        self._loop = loop
        self._body = body

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the body in chunks as they arrive; the trailers are read at its end."""
        return iter(self._body)

    def read(self) -> bytes:
        """Read the rest of the body (and the trailers) and return it (the whole body if
        nothing was iterated); ``content`` holds it after."""
        return self._loop.call(self.response.aread)

    def close(self) -> None:
        """Release the stream; an unread body is abandoned (RST_STREAM CANCEL)."""
        self._body.close()

    def __getattr__(self, name: str) -> Any:
        if name in _BLOCKING_INSTEAD:
            raise AttributeError(f"SyncResponse has no {name}(): use {_BLOCKING_INSTEAD[name]}")
        return getattr(self.response, name)

    def __repr__(self) -> str:
        return f"<SyncResponse [{self.response.status_code}] from {self.response.endpoint}>"


class SyncPool(Verbs[Response, SyncContent]):
    """:class:`h2pool.Pool` for blocking code: the same pool, safe from many threads at once.

    The pool runs on one event loop in a background daemon thread, started
    by the first call and stopped by :meth:`close` (or leaving ``with``);
    each call runs there and waits, so all threads share its multiplexed
    connections, health checks, retries and failover. Call it from threads,
    never from a coroutine (use :class:`h2pool.Pool` there): a call from a
    thread running an event loop raises ``RuntimeError``. Errors are the
    async pool's own (``h2pool.H2PoolError`` and its family). The methods
    ``get``, ``post``, ``put``, ``patch``, ``delete``, ``head`` and
    ``options`` are :meth:`request` with the method filled in.

    Args:
        target: The pool's target URL (see :class:`h2pool.Pool`).
        **options: Every keyword of :class:`h2pool.Pool` (``endpoints``,
            ``timeout``, ``retry``, ...), with the same defaults.
    """

    def __init__(self, target: str, **options: Any) -> None:
        self._pool = Pool(target, **options)
        self._loop = LoopThread("SyncPool")

    def __enter__(self) -> SyncPool:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the loop, resolve the endpoints and start connecting (the first call does too)."""
        self._loop.call(self._pool.start)

    def close(self, timeout: float | None = None) -> None:
        """Close: no new requests, requests in flight finish, then the loop thread ends.

        Idempotent, and callable from any thread; waits for the loop's thread
        to end. Calls made after it raise :class:`h2pool.PoolClosed`.

        Args:
            timeout: Bound, in seconds, on waiting for requests in flight
                (each is bounded by its own timeout anyway); after it they
                fail with ``PoolClosed``.
        """
        self._loop.close(functools.partial(self._pool.aclose, timeout))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        content: SyncContent | None = None,
        json: Any = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> Response:
        """Send a request and read its whole response, blocking this thread.

        The arguments are those of :meth:`h2pool.Pool.request`; ``content``
        may also be a sync iterable of bytes (a generator, a list of
        chunks), iterated in this thread as the body is sent. The response's
        body is read already: ``content`` (and ``text``, ``json()``) work.
        Stopping the wait (``KeyboardInterrupt``) cancels the request.

        Raises:
            H2PoolError: As :meth:`h2pool.Pool.request` (the same classes).
            PoolClosed: The pool is closed, or was closed during the call.
            RuntimeError: Called from a thread running an event loop.
        """
        body, upload = bridged(content)
        options = forwarded(
            params=params,
            headers=headers,
            content=body,
            json=json,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )
        return self._loop.call(
            functools.partial(self._pool.request, method, path, **options), upload=upload
        )

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        content: SyncContent | None = None,
        json: Any = None,
        timeout: Any = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: Any = DEFAULT,
    ) -> Iterator[SyncResponse]:
        """Send a request; the response body is read as the caller iterates.

        Use as ``with pool.stream("GET", "/") as response:``, then
        ``for chunk in response.iter_bytes():`` (or ``response.read()``).
        Arguments are those of :meth:`request`; ``timeout`` also bounds
        reading the body. On exit an unread body is abandoned (RST_STREAM
        CANCEL).
        """
        body, upload = bridged(content)
        options = forwarded(
            params=params,
            headers=headers,
            content=body,
            json=json,
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            hedge=hedge,
        )
        held = Held(self._pool.stream(method, path, **options))
        response = self._loop.call(held.enter, upload=upload, abandon=held.release)
        blocking = BlockingBody(self._loop, held, response.aiter_bytes(), upload)
        try:
            yield SyncResponse(response, self._loop, blocking)
        finally:
            blocking.close()

    def stats(self) -> PoolStats:
        """A snapshot of every endpoint and of the requests in the pool."""
        return self._loop.call(self._stats)

    async def _stats(self) -> PoolStats:
        return self._pool.stats()
