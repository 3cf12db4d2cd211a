"""Attempts of a request: one exchange on one connection, and the loop that retries it.

The loop is plain async code: it runs an attempt, asks :func:`decide_retry`
what to do with the outcome, sleeps if told to, and goes again. No rule of
its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._exceptions import H2PoolError, ReadTimeout
from .._messages import adopt_fields
from .channel import Channel, Fetched, Reply
from .endpoint import Endpoint
from .outgoing import OutgoingRequest
from .policies import RetryAction, RetryPolicy, Tries, decide_retry, parse_retry_after
from .response import Body, Response
from .scheduler import Grant, Scheduler
from .timeouts import Expiring

__all__ = ["Answered", "Attempts"]

logger = logging.getLogger("h2pool.pool")

#: Told of every attempt's outcome on an endpoint: a status code, or the error
#: that ended it, and the seconds from sending to the answer (for balancing and
#: outlier detection; called synchronously, must not raise).
Answered = Callable[[Endpoint[Channel], "int | H2PoolError", float], None]

# Nothing used yet (immutable: each decision returns the next value).
_FRESH = Tries()


class Attempts:
    """Sends requests through the scheduler's slots, retried as the policy decides.

    Attributes:
        active: Requests in flight (sent, or holding an unread response).
    """

    def __init__(self, scheduler: Scheduler, retry: RetryPolicy, answered: Answered) -> None:
        self._scheduler = scheduler
        self._retry = retry
        self._answered = answered
        self.active = 0
        self._idle: asyncio.Event | None = None

    async def wait_idle(self) -> None:
        """Wait until no request is in flight."""
        while self.active:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def _release(self) -> None:
        self.active -= 1
        if not self.active and self._idle is not None:
            self._idle.set()

    async def send(
        self, request: OutgoingRequest, deadline: float | None, *, read_body: bool
    ) -> Response:
        """Run attempts until one succeeds or :func:`decide_retry` says stop.

        One coroutine for the whole attempt (slot, exchange, body): every
        await level is paid again on each wake-up, so there are few.
        """
        tries = _FRESH
        policy = self._retry
        scheduler = self._scheduler
        clock = asyncio.get_running_loop().time
        while True:
            address: str | None = None
            grant = None
            try:
                grant = scheduler.try_acquire(
                    request.timeouts.connect, request.avoid, request.observer
                )
                if grant is None or grant.stale:
                    grant = await self._acquire(request, grant)
                self.active += 1
                channel = grant.channel
                address = grant.endpoint.address
                sent_at = clock()
                # Both take the reservation.
                if read_body:  # request(): the whole body, inside the request's deadline
                    try:
                        if policy.per_try_timeout is None:
                            fetched = await channel.fetch(request)
                        else:
                            fetched = await self._bounded_fetch(channel, request)
                    finally:
                        self._release()
                        scheduler.assign()  # a stream that never opened freed no slot
                    response = Response.read_whole(
                        fetched, address, draining=not channel.accepting_streams
                    )
                else:  # stream(): the body's reads carry the deadline themselves
                    try:
                        if policy.per_try_timeout is None:
                            reply = await channel.exchange(request)
                        else:
                            reply = await self._bounded_exchange(channel, request)
                    except BaseException:
                        self._release()
                        scheduler.assign()
                        raise
                    body = Body(reply.body, deadline=deadline, on_close=self._release)
                    response = Response(
                        reply.status,
                        adopt_fields(reply.headers),  # decoded for this response alone
                        address,
                        body,
                        reply.http_version,
                        draining=not channel.accepting_streams,
                    )
            except H2PoolError as exc:
                if address is not None and grant is not None:
                    self._answered(grant.endpoint, exc, clock() - sent_at)
                    request.avoid |= {address}  # a retry goes elsewhere when it can
                    if exc.endpoint is None:
                        exc.endpoint = address  # the attempt's own copy (in_context)
                request.last_error = exc
                outcome: H2PoolError | int = exc
                retry_after = None
            else:
                self._answered(grant.endpoint, response.status_code, clock() - sent_at)
                if response.status_code not in policy.statuses:
                    return response  # the common case: no decision to make
                outcome = response.status_code
                retry_after = parse_retry_after(response.header("retry-after"))
            decision = decide_retry(
                outcome,
                method=request.method,
                replayable=request.replayable,
                tries=tries,
                now=asyncio.get_running_loop().time(),
                deadline=deadline,
                policy=policy,
                retry_after=retry_after,
                connected=address is not None,
            )
            if decision.action is RetryAction.STOP:
                if isinstance(outcome, H2PoolError):
                    raise outcome
                return response
            if not isinstance(outcome, H2PoolError):
                await response.aclose()
            logger.info(
                "%s: retrying in %.3fs (%s): %s",
                request.target,
                decision.delay,
                decision.reason,
                outcome,
            )
            tries = decision.tries
            if decision.delay:
                await asyncio.sleep(decision.delay)

    def _per_try(self) -> Expiring:
        """The bound of one attempt on its connection (``RetryPolicy.per_try_timeout``)."""
        seconds = self._retry.per_try_timeout
        assert seconds is not None
        deadline = asyncio.get_running_loop().time() + seconds
        return Expiring(deadline, ReadTimeout, f"no response within per_try_timeout ({seconds}s)")

    async def _bounded_fetch(self, channel: Channel, request: OutgoingRequest) -> Fetched:
        async with self._per_try():
            return await channel.fetch(request)

    async def _bounded_exchange(self, channel: Channel, request: OutgoingRequest) -> Reply:
        async with self._per_try():
            return await channel.exchange(request)

    async def _acquire(self, request: OutgoingRequest, grant: Grant | None) -> Grant:
        """A reserved slot on a connection proven alive where the request needs it.

        ``grant`` is what the fast path got (a stale connection), if anything.
        """
        scheduler = self._scheduler
        timeouts = request.timeouts
        # Sending in parallel with a liveness PING is safe only if a dead
        # connection's failure can be retried.
        retry_safe = request.replayable and request.method in self._retry.methods
        while True:
            if grant is None:
                grant = scheduler.try_acquire(
                    timeouts.connect, request.avoid, request.observer
                ) or await scheduler.acquire(
                    timeouts.connect,
                    timeouts.pool,
                    request.wait_for_ready,
                    request.avoid,
                    request.observer,
                )
            if not grant.stale or retry_safe:
                return grant
            try:
                await grant.channel.wait_functional()
            except BaseException as exc:
                scheduler.give_back(grant.channel)
                if not isinstance(exc, H2PoolError):
                    raise
                grant = None
                continue  # dead: it leaves the rotation; route again
            if grant.channel.accepting_streams:
                return grant
            scheduler.give_back(grant.channel)
            grant = None
