"""Pool: multiplexed HTTP/2 connections to the endpoints of one service.

Endpoints that only speak HTTP/1.1 (chosen by ALPN, or by the ``http1``
option) are served through httpcore behind the same API and rules.

The pool is the public face of four parts, each in its own module:
:mod:`.scheduler` hands stream slots to requests (routing by the pure
:func:`.routing.route`), :mod:`.attempts` runs a request's attempts under
the pure :func:`.policies.decide_retry`, :mod:`.maintenance` opens and
replaces connections and keeps the endpoints' health, and
:mod:`.timeouts` bounds each phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence
from typing import Any, Literal

from .._core.config import H2Config
from .._core.headers import HeadersIn
from .._core.health import DEFAULT_PING_BUDGET, PingBudget
from .._exceptions import H2PoolError, PoolClosed, RequestTimeout
from .._messages import Request
from .attempts import Attempts
from .budget import DEFAULT_RETRY_BUDGET, RetryBudget, Spending
from .checks import check_count, check_flag
from .deadlines import PASSED, bound, caller_deadline, remaining
from .endpoint import backup_addresses
from .events import Listener, request_finished
from .hedging import HedgePolicy, hedge_for
from .maintenance import Maintenance
from .outgoing import Content, Observer, OutgoingRequest, build_request, checked_headers
from .policies import ConnectionBackoff, EjectionPolicy, RetryPolicy
from .probes import HealthCheck, HealthChecker
from .response import Response
from .settings import maintenance_settings
from .stats import PoolStats
from .timeouts import DeadlineTimers, Timeouts
from .urls import QueryParams, parse_target
from .verbs import DEFAULT, Verbs

__all__ = ["Content", "Pool", "PoolStats"]


class Pool(Verbs[Awaitable[Response], Content]):
    """A pool of multiplexed HTTP/2 connections to the endpoints of one service.

    Args:
        target: Base URL, ``http://authority`` or ``https://authority``: it
            gives ``:scheme``, ``:authority`` and the TLS server name. A path
            in it (``http://svc/api/v1``) is the base of every request's
            path; ``user:password@`` in it becomes ``authorization: Basic``
            on every request, never part of ``:authority``.
        endpoints: ``"host:port"`` of each endpoint (replica) to connect to. Without
            it, every address the target's host resolves to is an endpoint,
            resolved again when endpoints fail.
        ssl: For https targets: None verifies against certifi's CAs; an
            ``ssl.SSLContext`` is used with its ALPN protocols set to ``h2``
            and ``http/1.1``; False disables certificate verification
            (tests only).
        functional_timeout: Seconds of silence after which a connection is
            pinged, and then without any answer declared dead.
        timeout: Default timeouts of each request: a number bounds the whole
            request including retries and backoff (None: no bound); a
            ``Timeouts`` also bounds each phase (connect, read, write, pool).
        http1: Which endpoints speak HTTP/1.1 (through httpcore). False
            (the default): those that do not speak HTTP/2, found out by
            themselves; over TLS, ALPN chooses; over cleartext, the first
            connection to an endpoint tries HTTP/2 (prior knowledge) and,
            when the server answers as HTTP/1.1 or closes at once, the
            endpoint speaks HTTP/1.1 from then on (no request is lost). True,
            or a collection of ``"host:port"``: all endpoints, or those
            listed, unless TLS's ALPN chooses HTTP/2. ``"never"``: HTTP/2
            only (ALPN offers only ``h2``; a cleartext server that does not
            speak HTTP/2 is a ``ConnectError``).
        wait_for_ready: When no endpoint can be reached (every one refused,
            failed TLS, or the host did not resolve), fail at once with a
            ``ConnectError`` naming each endpoint and its last connection
            error (False, the default, as gRPC), or wait for one to come back
            until the timeout runs out (True). A request on a fresh pool
            waits for the first connection attempts either way.
        min_connections: Connections kept open per endpoint in rotation.
        max_connections: Most HTTP/2 connections per endpoint; more are
            opened when every one of them is full.
        http1_max_connections: Most HTTP/1.1 connections per endpoint (one
            request at a time each).
        max_streams_per_connection: Local cap on streams per connection
            (the peer's MAX_CONCURRENT_STREAMS applies too).
        connect_timeout: Bound on TCP and TLS set-up, in seconds.
        max_pending: Requests allowed to wait for a connection; more fail
            with ``PoolOverloaded`` at once.
        retry: When and how failed requests are retried.
        retry_budget: How many retries and hedges the pool allows itself,
            as a share of its recent requests (on by default: 20% on top of
            10 per second), so that an outage cannot multiply the load on
            the replicas; None: no budget (each request's own policy only).
        hedge: Hedge idempotent requests (GET, HEAD, OPTIONS, TRACE, PUT,
            DELETE, with a body in memory): send a copy to another endpoint
            when no answer came within ``delay``; the first final answer
            wins. None (the default): no hedging, unless a request asks.
        backoff: Delays between connection attempts to a failing endpoint.
        ejection: When failing endpoints are taken out of rotation.
        config: HTTP/2 settings of each connection.
        headers: Header fields added to every request.
        resolve_interval: Least seconds between two resolutions of the
            target's host (when ``endpoints`` is not given).
        ping_budget: PINGs each connection may send while its server sends
            no HEADERS or DATA (the default keeps within gRPC servers' ping
            policy), or None for no limit.
        tcp_keepalive: Seconds within which TCP keepalive notices a dead
            server host (whole seconds, at least 4), or None to leave the
            operating system's setting.
        health_check: An active health check of every endpoint: those that
            say they do not serve are out of rotation until they do.
        backup_endpoints: ``"host:port"`` of endpoints that take requests
            only while no endpoint of ``endpoints`` (or of the target's host)
            is usable: every one refused, failing, ejected or lost. Not
            connected to until then; once a primary endpoint connects again
            (proof of life), requests go back to the primaries and the
            backups' connections are shut down gracefully.
        subset_size: Connect to this many of the endpoints only (for fleets
            of hundreds), chosen so that many pools spread over all of them;
            None: every endpoint. See ``subset_client``.
        subset_client: ``(index, clients)``: this pool's place among
            ``clients`` pools sharing the endpoints (a pod ordinal, say), for
            an exact spread (deterministic aperture); None: a random subset
            (gRFC A68), even only on average. Needs ``subset_size``.
        balancer: Which endpoint takes each request: ``"p2c"`` (the
            default: of two endpoints, the one with the lower latency x
            outstanding requests, as Finagle and Linkerd), ``"round_robin"``
            or ``"least_request"`` (see docs/resilience.md).
        on_event: A listener told of the pool's events (``h2pool.events``),
            synchronously: it must not block (see :meth:`add_listener`).
    """

    def __init__(
        self,
        target: str,
        *,
        endpoints: Sequence[str] | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        functional_timeout: float = 1.0,
        timeout: Timeouts | float | None = 30.0,
        http1: bool | Literal["never"] | Collection[str] = False,
        wait_for_ready: bool = False,
        min_connections: int = 1,
        max_connections: int = 4,
        http1_max_connections: int = 10,
        max_streams_per_connection: int = 100,
        connect_timeout: float = 5.0,
        max_pending: int = 1000,
        retry: RetryPolicy | None = None,
        retry_budget: RetryBudget | None = DEFAULT_RETRY_BUDGET,
        hedge: HedgePolicy | None = None,
        backoff: ConnectionBackoff | None = None,
        ejection: EjectionPolicy | None = None,
        config: H2Config | None = None,
        headers: HeadersIn | None = None,
        resolve_interval: float = 30.0,
        ping_budget: PingBudget | None = DEFAULT_PING_BUDGET,
        tcp_keepalive: float | None = 30.0,
        health_check: HealthCheck | None = None,
        backup_endpoints: Sequence[str] | None = None,
        subset_size: int | None = None,
        subset_client: tuple[int, int] | None = None,
        balancer: Literal["p2c", "round_robin", "least_request"] = "p2c",
        on_event: Listener | None = None,
    ) -> None:
        parts = parse_target(target)
        self._timeouts = Timeouts.coerce(timeout)
        settings = maintenance_settings(
            parts,
            ssl=ssl,
            functional_timeout=functional_timeout,
            connect_timeout=connect_timeout,
            timeouts=self._timeouts,
            http1=http1,
            min_connections=min_connections,
            max_connections=max_connections,
            http1_max_connections=http1_max_connections,
            max_streams_per_connection=max_streams_per_connection,
            backoff=backoff,
            ejection=ejection,
            config=config,
            resolve_interval=resolve_interval,
            ping_budget=ping_budget,
            tcp_keepalive=tcp_keepalive,
            subset_size=subset_size,
            subset_client=subset_client,
            balancer=balancer,
        )
        if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
            raise TypeError(
                f"retry_budget must be a RetryBudget or None, not {type(retry_budget).__name__}"
            )
        self._hedge = _checked_hedge(hedge)
        check_count("max_pending", max_pending, 0)
        # What responses' URLs start with (never the userinfo: URLs show in messages).
        self._origin = f"{parts.scheme}://{parts.authority}"
        self._extra_headers = checked_headers(headers) if headers is not None else []
        if parts.authorization is not None and not any(
            name == b"authorization" for name, _ in self._extra_headers
        ):
            self._extra_headers += checked_headers([("authorization", parts.authorization)])
        self._base_path = parts.base_path
        if endpoints is not None and not endpoints:
            raise ValueError("endpoints must not be empty")
        backups = backup_addresses(backup_endpoints, endpoints)
        self._wait_for_ready = wait_for_ready
        self._maintenance = Maintenance(
            settings,
            host=parts.host,
            port=parts.port,
            endpoints=list(endpoints) if endpoints is not None else None,
            backups=backups,
            functional_timeout=settings.channel.functional_timeout,
            max_pending=max_pending,
            wait_for_ready=wait_for_ready,
        )
        self._scheduler = self._maintenance.scheduler
        self._events = self._maintenance.events
        if on_event is not None:
            self._events.add(on_event)
        self._attempts = Attempts(
            self._scheduler,
            retry or RetryPolicy(),
            self._maintenance.answered,
            retry_budget,
            self._events,
        )
        self._deadlines = DeadlineTimers()
        self._closing = False
        self._checker: HealthChecker | None = None
        if health_check is not None:
            self._checker = HealthChecker(
                health_check,
                lambda: self._maintenance.endpoints,
                self._extra_headers,
                settings.ejection,
                self._rotation_changed,
                self._origin,
            )
            # Proof of life of an endpoint back from failing: its check passing.
            self._maintenance.recovered = self._checker.probation

    # ------------------------------------------------------------------
    # Lifecycle

    async def __aenter__(self) -> Pool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Resolve the endpoints (if needed) and start opening connections.

        Optional: the first request does the same.
        """
        self._check_open()
        await self._maintenance.ensure_endpoints(None)
        self._maintenance.maintain()
        if self._checker is not None:
            self._checker.start()

    def _rotation_changed(self) -> None:
        self._scheduler.changed()
        self._maintenance.maintain()
        self._scheduler.assign()

    async def aclose(self, timeout: float | None = None) -> None:
        """Close gracefully: no new requests; requests in flight finish; then close.

        Args:
            timeout: Bound, in seconds, on waiting for requests in flight;
                after it their connections are closed under them.
        """
        if self._closing:
            return
        self._closing = True
        self._maintenance.closing = True
        self._scheduler.close(PoolClosed("the pool is closed"))
        if self._checker is not None:
            await self._checker.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._attempts.wait_idle()
        await self._maintenance.aclose()

    # ------------------------------------------------------------------
    # Requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        content: Content | None = None,
        json: Any = None,
        timeout: Timeouts | float | object | None = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: HedgePolicy | object | None = DEFAULT,
    ) -> Response:
        """Send a request and read its whole response.

        Everything is checked before anything is sent, and before any
        connection is touched: a wrong argument raises at once.

        Args:
            method: The HTTP method (a token; sent upper case).
            path: The path, joined to the target's path as httpx's
                ``base_url`` does (``"/users"`` and ``"users"`` both go under
                ``/api/v1/`` for a target ``http://svc/api/v1``); characters
                a path may not hold (a space, non-ASCII) are percent-encoded.
            params: Query parameters added after any query in ``path``: a
                mapping (a list or tuple value repeats the name), pairs, or a
                str; values str, int, float, bool (``true``/``false``) or None.
            headers: Extra header fields; one with the name of a field of the
                pool's ``headers`` replaces it. Names are sent lower case.
            content: The body: bytes (or str, sent as UTF-8), or an async
                iterable of bytes.
            json: A body sent as compact UTF-8 JSON with ``content-type:
                application/json`` (unless ``headers`` give one); not with
                ``content``.
            timeout: Bound on the whole request, retries and backoff
                included, in seconds (None: no bound), or ``Timeouts`` for
                each phase too; defaults to the pool's ``timeout``.
            wait_for_ready: When every endpoint is failing, wait for one
                (True) or fail at once (False); None: the pool's
                ``wait_for_ready``.
            hedge: Hedge this request as this policy says: given here, the
                caller says the request is safe to send more than once,
                whatever its method (a body in memory is needed). None: not
                hedged. Defaults to the pool's ``hedge`` (idempotent methods only).

        Raises:
            RequestTimeout: The total timeout ran out (also a ``TimeoutError``,
                as are ``ConnectTimeout``, ``ReadTimeout``, ``WriteTimeout``
                and ``PoolTimeout`` for the phases).
            H2PoolError: The request failed and could not be retried; the
                message names the request, the endpoint, and whether the
                server may have processed it.
            TypeError: An argument of a wrong type; the message names it.
            ValueError: A timeout out of range, a path that is a URL, or
                ``json`` that JSON cannot hold.
            LocalProtocolError: A method or header field HTTP forbids (also
                a ``ValueError``; nothing sent).
        """
        return await self._send(
            method,
            path,
            params,
            headers,
            content,
            json,
            timeout,
            wait_for_ready,
            hedge,
            read_body=True,
        )

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: HeadersIn | None = None,
        content: Content | None = None,
        json: Any = None,
        timeout: Timeouts | float | object | None = DEFAULT,
        wait_for_ready: bool | None = None,
        hedge: HedgePolicy | object | None = DEFAULT,
        _observer: Observer | None = None,
    ) -> AsyncIterator[Response]:
        """Send a request; the response body is read as the caller iterates.

        Use as ``async with pool.stream("GET", "/") as response:``. Retries
        happen until the response headers arrive, never after. On exit an
        unread body is abandoned (RST_STREAM CANCEL). Arguments are those of
        :meth:`request`; ``timeout`` also bounds reading the body.
        ``_observer`` is for h2pool's adapters (their ``trace`` extension).
        """
        response = await self._send(
            method,
            path,
            params,
            headers,
            content,
            json,
            timeout,
            wait_for_ready,
            hedge,
            read_body=False,
            observer=_observer,
        )
        try:
            yield response
        finally:
            await response.aclose()

    def add_listener(self, listener: Listener) -> None:
        """Tell ``listener`` of every event of the pool (``h2pool.events``) from now on.

        It is called synchronously from the pool's own code and must return
        quickly: work that waits is for it to schedule (``loop.create_task``,
        a queue). One that raises is logged and removed.
        """
        self._events.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop telling ``listener`` of events (nothing if it was not listening)."""
        self._events.remove(listener)

    def _unavailable(self, address: str) -> None:
        """For h2pool.rpc: a call to ``address`` ended UNAVAILABLE in an HTTP 200 answer.

        It counts as a gateway error of that endpoint (outlier detection).
        """
        self._maintenance.rpc_unavailable(address)

    def stats(self) -> PoolStats:
        """A snapshot of every endpoint and of the requests in the pool."""
        now = asyncio.get_running_loop().time()
        spending = self._attempts.spending
        return PoolStats(
            endpoints=tuple(ep.stats(now) for ep in self._maintenance.endpoints),
            active=self._attempts.active,
            pending=self._scheduler.pending,
            closed=self._closing,
            retries=self._attempts.retries,
            hedges=self._attempts.hedges,
            budget_refusals=0 if spending is None else spending.refused,
        )

    @property
    def _retry_spending(self) -> Spending | None:
        """The retry budget's counts, which the rpc channel's retries spend too."""
        return self._attempts.spending

    # ------------------------------------------------------------------
    # Building and bounding requests

    async def _send(
        self,
        method: str,
        path: str,
        params: QueryParams | None,
        headers: HeadersIn | None,
        content: Content | None,
        json: object,
        timeout: object,
        wait_for_ready: bool | None,
        hedge: object,
        *,
        read_body: bool,
        observer: Observer | None = None,
    ) -> Response:
        """Check and build the request, then send it within its total deadline.

        With ``read_body`` (``request()``) the deadline covers the whole
        body; otherwise (``stream()``) it covers the attempts here, and the
        body's reads carry it themselves.
        """
        timeouts = self._timeouts
        if timeout is not DEFAULT:
            timeouts = Timeouts.coerce(timeout, timeouts)
        check_flag("wait_for_ready", wait_for_ready, optional=True)
        request = build_request(
            method,
            path,
            self._extra_headers,
            headers,
            content,
            timeouts,
            params=params,
            json=json,
            base_path=self._base_path,
        )
        request.wait_for_ready = wait_for_ready
        request.observer = observer
        hedging = None
        if hedge is not DEFAULT or self._hedge is not None:
            hedging = hedge_for(
                request.method,
                streamed=request.upload is not None,
                given=None if hedge is DEFAULT else _checked_hedge(hedge),
                pool=self._hedge if hedge is DEFAULT else None,
            )
        started = time.perf_counter()  # Response.elapsed counts from here
        total = timeouts.total
        caller = caller_deadline()  # h2pool.deadline(): the hot path's one context read
        by_caller = passed = False
        if caller is None:
            deadline = None if total is None else asyncio.get_running_loop().time() + total
        else:
            seconds, by_caller = bound(total, remaining(caller))
            passed = seconds <= 0
            deadline = asyncio.get_running_loop().time() + seconds
        # asyncio's scope used directly, its timer shared: this is the hot path.
        scope = asyncio.timeout(None)
        try:
            self._check_open()
            if passed:  # nothing sent, no connection touched
                raise RequestTimeout(
                    "the deadline (h2pool.deadline) had passed before it started",
                    never_processed=True,
                )
            if self._checker is not None:
                self._checker.start()  # once: a pool used without start()
            async with scope:
                watched = None if deadline is None else self._deadlines.watch(deadline, scope)
                try:
                    if self._maintenance.unresolved:
                        ready = self._wait_for_ready if wait_for_ready is None else wait_for_ready
                        await self._maintenance.ensure_endpoints(ready, observer)
                    response = await self._attempts.send(
                        request, deadline, read_body=read_body, hedge=hedging
                    )
                    if self._events.listening:
                        self._events.emit(request_finished(request, response.status_code, started))
                    return response._sent(request, self._origin, started, by_caller)
                finally:
                    if watched is not None:
                        watched.discard(scope)
        except (H2PoolError, TimeoutError) as exc:
            timed_out = self._timed_out(request, by_caller) if scope.expired() else None
            if self._events.listening:
                self._events.emit(request_finished(request, timed_out or exc, started))
            if timed_out is not None:
                raise timed_out from None
            if isinstance(exc, H2PoolError):
                raise self._failed(request, exc) from exc
            raise

    def _describe(self, request: OutgoingRequest) -> Request:
        """The request as errors and responses show it: its method and absolute URL."""
        return request.described(self._origin)

    def _failed(self, request: OutgoingRequest, error: H2PoolError) -> H2PoolError:
        """The error that ends ``request``: naming it, its endpoint, and what the server did."""
        return error.for_request(self._describe(request), error.endpoint)

    def _timed_out(self, request: OutgoingRequest, by_caller: bool) -> RequestTimeout:
        """The error of a request whose deadline passed, saying what every endpoint did.

        ``by_caller``: the caller's deadline (``h2pool.deadline``), not the
        request's own total timeout, ended it.
        """
        error = RequestTimeout(self._timeout_message(request, by_caller))
        error.response_headers = request.response_headers
        endpoint = None if request.last_error is None else request.last_error.endpoint
        return error.for_request(self._describe(request), endpoint)

    def _timeout_message(self, request: OutgoingRequest, by_caller: bool) -> str:
        now = asyncio.get_running_loop().time()
        states = ", ".join(
            f"{ep.address} {ep.state(now).value}"
            + (f" (last error: {ep.last_error})" if ep.last_error and not ep.ready() else "")
            for ep in self._maintenance.endpoints
        )
        if not states:
            resolve_error = self._maintenance.resolve_error
            states = "none resolved" + (f" ({resolve_error})" if resolve_error else "")
        ended = PASSED if by_caller else "timed out"
        message = f"{ended}; endpoints: {states}"
        last_error = request.last_error
        if last_error is not None:
            message += f"; last error: {type(last_error).__name__}: {last_error.reason}"
        return message

    def _check_open(self) -> None:
        if self._closing:
            raise PoolClosed("the pool is closed")


def _checked_hedge(hedge: object) -> HedgePolicy | None:
    if hedge is not None and not isinstance(hedge, HedgePolicy):
        raise TypeError(f"hedge must be a HedgePolicy or None, not {type(hedge).__name__}")
    return hedge
