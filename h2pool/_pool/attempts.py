"""Attempts of a request: one exchange on one connection, and the loop that retries it.

The loop is plain async code: it runs an attempt, asks :func:`decide_retry`
what to do with the outcome, sleeps if told to, and goes again. No rule of
its own.
"""

from __future__ import annotations

import asyncio
import logging

from .._exceptions import H2PoolError
from .outgoing import OutgoingRequest
from .policies import RetryAction, RetryPolicy, Tries, decide_retry, parse_retry_after
from .response import Body, Response
from .scheduler import Grant, Scheduler

__all__ = ["Attempts"]

logger = logging.getLogger("h2pool.pool")


class Attempts:
    """Sends requests through the scheduler's slots, retried as the policy decides.

    Attributes:
        active: Requests in flight (sent, or holding an unread response).
    """

    def __init__(self, scheduler: Scheduler, retry: RetryPolicy) -> None:
        self._scheduler = scheduler
        self._retry = retry
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
        """Run attempts until one succeeds or :func:`decide_retry` says stop."""
        tries = Tries()
        policy = self._retry
        while True:
            try:
                response = await self._exchange(request, deadline, read_body)
            except H2PoolError as exc:
                request.last_error = exc
                outcome: H2PoolError | int = exc
                retry_after = None
            else:
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

    async def _acquire(self, request: OutgoingRequest) -> Grant:
        """A reserved slot on a connection proven alive where the request needs it."""
        scheduler = self._scheduler
        timeouts = request.timeouts
        # Sending in parallel with a liveness PING is safe only if a dead
        # connection's failure can be retried.
        retry_safe = request.replayable and request.method in self._retry.methods
        while True:
            grant = scheduler.try_acquire(timeouts.connect) or await scheduler.acquire(
                request.target, timeouts.connect, timeouts.pool
            )
            if not grant.stale or retry_safe:
                return grant
            try:
                await grant.channel.wait_functional()
            except BaseException as exc:
                scheduler.give_back(grant.channel)
                if not isinstance(exc, H2PoolError):
                    raise
                continue  # dead: it leaves the rotation; route again
            if grant.channel.accepting_streams:
                return grant
            scheduler.give_back(grant.channel)

    async def _exchange(
        self, request: OutgoingRequest, deadline: float | None, read_body: bool
    ) -> Response:
        grant = await self._acquire(request)
        self.active += 1
        try:
            reply = await grant.channel.exchange(request)  # takes the reservation
        except BaseException:
            self._release()
            self._scheduler.assign()  # a stream that never opened freed no slot
            raise
        # request() reads the body inside its own deadline scope; stream()
        # hands the body over, so its reads carry the deadline themselves.
        body = Body(reply.body, deadline=None if read_body else deadline, on_close=self._release)
        response = Response(
            reply.status, reply.headers, grant.endpoint.address, body, reply.http_version
        )
        if read_body:
            await response.aread()  # on failure the body releases itself
        return response
