"""The pool's connections over time: opening them, replacing them, and the endpoints' health.

Everything here reacts to something: a connection attempt ending, a
connection event (draining, closed, limit changed, slot freed), the end of a
backoff, a failed endpoint that calls for a new DNS resolution. After each,
the scheduler runs once (:meth:`Scheduler.assign`). Nothing polls: one
timer is armed only while an endpoint waits out a backoff or an ejection.

Tiers (``backup_endpoints``): connections are kept to the tier that serves
(:func:`.endpoint.serving_tier`); the failing endpoints of lower tiers are
retried (each with its backoff) so that they can come back; higher tiers
are not connected. When a lower tier serves again, the connections of the
higher ones are shut down gracefully (GOAWAY: their requests in flight
finish, no new one starts there).

Subsetting (``subset_size``): of the endpoints given or resolved, only the
pool's subset (:func:`.subset.subset`) becomes endpoints of the pool.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from .._core.protocol import ConnectionEvent
from .._exceptions import ConnectError, H2PoolError
from .balancer import Balancer
from .channel import Channel
from .connect import ChannelSettings, open_channel
from .endpoint import Endpoint, eject_outlier, serving_tier
from .events import (
    ConnectionDraining,
    ConnectionEnded,
    ConnectionOpened,
    EndpointEjected,
    EndpointRestored,
    Listeners,
)
from .outgoing import Observer
from .policies import (
    ConnectionBackoff,
    EjectionPolicy,
    backoff_delay,
    is_endpoint_failure,
)
from .scheduler import Scheduler
from .subset import subset

__all__ = ["Maintenance", "MaintenanceSettings"]

logger = logging.getLogger("h2pool.pool")


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenanceSettings:
    """What maintenance needs of the pool's options (see :class:`~h2pool.Pool`)."""

    channel: ChannelSettings
    http1: bool | frozenset[str]
    min_connections: int
    max_connections: int
    http1_max_connections: int
    connect_timeout: float
    backoff: ConnectionBackoff
    ejection: EjectionPolicy
    resolve_interval: float
    subset_size: int | None = None
    subset_client: tuple[int, int] | None = None
    subset_seed: bytes = b""
    balancer: Balancer = Balancer.P2C


