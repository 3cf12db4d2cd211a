"""Hands stream slots to requests: one synchronous function, as httpcore's pool does it.

A request that finds a free slot takes it at once (no future, no timer).
Otherwise it waits in one queue, oldest first. :meth:`Scheduler.assign` runs
synchronously whenever something may have changed (a slot freed, a limit
changed, a connection opened, drained or closed, a backoff ended): it routes
the oldest waiters, reserves a slot for each one it places (a reservation
count per connection, as Go's ``reserveNewRequest``, so two requests can
never take the last slot), wakes only those, and asks for new connections
where routing says so. The connection's own ``start_request`` therefore
never waits: the pool keeps the only queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .._exceptions import (
    CertificateVerifyError,
    ConnectTimeout,
    H2PoolError,
    PoolOverloaded,
    PoolTimeout,
)
from .balancer import Balancer
from .channel import Channel
from .endpoint import Endpoint, rotation, unreachable
from .outgoing import Observer
from .routing import route
from .timeouts import bounded

__all__ = ["Grant", "Scheduler"]

#: Asked to open a connection to an endpoint, bounded by a connect timeout
#: (None: the pool's own), told to the observer of the request whose routing
#: asked for it (or None); it counts the attempt in ``endpoint.connecting`` at once.
OpenConnection = Callable[[Endpoint[Channel], float | None, Observer | None], None]

#: How long past its connect timeout a request that fails fast waits for the
#: connection attempts that are due to end: they report within a loop turn or two.
_ATTEMPTS_GRACE = 0.05


class Grant(NamedTuple):
    """A reserved slot: the request must use it (``Channel.exchange``) or give it back.

    A named tuple: one is made for every request.

    Attributes:
        endpoint: The endpoint of the connection.
        channel: The connection, with one slot reserved.
        stale: The connection was silent for a functional timeout.
    """

    endpoint: Endpoint[Channel]
    channel: Channel
    stale: bool


class _Waiter:
    __slots__ = ("avoid", "connect_timeout", "future", "observer", "wait_for_ready")

    def __init__(
        self,
        future: asyncio.Future[Grant],
        connect_timeout: float | None,
        wait_for_ready: bool,
        avoid: frozenset[str],
        observer: Observer | None,
    ) -> None:
        self.future = future
        self.connect_timeout = connect_timeout
        self.wait_for_ready = wait_for_ready
        self.avoid = avoid
        self.observer = observer


class Scheduler:
    """The queue of requests waiting for a slot, and the one function that serves it.

    Args:
        functional_timeout: Silence after which a connection counts as stale.
        max_pending: Requests allowed to wait; more fail with PoolOverloaded.
        wait_for_ready: When every endpoint is failing, wait (True) or fail
            the waiting requests with the last connection error.
        open_connection: Starts a connection attempt (see ``OpenConnection``).
        balancer: Which endpoint takes each request (see :mod:`.balancer`).
    """

    def __init__(
        self,
        *,
        functional_timeout: float,
        max_pending: int,
        wait_for_ready: bool,
        open_connection: OpenConnection,
        balancer: Balancer = Balancer.P2C,
    ) -> None:
        self._endpoints: list[Endpoint[Channel]] = []
        self._functional_timeout = functional_timeout
        self._max_pending = max_pending
        self._wait_for_ready = wait_for_ready
        self._open_connection = open_connection
        self._balancer = balancer
        # The rotation, kept between events (a request reads O(1) endpoints):
        # until changed() or until the earliest ejection in it ends.
        self._rotation: Sequence[Endpoint[Channel]] | None = None
        self._rotation_until = math.inf
        self._waiters: deque[_Waiter] = deque()
        # From a random turn, so that pools started together do not all
        # send their first requests to the same endpoint.
        self._turns = itertools.count(random.randrange(1 << 16))
        self._timer: asyncio.TimerHandle | None = None
        self._closed: H2PoolError | None = None

    @property
    def pending(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    @property
    def endpoints(self) -> list[Endpoint[Channel]]:
        """The pool's endpoints (setting them is a change of the rotation)."""
        return self._endpoints

    @endpoints.setter
    def endpoints(self, endpoints: list[Endpoint[Channel]]) -> None:
        self._endpoints = endpoints
        self.changed()

    def changed(self) -> None:
        """Something the rotation depends on may have changed (not a slot freed).

        An endpoint failed, connected, was ejected or came back; a connection
        drained or closed; the endpoints changed.
        """
        self._rotation = None

    def _rotate(self, now: float) -> Sequence[Endpoint[Channel]]:
        """The endpoints in rotation at ``now``, kept until a change or an ejection's end."""
        in_play = [ep for ep in self._endpoints if not ep.closed]
        self._rotation = in_rotation = rotation(in_play, now)
        ends = [ep.ejected_until for ep in in_play if ep.ejected_until > now]
        self._rotation_until = min(ends, default=math.inf)
        return in_rotation

    def try_acquire(
        self,
        connect_timeout: float | None,
        avoid: frozenset[str] = frozenset(),
        observer: Observer | None = None,
    ) -> Grant | None:
        """A slot now, if one is free and nobody waits for one: the fast path, no waiting.

        ``avoid``: endpoints to use only if no other can take the stream (a retry's).
        ``observer``: told of the steps of a connection attempt this starts.

        Raises:
            PoolClosed: The pool is closing (retries too are refused then).
        """
        if self._closed is not None:
            raise self._closed.copy() from self._closed
        if self._waiters:
            return None
        now = asyncio.get_running_loop().time()
        in_rotation = self._rotation
        if in_rotation is None or now >= self._rotation_until:
            in_rotation = self._rotate(now)
        decision = route(
            self._endpoints,
            now,
            waiting=1,
            functional_timeout=self._functional_timeout,
            turn=next(self._turns),
            avoid=avoid,
            balancer=self._balancer,
            in_rotation=in_rotation,
        )
        channel, endpoint = decision.connection, decision.endpoint
        if channel is None or endpoint is None:
            if endpoint is not None:
                self._open_connection(endpoint, connect_timeout, observer)
            return None
        channel.reserved += 1
        return Grant(endpoint, channel, decision.stale)

    async def acquire(
        self,
        connect_timeout: float | None,
        pool_timeout: float | None,
        wait_for_ready: bool | None = None,
        avoid: frozenset[str] = frozenset(),
        observer: Observer | None = None,
    ) -> Grant:
        """Wait for a slot, oldest first; the slot is reserved when this returns.

        ``wait_for_ready`` (None: the pool's) says whether to go on waiting
        when every endpoint is failing; ``avoid`` are endpoints to use only if
        no other can take the stream (a retry's); ``observer`` is told of the
        steps of a connection attempt started for this request.

        Raises:
            PoolOverloaded: ``max_pending`` requests are waiting already.
            PoolTimeout: ``pool_timeout`` ran out (never sent).
            ConnectTimeout: No connection was ready within ``connect_timeout``.
            ConnectError: Every endpoint is failing and waiting is pointless.
        """
        if self._closed is not None:
            raise self._closed.copy() from self._closed
        if len(self._waiters) >= self._max_pending:
            raise PoolOverloaded(
                f"{len(self._waiters)} requests already wait for a connection (max_pending)"
            )
        waiter = _Waiter(
            asyncio.get_running_loop().create_future(),
            connect_timeout,
            self._wait_for_ready if wait_for_ready is None else wait_for_ready,
            avoid,
            observer,
        )
        self._waiters.append(waiter)
        self.assign()
        timer = None
        if connect_timeout is not None and not waiter.future.done():
            timer = asyncio.get_running_loop().call_later(
                connect_timeout, self._connect_expired, waiter
            )
        try:
            if pool_timeout is None:
                return await waiter.future
            async with bounded(pool_timeout, PoolTimeout, "waiting for a connection"):
                return await waiter.future
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        except PoolTimeout:
            self._abandon(waiter)
            raise
        except H2PoolError as exc:  # set by fail_all() or _connect_expired()
            raise exc.copy() from exc
        finally:
            if timer is not None:
                timer.cancel()

    def _abandon(self, waiter: _Waiter) -> None:
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self.give_back(future.result().channel)  # granted as we left: pass it on
        else:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def give_back(self, channel: Channel) -> None:
        """Return a reserved slot that will not be used."""
        channel.reserved -= 1
        self.assign()

    def _connect_expired(self, waiter: _Waiter) -> None:
        loop = asyncio.get_running_loop()
        if not waiter.wait_for_ready and any(
            ep.connecting and ep.attempts_end <= loop.time() for ep in self.endpoints
        ):
            # The attempts in progress (the one this request started, with the
            # same timeout) end now too: if they fail, their own errors, naming
            # the endpoints and the causes, fail the request (_fail_fast).
            loop.call_later(_ATTEMPTS_GRACE, self._connect_timed_out, waiter)
            return
        self._connect_timed_out(waiter)

    def _connect_timed_out(self, waiter: _Waiter) -> None:
        if waiter.future.done() or any(ep.ready() for ep in self.endpoints):
            return  # connected (then the pool timeout bounds the wait)
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        waiter.future.set_exception(
            ConnectTimeout(f"no connection within {waiter.connect_timeout}s")
        )

    def assign(self) -> None:
        """Hand free slots to the oldest waiters and wake them; ask for connections. Synchronous.

        Runs once per event, however many requests wait.
        """
        waiters = self._waiters
        if not waiters:
            return
        now = asyncio.get_running_loop().time()
        in_rotation = self._rotation
        if in_rotation is None or now >= self._rotation_until:
            in_rotation = self._rotate(now)
        wake_at: float | None = None
        while waiters:
            waiter = waiters[0]
            if waiter.future.done():
                waiters.popleft()
                continue
            decision = route(
                self._endpoints,
                now,
                waiting=len(waiters),
                functional_timeout=self._functional_timeout,
                turn=next(self._turns),
                avoid=waiter.avoid,
                balancer=self._balancer,
                in_rotation=in_rotation,
            )
            channel, endpoint = decision.connection, decision.endpoint
            if channel is not None and endpoint is not None:
                waiters.popleft()
                channel.reserved += 1
                waiter.future.set_result(Grant(endpoint, channel, decision.stale))
            elif endpoint is not None:
                self._open_connection(endpoint, waiter.connect_timeout, waiter.observer)
            else:
                wake_at = decision.wake_at
                break
        if waiters:
            self._arm(wake_at)
            self._fail_fast()

    def _arm(self, wake_at: float | None) -> None:
        """One timer for the end of the earliest backoff or ejection, while requests wait."""
        if wake_at is None:
            return
        timer = self._timer
        if timer is not None and not timer.cancelled() and timer.when() <= wake_at:
            return
        if timer is not None:
            timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(wake_at, self._timer_due)

    def _timer_due(self) -> None:
        self._timer = None
        self.assign()

    def _fail_fast(self) -> None:
        """Fail waiters with :func:`.endpoint.unreachable`'s error where waiting is pointless.

        That is when every endpoint failed its latest connection attempt, for
        the waiters whose ``wait_for_ready`` is off, or for all of them when
        every failure is a certificate that failed verification (not transient).
        """
        in_play = [ep for ep in self.endpoints if not ep.closed]
        error = unreachable(in_play)
        if error is None:
            return
        if isinstance(error, CertificateVerifyError):
            self.fail_all(error)
            return
        staying = deque(waiter for waiter in self._waiters if waiter.wait_for_ready)
        if len(staying) == len(self._waiters):
            return
        leaving, self._waiters = self._waiters, staying
        for waiter in leaving:
            if not waiter.wait_for_ready and not waiter.future.done():
                waiter.future.set_exception(error)

    def fail_all(self, error: H2PoolError) -> None:
        """Fail every waiting request with ``error`` (each raises its own copy)."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)

    def close(self, error: H2PoolError) -> None:
        """Take no more requests, fail those waiting with ``error``, stop the timer."""
        self._closed = error
        self.fail_all(error)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
