"""Every timeout of a request: the per-phase values, and the scopes that enforce them.

A scope bounds a block of async code by an event-loop deadline and turns
its expiry into one of h2pool's timeout errors. When no bound is set no
scope object is made: the callers test for None first.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from types import TracebackType

from .._exceptions import H2PoolError, RequestTimeout
from .checks import check_seconds
from .deadlines import PASSED

__all__ = ["DeadlineTimers", "Expiring", "Timeouts", "bounded", "deadline_scope"]

# Deadlines that end within the same slice of this many seconds share one timer.
_SLICE = 0.01


class Expiring:
    """Bound a block by an event-loop ``deadline``; its expiry raises ``error(message)``.

    Only the expiry of this deadline becomes ``error``: other timeouts raised
    inside (a connect timeout, say) pass through unchanged. A plain class
    rather than a generator-based context manager: it is on the hot path.
    """

    __slots__ = ("_error", "_message", "_scope")

    def __init__(self, deadline: float, error: type[H2PoolError], message: str) -> None:
        self._scope = asyncio.timeout_at(deadline)
        self._error = error
        self._message = message

    async def __aenter__(self) -> None:
        await self._scope.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._scope.__aexit__(exc_type, exc, traceback)
        except TimeoutError:
            if self._scope.expired():
                raise self._error(self._message) from None
            raise


class DeadlineTimers:
    """One event-loop timer per 10 ms of deadlines, instead of one per request.

    ``asyncio.timeout_at()`` arms and cancels a timer for every request:
    with a total timeout on every request (the default), that alone cost
    about a tenth of ``Pool.request``'s time, and cancelled timers pile up
    in the loop's heap. Here a request enters ``asyncio.timeout(None)`` (no
    timer) and registers it: the scopes whose deadlines fall in the same
    slice share one timer, which expires those still registered. A deadline
    thus fires at most 10 ms late, never early.
    """

    def __init__(self) -> None:
        self._slices: dict[int, set[asyncio.Timeout]] = {}

    def watch(self, deadline: float, scope: asyncio.Timeout) -> set[asyncio.Timeout]:
        """Expire the entered ``scope`` at ``deadline``; discard it from the result when done."""
        key = math.ceil(deadline / _SLICE)
        group = self._slices.get(key)
        if group is None:
            group = self._slices[key] = set()
            asyncio.get_running_loop().call_at(key * _SLICE, self._expire, key)
        group.add(scope)
        return group

    def _expire(self, key: int) -> None:
        group = self._slices.pop(key, ())
        if group:
            now = asyncio.get_running_loop().time()
            for scope in group:
                scope.reschedule(now)  # its task is cancelled: TimeoutError in it


def bounded(seconds: float, error: type[H2PoolError], what: str) -> Expiring:
    """Bound one wait by ``seconds`` from now; its expiry raises ``error`` naming ``what``."""
    deadline = asyncio.get_running_loop().time() + seconds
    return Expiring(deadline, error, f"{what}: no progress within {seconds}s")


def deadline_scope(deadline: float, what: str, *, by_caller: bool = False) -> Expiring:
    """Bound the block by a request's total deadline; expiry raises RequestTimeout.

    ``by_caller``: the deadline is the caller's (``h2pool.deadline``), and the message says so.
    """
    return Expiring(deadline, RequestTimeout, f"{what}: {PASSED if by_caller else 'timed out'}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """How long each phase of a request may take, in seconds (None: no bound).

    Each expiry raises an h2pool error that is also a builtin ``TimeoutError``.
    Every value must be a positive finite number or None.

    Attributes:
        total: The whole request: waiting for a connection, every attempt
            and backoff, and reading the body (``RequestTimeout``).
        connect: Each connection attempt started while the request is
            routed (TCP and TLS), and the request's wait for a connection to
            be established when none is open (``ConnectTimeout``); None uses
            the pool's ``connect_timeout`` for the attempts.
        read: Each wait for the response headers or the next body data
            (``ReadTimeout``): a body that keeps arriving never hits it.
        write: Each wait to send a chunk of a streamed request body
            (``WriteTimeout``); bytes bodies are queued and never wait.
        pool: Waiting for a connection with a free stream (``PoolTimeout``).
    """

    total: float | None = 30.0
    connect: float | None = None
    read: float | None = None
    write: float | None = None
    pool: float | None = None

    def __post_init__(self) -> None:
        for name in ("total", "connect", "read", "write", "pool"):
            check_seconds(name, getattr(self, name), optional=True)

    @classmethod
    def coerce(cls, value: object, default: Timeouts | None = None) -> Timeouts:
        """A ``Timeouts`` from a number (the total), None (no total) or itself.

        A number or None replaces only ``total`` of ``default``.

        Raises:
            TypeError: ``value`` is none of those.
            ValueError: The number is not a positive finite one.
        """
        if isinstance(value, Timeouts):
            return value
        total = check_seconds("timeout", value, optional=True)
        return replace(default or cls(), total=total)