class Maintenance:
    """Opens, replaces and drops the connections of a pool's endpoints.

    Args:
        settings: The pool's connection options.
        host: The target's host (resolved when ``endpoints`` is None).
        port: The target's port.
        endpoints: The fixed endpoints, or None to resolve ``host``.
        backups: The backup endpoints (tier 1), always listed.
        functional_timeout: Health check of connections.
        max_pending: Requests allowed to wait for a slot.
        wait_for_ready: See :class:`~h2pool.Pool`.
    """

    def __init__(
        self,
        settings: MaintenanceSettings,
        *,
        host: str,
        port: int,
        endpoints: list[str] | None,
        backups: Sequence[str] = (),
        functional_timeout: float,
        max_pending: int,
        wait_for_ready: bool,
    ) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._functional_timeout = functional_timeout
        self.scheduler = Scheduler(
            functional_timeout=functional_timeout,
            max_pending=max_pending,
            wait_for_ready=wait_for_ready,
            open_connection=self.start_connect,
            balancer=settings.balancer,
        )
        self._backups = [self._new_endpoint(address, tier=1) for address in backups]
        self.scheduler.endpoints = [
            self._new_endpoint(address) for address in self._subset(endpoints or ())
        ] + self._backups
        self._tier = 0  # the tier that served at the latest maintain()
        #: Told of an endpoint that connected again after failing (the health
        #: check's probation, when the pool has one).
        self.recovered: Callable[[Endpoint[Channel]], None] | None = None
        self._resolve = endpoints is None
        self._resolved_at: float | None = None
        # While the host resolves to nothing: why, how often so far, and
        # when a request may ask the resolver again (the connection backoff).
        self.resolve_error: ConnectError | None = None
        self._resolve_failures = 0
        self._next_resolve_at = 0.0
        self._resolving: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.closing = False
        #: The pool's event listeners.
        self.events = Listeners()
        # Each open connection's id in events and log records.
        self._ids: dict[Channel, int] = {}
        self._next_id = itertools.count(1)

    @property
    def endpoints(self) -> list[Endpoint[Channel]]:
        """The endpoints, in the scheduler's hands."""
        return self.scheduler.endpoints

    # ------------------------------------------------------------------
    # Keeping min_connections

    def maintain(self, observer: Observer | None = None) -> None:
        """Keep ``min_connections`` open per endpoint of the serving tier, now or when backoffs end.

        ``observer``: the request's whose resolution of the host asked for
        these connections, told of their steps (None: opened ahead of requests).

        An endpoint that may not be connected to yet (backing off, ejected)
        is tried again by one timer, armed only while such an endpoint
        exists: a healthy pool runs no timer. A failing endpoint of a lower
        tier than the serving one is tried with at least one connection
        (whatever ``min_connections``), so that it can come back.
        """
        if self.closing:
            return
        now = asyncio.get_running_loop().time()
        for endpoint in self.endpoints:
            self.prune(endpoint)  # HTTP/1.1 connections may expire without an event
        tier = self._serving_tier(now)
        if tier < self._tier:
            self._retire_above(tier)
        self._tier = tier
        retry_at: float | None = None
        for endpoint in self.endpoints:
            if endpoint.tier > tier:
                continue  # a backup while a lower tier serves: connected only when needed
            wanted = self._settings.min_connections
            if endpoint.tier < tier:
                wanted = max(wanted, 1)  # failing: retried so that it can come back
            while len(endpoint.ready()) + endpoint.connecting < wanted:
                if not endpoint.may_connect(now):
                    if not endpoint.closed:
                        at = max(endpoint.next_attempt_at, endpoint.ejected_until)
                        retry_at = at if retry_at is None else min(retry_at, at)
                    break
                self.start_connect(endpoint, None, observer)
        if retry_at is not None:
            timer = self._timer
            if timer is None or timer.when() > retry_at:
                if timer is not None:
                    timer.cancel()
                self._timer = asyncio.get_running_loop().call_at(retry_at, self._timer_due)

    def _timer_due(self) -> None:
        self._timer = None
        self.maintain()
        self.scheduler.assign()

    def _serving_tier(self, now: float) -> int:
        return serving_tier([ep for ep in self.endpoints if not ep.closed], now)

    def _retire_above(self, tier: int) -> None:
        """A lower tier serves again: shut the connections of the higher tiers down gracefully."""
        for endpoint in self.endpoints:
            if endpoint.tier > tier and endpoint.connections:
                logger.info(
                    "%s: a backup no longer needed: closing",
                    endpoint.address,
                    extra={"h2pool_endpoint": endpoint.address},
                )
                for connection in endpoint.connections:
                    # No bound but the requests' own: those in flight finish.
                    self.spawn(connection.shutdown(timeout=None))

    def start_connect(
        self, endpoint: Endpoint[Channel], timeout: float | None, observer: Observer | None = None
    ) -> None:
        """Start a connection attempt to ``endpoint`` (counted in ``connecting`` at once).

        ``observer``: the request's whose routing started it, told of its
        steps; None for connections opened ahead of requests.
        """
        timeout = timeout or self._settings.connect_timeout
        end = asyncio.get_running_loop().time() + timeout
        if not endpoint.connecting or end > endpoint.attempts_end:
            endpoint.attempts_end = end
        endpoint.connecting += 1
        self.spawn(self._connect(endpoint, timeout, observer))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the pool cancels when it closes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _subset(self, addresses: Sequence[str]) -> list[str]:
        """The primary endpoints this pool connects to, of all those given or resolved."""
        settings = self._settings
        return subset(
            addresses,
            settings.subset_size,
            seed=settings.subset_seed,
            client=settings.subset_client,
        )

    def _new_endpoint(self, address: str, tier: int = 0) -> Endpoint[Channel]:
        settings = self._settings
        endpoint: Endpoint[Channel] = Endpoint(
            address, max_connections=settings.max_connections, tier=tier
        )
        http1 = settings.http1
        endpoint.http1 = http1 if isinstance(http1, bool) else address in http1
        return endpoint

    async def _connect(
        self, endpoint: Endpoint[Channel], timeout: float, observer: Observer | None
    ) -> None:
        settings = self._settings
        try:
            channel = await open_channel(
                endpoint.address,
                endpoint.host,
                endpoint.port,
                settings.channel,
                http1=endpoint.http1,
                connect_timeout=timeout,
                ping_interval=endpoint.ping_interval,
                observer=observer,
            )
        except H2PoolError as exc:
            logger.warning(
                "connecting to %s failed: %s",
                endpoint.address,
                exc,
                extra={"h2pool_endpoint": endpoint.address},
            )
            exc.endpoint = endpoint.address  # kept as its last failure: requests name it
            self._endpoint_failed(endpoint, exc, settings.backoff)
        else:
            if self.closing:
                channel.close()
            elif endpoint.tier > self._serving_tier(asyncio.get_running_loop().time()):
                channel.close()  # a backup no longer needed by the time it connected
            else:
                channel.set_listener(self._on_connection_event)
                http1 = channel.http_version == "HTTP/1.1"
                failure = endpoint.last_failure
                endpoint.add(channel, http1, settings.http1_max_connections)
                if failure is not None:
                    self._restored(endpoint.address, failure)
                    if self.recovered is not None:
                        self.recovered(endpoint)
                number = self._ids[channel] = next(self._next_id)
                logger.debug(
                    "%s: connection %d open with %s (rtt %s)",
                    endpoint.address,
                    number,
                    channel.http_version,
                    channel.rtt,
                    extra={"h2pool_endpoint": endpoint.address, "h2pool_connection": number},
                )
                if self.events.listening:
                    self.events.emit(
                        ConnectionOpened(
                            endpoint=endpoint.address,
                            connection=number,
                            http_version=channel.http_version,
                            rtt=channel.rtt,
                        )
                    )
        finally:
            endpoint.connecting -= 1
            self.scheduler.changed()
            self.maintain()
            self.scheduler.assign()

    def _restored(self, address: str, failure: BaseException) -> None:
        """``address`` connected again after ``failure``: log it, tell the listeners."""
        logger.info(
            "%s: connected again after failing (%s)",
            address,
            failure,
            extra={"h2pool_endpoint": address},
        )
        if self.events.listening:
            self.events.emit(EndpointRestored(endpoint=address, failure=str(failure)))

    def _on_connection_event(self, connection: Channel, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.SLOT_FREED:
            self.scheduler.assign()
            return
        endpoint = next((ep for ep in self.endpoints if connection in ep.connections), None)
        if endpoint is not None:
            error = connection.error
            self._tell(endpoint.address, connection, event)
            if event is ConnectionEvent.CLOSED and error and is_endpoint_failure(error):
                logger.warning(
                    "%s: connection %s failed: %s",
                    endpoint.address,
                    self._ids.get(connection),
                    error,
                    extra={
                        "h2pool_endpoint": endpoint.address,
                        "h2pool_connection": self._ids.get(connection),
                    },
                )
                self._endpoint_failed(endpoint, error, None)
            self.prune(endpoint)
        self.scheduler.changed()
        self.maintain()  # replace what drained or closed
        self.scheduler.assign()

    def _tell(self, address: str, connection: Channel, event: ConnectionEvent) -> None:
        """Log a connection's draining or end; tell the listeners."""
        if event is ConnectionEvent.DRAINING:
            number = self._ids.get(connection)
            told: ConnectionDraining | ConnectionEnded | None = None
            if number is not None:
                told = ConnectionDraining(endpoint=address, connection=number)
            logger.debug(
                "%s: connection %s draining (GOAWAY)",
                address,
                number,
                extra={"h2pool_endpoint": address, "h2pool_connection": number},
            )
        elif event is ConnectionEvent.CLOSED:
            number = self._ids.pop(connection, None)
            error = connection.error
            told = None
            if number is not None:  # told once, after its ConnectionOpened
                told = ConnectionEnded(
                    endpoint=address, connection=number, error=None if error is None else str(error)
                )
            logger.debug(
                "%s: connection %s closed%s",
                address,
                number,
                "" if error is None else f": {error}",
                extra={"h2pool_endpoint": address, "h2pool_connection": number},
            )
        else:
            return
        if told is not None and self.events.listening:
            self.events.emit(told)

    def prune(self, endpoint: Endpoint[Channel]) -> None:
        """Drop the endpoint's connections that ended, closing what is left of them."""
        before = endpoint.connections
        endpoint.prune()
        if len(endpoint.connections) != len(before):
            self.scheduler.changed()
        for connection in before:
            if connection not in endpoint.connections:
                connection.close()
                self._tell(endpoint.address, connection, ConnectionEvent.CLOSED)

    def _endpoint_failed(
        self,
        endpoint: Endpoint[Channel],
        error: BaseException,
        backoff: ConnectionBackoff | None,
    ) -> None:
        """Count a failure against an endpoint: maybe back off, eject, re-resolve."""
        now = asyncio.get_running_loop().time()
        endpoint.record_failure(now, error, backoff)
        failures = endpoint.consecutive_failures
        if failures < self._settings.ejection.consecutive_failures or endpoint.ejected(now):
            return
        self._eject(endpoint, now, f"{failures} failures in a row, the last: {endpoint.last_error}")
        self._schedule_resolve()

    def _eject(self, endpoint: Endpoint[Channel], now: float, reason: str) -> None:
        """Eject ``endpoint`` for ``reason``, unless too many are out already (never all)."""
        duration = eject_outlier(self.endpoints, endpoint, now, self._settings.ejection, reason)
        if duration is not None:
            self.scheduler.changed()
            logger.warning(
                "%s: ejected for %.1fs: %s",
                endpoint.address,
                duration,
                reason,
                extra={"h2pool_endpoint": endpoint.address},
            )
            if self.events.listening:
                self.events.emit(
                    EndpointEjected(endpoint=endpoint.address, duration=duration, reason=reason)
                )

    def answered(
        self, endpoint: Endpoint[Channel], outcome: int | H2PoolError, latency: float
    ) -> None:
        """An attempt on ``endpoint`` ended: a status code or an error, after ``latency`` s.

        The balancer's latency estimate and outlier detection on answers
        (:meth:`.Endpoint.answered`).
        """
        now = asyncio.get_running_loop().time()
        status = outcome if isinstance(outcome, int) else None
        reason = endpoint.answered(status, latency, now, self._settings.ejection)
        if reason is not None:
            self._eject(endpoint, now, reason)

    def rpc_unavailable(self, address: str) -> None:
        """A gRPC call to ``address`` ended UNAVAILABLE in an answer the pool counted as 200."""
        endpoint = next((ep for ep in self.endpoints if ep.address == address), None)
        if endpoint is not None:
            now = asyncio.get_running_loop().time()
            reason = endpoint.rpc_unavailable(now, self._settings.ejection)
            if reason is not None:
                self._eject(endpoint, now, reason)

    # ------------------------------------------------------------------
    # Endpoints from DNS

    @property
    def unresolved(self) -> bool:
        """Whether endpoints come from resolving the target's host and none is known yet."""
        return self._resolve and len(self.scheduler.endpoints) == len(self._backups)

    async def ensure_endpoints(
        self, wait_for_ready: bool | None, observer: Observer | None = None
    ) -> None:
        """Resolve the target's host until it gives an address (if endpoints come from it).

        One resolution runs at a time, shared by the requests that wait for
        it. After a failed one, the resolver is asked again only once the
        connection backoff allows; until then ``wait_for_ready`` says what
        a request does: False fails it with the resolver's error, True waits
        and resolves again (the request's deadline bounds it), None (``start()``)
        returns. With backup endpoints, a request never waits for a failed
        resolver: the backups serve while it is asked again in the background.
        ``observer``, the request's, is told of the steps of the
        connections opened when the resolution it started ends.

        Raises:
            ConnectError: The host did not resolve (naming it and the
                resolver's message) and ``wait_for_ready`` is False.
        """
        loop = asyncio.get_running_loop()
        while self.unresolved:
            error = self.resolve_error
            wait = self._next_resolve_at - loop.time()
            if error is not None and self._backups:
                if wait <= 0:
                    self._resolve_in_background()
                return
            if error is not None and wait > 0:
                if wait_for_ready is None:
                    return
                if not wait_for_ready:
                    raise error.copy() from error
                await asyncio.sleep(wait)
                continue
            if self._resolving is None or self._resolving.done():
                self._resolving = asyncio.ensure_future(self._resolve_endpoints(observer))
            await asyncio.shield(self._resolving)

    def _schedule_resolve(self) -> None:
        if not self._resolve or self._resolved_at is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._resolved_at >= self._settings.resolve_interval:
            self._resolve_in_background()

    def _resolve_in_background(self) -> None:
        """Start a resolution, unless one runs; the pool cancels it when it closes."""
        if self._resolving is None or self._resolving.done():
            self._resolving = asyncio.ensure_future(self._resolve_endpoints())
            self._tasks.add(self._resolving)
            self._resolving.add_done_callback(self._tasks.discard)

    async def _resolve_endpoints(self, observer: Observer | None = None) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA refuses
            logger.warning(
                "resolving %s failed: %s", self._host, exc, extra={"h2pool_endpoint": self._host}
            )
            failure = ConnectError(f"cannot resolve {self._host!r}: {exc}")
            failure.__cause__ = exc
            infos = []
        else:
            failure = ConnectError(f"{self._host!r} resolved to no address")
        finally:
            self._resolved_at = loop.time()
        addresses = []
        for family, *_, sockaddr in infos:
            host, port = str(sockaddr[0]), self._port
            address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            self._resolve_failed(failure)
            return  # keep what we had
        self.resolve_error = None
        self._resolve_failures = 0
        known = {ep.address: ep for ep in self.endpoints if ep.tier == 0}
        chosen = self._subset(addresses)
        self.scheduler.endpoints = [
            known.get(address) or self._new_endpoint(address) for address in chosen
        ] + self._backups
        for address, endpoint in known.items():
            if address not in chosen:
                endpoint.closed = True
                for connection in endpoint.connections:
                    self.spawn(connection.shutdown(timeout=self._functional_timeout * 2))
        self.maintain(observer)
        self.scheduler.assign()

    def _resolve_failed(self, error: ConnectError) -> None:
        """Remember why the host did not resolve; back off before asking again."""
        self._resolve_failures += 1
        self.resolve_error = error
        delay = backoff_delay(self._settings.backoff, self._resolve_failures)
        self._next_resolve_at = asyncio.get_running_loop().time() + delay

    # ------------------------------------------------------------------
    # Closing

    async def aclose(self) -> None:
        """Stop maintaining; shut every connection down gracefully."""
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        connections = [conn for ep in self.endpoints for conn in ep.connections]
        for endpoint in self.endpoints:
            endpoint.closed = True
        await asyncio.gather(*(conn.shutdown(timeout=1.0) for conn in connections))
