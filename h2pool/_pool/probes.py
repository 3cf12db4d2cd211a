"""Active health checks: ask each endpoint whether it serves, take out those that do not.

Connection health (PINGs) tells whether a replica answers; only the
application knows whether it *serves*: a replica draining, warming up or
failing its dependencies can say so (gRPC's health service, an HTTP
``/healthz``). With a :class:`HealthCheck`, the pool asks every endpoint
with a ready connection every ``interval`` seconds, on that connection (no
queue: a full connection skips a round), and an endpoint that says it does
not serve is out of rotation as an ejection is (never the last one, within
``EjectionPolicy.max_ejected_percent``) until it says it does. A check that
fails or times out gives no verdict: dead connections are the PINGs' job.
An endpoint that connects again after failing is out of rotation until its
check, run at once, says it serves (its proof of life: gRFC A17 keeps a
subchannel from READY until its check says SERVING).
This is Envoy's active health checking; gRFC A17 is gRPC's.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._core.headers import HeadersIn
from .._exceptions import H2PoolError, PoolOverloaded
from .channel import Channel
from .checks import check_seconds
from .endpoint import Endpoint
from .outgoing import Content, build_request
from .policies import EjectionPolicy, may_eject
from .response import Response
from .timeouts import Timeouts

__all__ = ["HealthCheck", "HealthChecker", "Probe", "Verdict", "health_verdict"]

logger = logging.getLogger("h2pool.pool")


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """An active health check of every endpoint.

    Attributes:
        check: ``async check(probe) -> bool``: whether the endpoint behind
            ``probe`` serves; it sends its request(s) with ``probe.request()``.
        interval: Seconds between two checks of an endpoint.
        timeout: Bound on one check, in seconds.
    """

    check: Callable[[Probe], Awaitable[bool]]
    interval: float = 5.0
    timeout: float = 1.0

    def __post_init__(self) -> None:
        check_seconds("interval", self.interval)
        check_seconds("timeout", self.timeout)
        if not callable(self.check):
            raise TypeError(f"check must be an async callable, not {self.check!r}")


class Verdict(enum.Enum):
    """What to do with an endpoint after a check."""

    KEEP = "keep"  #: nothing changes
    REMOVE = "remove"  #: out of rotation until a check says it serves
    RESTORE = "restore"  #: back in rotation


def health_verdict(
    serving: bool | None,
    *,
    held: bool,
    endpoints: int,
    ejected: int,
    policy: EjectionPolicy,
) -> Verdict:
    """The :class:`Verdict` for an endpoint whose check said ``serving`` (None: no answer).

    Args:
        serving: The check's answer, or None when it failed or timed out.
        held: Whether a check has taken the endpoint out of rotation already.
        endpoints: Endpoints in play.
        ejected: Endpoints out of rotation now, for any reason.
        policy: The pool's ejection limits (never the last endpoint).
    """
    if serving is None:
        return Verdict.KEEP
    if serving:
        return Verdict.RESTORE if held else Verdict.KEEP
    if held:
        return Verdict.REMOVE  # renewed until it serves again
    return Verdict.REMOVE if may_eject(policy, endpoints, ejected) else Verdict.KEEP


class Probe:
    """One endpoint, as a health check sees it: requests on its own connections.

    Attributes:
        address: The endpoint's ``"host:port"``.
    """

    def __init__(
        self,
        endpoint: Endpoint[Channel],
        extra_headers: list[tuple[bytes, bytes]],
        timeout: float,
        origin: str,
    ) -> None:
        self.address = endpoint.address
        self._endpoint = endpoint
        self._extra_headers = extra_headers
        self._timeouts = Timeouts(total=timeout)
        self._origin = origin

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: HeadersIn | None = None,
        content: Content | None = None,
    ) -> Response:
        """Send a request on a ready connection of this endpoint; its whole response.

        Raises:
            PoolOverloaded: No connection of the endpoint has a free stream.
            H2PoolError: The request failed.
        """
        request = build_request(method, path, self._extra_headers, headers, content, self._timeouts)
        started = time.perf_counter()
        for channel in self._endpoint.ready():
            if channel.open_streams + channel.reserved < channel.max_streams:
                channel.reserved += 1  # exchange() takes it back as it opens the stream
                fetched = await channel.fetch(request)
                response = Response.read_whole(
                    fetched, self.address, draining=not channel.accepting_streams
                )
                return response._sent(request, self._origin, started)
        raise PoolOverloaded(f"{request.target} to {self.address}: no free stream for the check")


class HealthChecker:
    """Runs a :class:`HealthCheck` on every endpoint, every ``interval``, while the pool is open.

    Args:
        health_check: What to run.
        endpoints: The pool's endpoints (the live list, read each round).
        extra_headers: The pool's own header fields.
        ejection: The pool's ejection limits.
        changed: Called when an endpoint went out of or back into rotation.
        origin: The pool's ``scheme://authority``, for the probes' responses.
    """

    def __init__(
        self,
        health_check: HealthCheck,
        endpoints: Callable[[], list[Endpoint[Channel]]],
        extra_headers: list[tuple[bytes, bytes]],
        ejection: EjectionPolicy,
        changed: Callable[[], None],
        origin: str,
    ) -> None:
        self._check = health_check
        self._endpoints = endpoints
        self._extra_headers = extra_headers
        self._ejection = ejection
        self._changed = changed
        self._origin = origin
        self._held: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._probations: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the rounds (once)."""
        if self._task is None:
            # A fresh context: started by a pool's first request, the rounds
            # must not inherit its context (its h2pool.deadline, say).
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), context=contextvars.Context())

    async def stop(self) -> None:
        """Stop the rounds."""
        tasks = [self._task, *self._probations] if self._task is not None else []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def probation(self, endpoint: Endpoint[Channel]) -> None:
        """``endpoint`` connected again after failing: out of rotation until its check passes.

        The check runs at once, not at the next round.
        """
        if self._task is None:
            return  # not started: no check would ever let it back
        self._hold(endpoint, asyncio.get_running_loop().time())
        task = asyncio.ensure_future(self._check_now(endpoint))
        self._probations.add(task)
        task.add_done_callback(self._probations.discard)

    async def _check_now(self, endpoint: Endpoint[Channel]) -> None:
        self._apply(endpoint, await self._ask(endpoint))
        self._changed()

    async def _run(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(self._check.interval)

    async def round(self) -> None:
        """Check every endpoint that has a ready connection, at once; apply the verdicts."""
        endpoints = [ep for ep in self._endpoints() if not ep.closed and ep.ready()]
        answers = await asyncio.gather(*(self._ask(ep) for ep in endpoints))
        for endpoint, serving in zip(endpoints, answers, strict=True):
            self._apply(endpoint, serving)
        self._changed()

    def _apply(self, endpoint: Endpoint[Channel], serving: bool | None) -> None:
        """Take ``endpoint`` out of rotation, or back, as its check's answer says."""
        now = asyncio.get_running_loop().time()
        in_play = [ep for ep in self._endpoints() if not ep.closed]
        verdict = health_verdict(
            serving,
            held=endpoint.address in self._held,
            endpoints=len(in_play),
            ejected=sum(ep.ejected(now) for ep in in_play),
            policy=self._ejection,
        )
        if verdict is Verdict.REMOVE:
            if endpoint.address not in self._held:
                endpoint.ejections += 1
                endpoint.ejection_reason = "the health check says it does not serve"
                logger.warning(
                    "%s: does not serve: out of rotation",
                    endpoint.address,
                    extra={"h2pool_endpoint": endpoint.address},
                )
            self._hold(endpoint, now)  # renewed at each round while it does not serve
        elif verdict is Verdict.RESTORE:
            self._held.discard(endpoint.address)
            endpoint.ejected_until = 0.0
            logger.info(
                "%s: serves again: back in rotation",
                endpoint.address,
                extra={"h2pool_endpoint": endpoint.address},
            )

    def _hold(self, endpoint: Endpoint[Channel], now: float) -> None:
        """Out of rotation until the next round's check at the latest."""
        self._held.add(endpoint.address)
        endpoint.ejected_until = now + self._check.interval + self._check.timeout

    async def _ask(self, endpoint: Endpoint[Channel]) -> bool | None:
        probe = Probe(endpoint, self._extra_headers, self._check.timeout, self._origin)
        try:
            async with asyncio.timeout(self._check.timeout):
                return bool(await self._check.check(probe))
        except (H2PoolError, TimeoutError) as exc:
            logger.debug(
                "%s: the health check gave no answer: %s",
                endpoint.address,
                exc,
                extra={"h2pool_endpoint": endpoint.address},
            )
            return None
        except Exception:
            logger.exception(
                "%s: the health check raised",
                endpoint.address,
                extra={"h2pool_endpoint": endpoint.address},
            )
            return None
