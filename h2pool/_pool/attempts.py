"""Attempts of a request: one exchange on one connection, the loop that retries it,
and the loop that hedges it.

The loops are plain async code: the retry loop runs an attempt, asks
:func:`decide_retry` what to do with the outcome, asks the retry budget
whether a retry may be made, sleeps if told to, and goes again; the hedge
loop runs copies of a request as :mod:`.hedging` decides. No rule of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable

from h2.errors import ErrorCodes

from .._exceptions import H2PoolError, ReadTimeout, StreamReset
from .._messages import adopt_fields
from .budget import RetryBudget, Spending
from .channel import Channel, Fetched, Reply
from .endpoint import Endpoint
from .events import Listeners, RequestHedged, RequestRetried, RetryBudgetExhausted
from .hedging import HedgePolicy, Verdict, avoided, judge
from .outgoing import OutgoingRequest
from .policies import RetryAction, RetryPolicy, Tries, decide_retry, parse_retry_after
from .response import Body, Response
from .scheduler import Grant, Scheduler
from .timeouts import Expiring

__all__ = ["Answered", "Attempts"]

logger = logging.getLogger("h2pool.pool")

#: Told of every attempt's outcome on an endpoint: a status code, or the error
#: that ended it, and the seconds from sending to the answer (for balancing and
#: outlier detection; called synchronously, must not raise). An attempt
#: cancelled after it was sent (a hedge that lost, a request its caller
#: cancelled) ends with a ``StreamReset`` whose ``error_code`` is CANCEL: the
#: reset this side sent, no failure of the endpoint.
Answered = Callable[[Endpoint[Channel], "int | H2PoolError", float], None]

# Nothing used yet (immutable: each decision returns the next value).
_FRESH = Tries()


def _cancelled() -> StreamReset:
    return StreamReset("cancelled by this side", error_code=ErrorCodes.CANCEL)


class Attempts:
    """Sends requests through the scheduler's slots, retried and hedged as the policies decide.

    Args:
        scheduler: Hands out the slots.
        retry: The pool's retry policy.
        answered: Told of every attempt's outcome.
        budget: The pool's retry budget, or None for none.
        events: The pool's event listeners.

    Attributes:
        active: Requests in flight (sent, or holding an unread response).
        spending: The retry budget's counts (None: no budget); the rpc
            channel's retries spend it too.
        retries: Retries made, transparent ones included.
        hedges: Copies of hedged requests sent after the first.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        retry: RetryPolicy,
        answered: Answered,
        budget: RetryBudget | None = None,
        events: Listeners | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._events = events or Listeners()
        self._retry = retry
        # One copy of a hedged request: only its uncounted retries (a request
        # never processed, a drain), as gRFC A6 allows them to hedges; its
        # failures are the hedge loop's to judge.
        self._per_hedge = dataclasses.replace(retry, max_attempts=1)
        self._answered = answered
        self.spending = None if budget is None else Spending(budget)
        self.active = 0
        self.retries = 0
        self.hedges = 0
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

    def _spend(self, now: float) -> bool:
        """Whether the retry budget allows one more retry or hedge now (counted if so)."""
        return self.spending is None or self.spending.try_spend(now)

    async def send(
        self,
        request: OutgoingRequest,
        deadline: float | None,
        *,
        read_body: bool,
        hedge: HedgePolicy | None = None,
        policy: RetryPolicy | None = None,
    ) -> Response:
        """Run attempts until one succeeds or :func:`decide_retry` says stop.

        One coroutine for the whole attempt (slot, exchange, body): every
        await level is paid again on each wake-up, so there are few.

        Args:
            request: The request.
            deadline: Its total deadline (event-loop time), or None.
            read_body: Read the whole body (``request()``), or not (``stream()``).
            hedge: Its hedging policy: its copies run in :meth:`_hedged`.
            policy: Given for one copy of a hedged request (which the budget
                counted already); None: the pool's retry policy.
        """
        tries = _FRESH
        scheduler = self._scheduler
        clock = asyncio.get_running_loop().time
        if policy is None:
            policy = self._retry
            if self.spending is not None:
                self.spending.deposit(clock())
            if hedge is not None:
                return await self._hedged(request, deadline, read_body, hedge)
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
                address = request.sent_to = grant.endpoint.address
                request.attempts += 1
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
            except asyncio.CancelledError:
                if address is not None and grant is not None:
                    self._answered(grant.endpoint, _cancelled(), clock() - sent_at)
                raise
            else:
                self._answered(grant.endpoint, response.status_code, clock() - sent_at)
                if response.status_code not in policy.statuses:
                    return response  # the common case: no decision to make
                outcome = response.status_code
                retry_after = parse_retry_after(response.header("retry-after"))
                request.avoid |= {address}  # a retry of this answer, too, goes elsewhere
            now = clock()
            decision = decide_retry(
                outcome,
                method=request.method,
                replayable=request.replayable,
                tries=tries,
                now=now,
                deadline=deadline,
                policy=policy,
                retry_after=retry_after,
                connected=address is not None,
            )
            if decision.action is RetryAction.RETRY and decision.budgeted and not self._spend(now):
                where = address or ""
                logger.info(
                    "%s: %s not retried (%s): the retry budget is spent",
                    where,
                    request.target,
                    outcome,
                    extra={"h2pool_endpoint": where, "h2pool_request": request.target},
                )
                if self._events.listening:
                    self._events.emit(
                        RetryBudgetExhausted(
                            endpoint=where,
                            method=request.method,
                            path=request.path,
                            outcome=_named(outcome),
                        )
                    )
                if isinstance(outcome, H2PoolError):
                    raise _refused(outcome) from outcome
                return response
            if decision.action is RetryAction.STOP:
                if isinstance(outcome, H2PoolError):
                    raise outcome
                return response
            if not isinstance(outcome, H2PoolError):
                await response.aclose()
            where = address or ""
            logger.info(
                "%s: %s retried in %.3fs (%s): %s",
                where,
                request.target,
                decision.delay,
                decision.reason,
                outcome,
                extra={"h2pool_endpoint": where, "h2pool_request": request.target},
            )
            if self._events.listening:
                self._events.emit(
                    RequestRetried(
                        endpoint=where,
                        method=request.method,
                        path=request.path,
                        reason=str(decision.reason),
                        outcome=_named(outcome),
                        delay=decision.delay,
                    )
                )
            self.retries += 1
            tries = decision.tries
            if decision.delay:
                await asyncio.sleep(decision.delay)

    async def _hedged(
        self, request: OutgoingRequest, deadline: float | None, read_body: bool, hedge: HedgePolicy
    ) -> Response:
        """Send copies of ``request`` as ``hedge`` says; the first final answer wins.

        Each copy is a task running :meth:`send` with its own copy of the
        request (so that its endpoint, failures and response headers are its
        own), avoiding the endpoints of the copies in flight and of those
        that failed. When the request ends (an answer won, it failed, or its
        caller cancelled it) the copies still running are cancelled, which
        resets their streams (RST_STREAM CANCEL) and frees their slots, and
        a response that raced in is closed.
        """
        loop = asyncio.get_running_loop()
        copies: dict[asyncio.Task[Response], OutgoingRequest] = {}
        last: Response | H2PoolError | None = None
        sent = 0
        next_at: float | None = loop.time()  # the first copy goes now
        try:
            while True:
                now = loop.time()
                if next_at is not None and now >= next_at:
                    if sent and not self._spend(now):
                        next_at = None  # a refused hedge is not sent: the others go on
                    else:
                        copy = dataclasses.replace(
                            request,
                            avoid=avoided(request, copies.values()),
                            sent_to=None,
                            attempts=0,
                        )
                        task = loop.create_task(
                            self.send(copy, deadline, read_body=read_body, policy=self._per_hedge)
                        )
                        copies[task] = copy
                        self.hedges += bool(sent)
                        sent += 1
                        if sent > 1 and self._events.listening:
                            self._events.emit(
                                RequestHedged(
                                    endpoint=_first_sent(copies.values()),
                                    method=request.method,
                                    path=request.path,
                                    copies=sent,
                                )
                            )
                        next_at = now + hedge.delay if sent < hedge.max_attempts else None
                if not copies:  # every copy sent has ended, none with a final answer
                    if isinstance(last, Response):
                        response, last = last, None
                        return response
                    assert last is not None
                    raise last
                timeout = None if next_at is None else max(0.0, next_at - loop.time())
                done, _ = await asyncio.wait(
                    copies, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    copy = copies.pop(task)
                    request.attempts += copy.attempts
                    request.sent_to = copy.sent_to or request.sent_to
                    # The next copies avoid it too, whatever it answered.
                    request.avoid = avoided(request, (copy,))
                    request.last_error = copy.last_error or request.last_error
                    request.response_headers = copy.response_headers or request.response_headers
                    error = task.exception()
                    if error is not None and not isinstance(error, H2PoolError):
                        raise error
                    outcome = error if error is not None else task.result()
                    verdict = judge(
                        outcome if isinstance(outcome, H2PoolError) else outcome.status_code, hedge
                    )
                    await _discard(last)
                    last = None
                    if verdict is Verdict.WIN:
                        return task.result()
                    last = outcome
                    if (
                        verdict is Verdict.NEXT
                        and sent < hedge.max_attempts
                        and next_at is not None
                    ):
                        next_at = loop.time()  # A6: a non-fatal answer sends the next copy now
                    elif verdict is Verdict.WAIT:
                        next_at = None
        finally:
            request.attempts += sum(copy.attempts for copy in copies.values())
            await _cancel_all(copies)
            await _discard(last)

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


def _first_sent(copies: Iterable[OutgoingRequest]) -> str:
    """The endpoint of the first copy of a hedged request routed so far ("" if none)."""
    return next((copy.sent_to for copy in copies if copy.sent_to), "")


def _named(outcome: int | H2PoolError) -> int | str:
    """An attempt's outcome in an event: the status code, or the error's class name."""
    return outcome if isinstance(outcome, int) else type(outcome).__name__


def _refused(error: H2PoolError) -> H2PoolError:
    """``error``, saying that the retry budget refused to retry it."""
    refused = error.copy()
    refused._reason = f"{error.reason}; not retried: the retry budget is spent"
    refused.args = (f"{error}; not retried: the retry budget is spent",)
    return refused


async def _discard(outcome: Response | H2PoolError | None) -> None:
    """Close a response that will not be returned (an error needs nothing)."""
    if isinstance(outcome, Response):
        await outcome.aclose()


async def _cancel_all(copies: dict[asyncio.Task[Response], OutgoingRequest]) -> None:
    """Cancel the copies of a hedged request still running; close what they answered.

    Cancelling a copy resets its stream (RST_STREAM CANCEL) and frees its
    slot at once; the wait is for that to happen, not for the server.
    """
    for task in copies:
        task.cancel()
    while copies:
        done, _ = await asyncio.wait(copies)
        for task in done:
            del copies[task]
            if not task.cancelled() and task.exception() is None:
                await task.result().aclose()  # answered as it was cancelled
