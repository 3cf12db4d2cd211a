"""The timeouts of a request, one per phase, as a frozen value."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from .._exceptions import H2PoolError

__all__ = ["Timeouts", "expiring"]


@contextlib.asynccontextmanager
async def expiring(
    deadline: float | None, error: type[H2PoolError], message: str
) -> AsyncIterator[None]:
    """Bound the block by an event-loop ``deadline``; its expiry raises ``error(message)``.

    Only the expiry of this deadline is turned into ``error``: other
    timeouts raised inside (a connect timeout, say) pass through unchanged.
    """
    if deadline is None:
        yield
        return
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            yield
    except TimeoutError:
        if scope.expired():
            raise error(message) from None
        raise


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """How long each phase of a request may take, in seconds (None: no bound).

    Each expiry raises an h2pool error that is also a builtin ``TimeoutError``.

    Attributes:
        total: The whole request: waiting for a connection, every attempt
            and backoff, and reading the body (``RequestTimeout``).
        connect: Each connection attempt started while the request is
            routed (TCP and TLS), and the request's wait for a connection to
            be established when none is open (``ConnectTimeout``); None uses
            the pool's ``connect_timeout`` for the attempts.
        read: Each wait for the response headers or the next body data
            (``ReadTimeout``).
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
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"timeout {name} must be positive or None")

    @classmethod
    def coerce(cls, value: Timeouts | float | None, default: Timeouts | None = None) -> Timeouts:
        """A ``Timeouts`` from a number (the total), None (no total) or itself.

        A number or None replaces only ``total`` of ``default``.
        """
        if isinstance(value, Timeouts):
            return value
        return replace(default or cls(), total=value)
