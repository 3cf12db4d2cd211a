"""The caller's deadline: ``h2pool.deadline(seconds)``, carried by a context variable.

A deadline, everywhere in h2pool, is a point in time by which something
must end. A request's own deadline is its total timeout from when it
starts (:class:`~h2pool.Timeouts`); the *caller's* deadline, set here, is
one that every request and rpc call started inside a ``with
h2pool.deadline(seconds):`` block shares, as Go's ``context.WithTimeout``
and gRPC's deadline propagation do. Each such request ends by the earlier
of the two; an rpc call sends what is left as ``grpc-timeout``.

The caller's deadline is held as a ``time.monotonic()`` instant, not in
an event loop's time: :class:`~h2pool.SyncPool` carries it from the calling
thread to its loop's thread, and a request turns what remains of it into
its own loop's time when it starts. Tasks created inside the block inherit
it (``asyncio`` copies the context into each new task); the pool's health
checks, though started by a request, do not.

The decisions (:func:`earliest`, :func:`bound`) are pure; the pool reads
the context variable once per request (:data:`caller_deadline`).
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from types import TracebackType

from .checks import check_seconds

__all__ = [
    "PASSED",
    "Deadline",
    "adopt",
    "bound",
    "caller_deadline",
    "deadline",
    "earliest",
    "remaining",
]

#: What the error of a request that the caller's deadline ended says.
PASSED = "the deadline (h2pool.deadline) passed"

_CALLER: ContextVar[float | None] = ContextVar("h2pool_deadline", default=None)

#: The caller's deadline in the current context (``time.monotonic()``), or
#: None: the one context-variable read of the pool's hot path.
caller_deadline = _CALLER.get


def earliest(outer: float | None, inner: float) -> float:
    """The deadline inside ``outer`` of one set at ``inner``: nesting never extends a deadline."""
    return inner if outer is None or inner < outer else outer


def bound(timeout: float | None, left: float) -> tuple[float, bool]:
    """Seconds a request may take: the smaller of its own ``timeout`` and ``left``.

    Returns the seconds and whether the caller's deadline (``left``) is what
    decides them (for the message of the error that ends the request).
    """
    if timeout is None or left < timeout:
        return left, True
    return timeout, False


def remaining(at: float) -> float:
    """Seconds from now to the caller's deadline ``at`` (negative once it passed)."""
    return at - time.monotonic()


def adopt(at: float | None) -> None:
    """Make ``at``, captured in another thread, the caller's deadline of the current task.

    For :class:`~h2pool.SyncPool`, whose requests run on a loop in another
    thread, where the calling thread's context does not reach by itself.
    Called at the start of the task that runs the call: the task's own
    context holds it, nothing else sees it.
    """
    if at is not None:
        _CALLER.set(at)


class Deadline:
    """A caller's deadline: every request and rpc call started inside it ends by then.

    Made by :func:`deadline`; used once, as ``with`` or ``async with``.
    Nested deadlines take the earliest: an inner one that ends later than
    the outer one does not extend it. Leaving the block restores the outer
    deadline; requests started inside keep theirs (a streamed body read
    after the block is still bounded by it).
    """

    __slots__ = ("_at", "_seconds", "_token")

    def __init__(self, seconds: float) -> None:
        checked = check_seconds("seconds", seconds, zero=True)
        assert checked is not None
        self._seconds = checked
        self._at: float | None = None
        self._token: Token[float | None] | None = None

    def __enter__(self) -> Deadline:
        if self._at is not None:
            raise RuntimeError("an h2pool.deadline() is used once: make a new one")
        self._at = earliest(_CALLER.get(), time.monotonic() + self._seconds)
        self._token = _CALLER.set(self._at)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._token is not None
        _CALLER.reset(self._token)
        self._token = None

    async def __aenter__(self) -> Deadline:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    @property
    def expires_at(self) -> float | None:
        """The deadline in force inside the block (``time.monotonic()``), or None before it."""
        return self._at

    def remaining(self) -> float | None:
        """Seconds left inside the block (never below 0), or None before it."""
        return None if self._at is None else max(0.0, remaining(self._at))

    def __repr__(self) -> str:
        left = self.remaining()
        state = f"{self._seconds}s, not entered" if left is None else f"{left:.3f}s left"
        return f"<h2pool.deadline {state}>"


def deadline(seconds: float) -> Deadline:
    """A deadline ``seconds`` from entering the block, for every request started inside.

    Use as ``with h2pool.deadline(2.0):`` or ``async with``: each request
    (:class:`~h2pool.Pool`, :class:`~h2pool.SyncPool`, the httpx and
    httpcore adapters) and rpc call (:mod:`h2pool.rpc`) started inside is
    bounded by the smaller of its own timeout and what remains, and an rpc
    call sends that as ``grpc-timeout``. Nested deadlines take the earliest.
    A request started once the deadline has passed fails at once with
    ``RequestTimeout`` (an rpc call with ``DEADLINE_EXCEEDED``), nothing sent.
    The block itself is not cancelled: only requests are bounded (wrap it in
    ``asyncio.timeout()`` for that).

    Args:
        seconds: Seconds from entering the block (0 or more, finite).

    Returns:
        The block's :class:`Deadline`, which ``as`` gives: its
        ``remaining()`` is the seconds left (nesting taken into account).

    Raises:
        TypeError: ``seconds`` is not a number.
        ValueError: ``seconds`` is negative, infinite or NaN.
    """
    return Deadline(seconds)
