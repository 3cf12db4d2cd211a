"""Pool: multiplexed HTTP/2 connections to the replicas of one service.

Endpoints that only speak HTTP/1.1 (chosen by ALPN, or by the ``http1``
option) are served through httpcore behind the same API and rules.

The async code here only waits and does I/O; what to do is decided by the
pure functions of :mod:`routing` (which connection takes a stream) and
:mod:`policies` (retries, backoff, ejection). Connections tell the pool what
changes on them through their listener, so nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import tenacity

from .._core.config import H2Config
from .._core.headers import HeadersIn, encode_headers
from .._core.protocol import ConnectionEvent
from .._core.tls import client_ssl_context
from .._exceptions import (
    CertificateVerifyError,
    ConnectTimeout,
    H2PoolError,
    PoolClosed,
    PoolOverloaded,
    PoolTimeout,
    RequestTimeout,
)
from .channel import Channel, OutgoingRequest, Upload, bounded
from .connect import ChannelSettings, open_channel
from .endpoint import Endpoint, EndpointStats
from .policies import (
    ConnectionBackoff,
    EjectionPolicy,
    RetryKind,
    RetryPolicy,
    classify_failure,
    is_endpoint_failure,
    may_eject,
    parse_retry_after,
    retry_delay,
)
from .response import Body, Response, deadline_scope
from .routing import route
from .timeouts import Timeouts

__all__ = ["Content", "Pool", "PoolStats"]

logger = logging.getLogger("h2pool.pool")

#: A request body: bytes, or an async iterable of bytes for a streamed upload.
Content = bytes | bytearray | memoryview | str | AsyncIterable[bytes]

# Never-processed failures are retried at once on another connection without
# counting as attempts; this bounds a pathological peer that refuses forever.
_MAX_TRANSPARENT_RETRIES = 16
_DEFAULT = object()  # "use the pool's timeout"


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool, for people and metrics exporters.

    Attributes:
        endpoints: One snapshot per endpoint.
        active: Requests in flight (sent, or holding an unread response).
        pending: Requests waiting for a connection.
        closed: Whether the pool is closed or closing.
    """

    endpoints: tuple[EndpointStats, ...]
    active: int
    pending: int
    closed: bool


class _Retry(Exception):
    """An attempt whose outcome the retry policy allows to try again, after ``delay``."""

    def __init__(self, delay: float, error: H2PoolError | None = None) -> None:
        super().__init__(str(error) if error else "retryable status")
        self.delay = delay


class Pool:
    """A pool of multiplexed HTTP/2 connections to the replicas of one service.

    Args:
        target: Base URL, ``http://authority`` or ``https://authority``: it
            gives ``:scheme``, ``:authority`` and the TLS server name.
        endpoints: ``"host:port"`` of each replica to connect to. Without
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
        http1: Speak HTTP/1.1 (through httpcore) to all endpoints (True) or
            to those listed, unless TLS's ALPN chooses HTTP/2. Over TLS,
            ALPN chooses HTTP/1.1 by itself for servers without HTTP/2.
        wait_for_ready: When every endpoint is failing, wait for one to come
            back until the timeout runs out (True, the default), or fail at
            once with the last connection error (False).
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
        backoff: Delays between connection attempts to a failing endpoint.
        ejection: When failing endpoints are taken out of rotation.
        config: HTTP/2 settings of each connection.
        headers: Header fields added to every request.
        resolve_interval: Least seconds between two resolutions of the
            target's host (when ``endpoints`` is not given).
    """

    def __init__(
        self,
        target: str,
        *,
        endpoints: Sequence[str] | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        functional_timeout: float = 1.0,
        timeout: Timeouts | float | None = 30.0,
        http1: bool | Collection[str] = False,
        wait_for_ready: bool = True,
        min_connections: int = 1,
        max_connections: int = 4,
        http1_max_connections: int = 10,
        max_streams_per_connection: int = 100,
        connect_timeout: float = 5.0,
        max_pending: int = 1000,
        retry: RetryPolicy | None = None,
        backoff: ConnectionBackoff | None = None,
        ejection: EjectionPolicy | None = None,
        config: H2Config | None = None,
        headers: HeadersIn | None = None,
        resolve_interval: float = 30.0,
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"target must be http://host[:port] or https://host[:port]: {target!r}"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"target must have no path, query or fragment: {target!r}")
        if functional_timeout <= 0:
            raise ValueError("functional_timeout must be positive")
        if not 0 <= min_connections <= max_connections or max_connections < 1:
            raise ValueError(
                "need 0 <= min_connections <= max_connections and max_connections >= 1"
            )
        if max_streams_per_connection < 1 or max_pending < 0:
            raise ValueError("max_streams_per_connection must be >= 1 and max_pending >= 0")
        self._tls = parts.scheme == "https"
        if not self._tls and ssl not in (None, False):
            raise ValueError("ssl is only for https targets")
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        context: ssl_module.SSLContext | None = None
        if self._tls:
            if isinstance(ssl, ssl_module.SSLContext):
                context = ssl
                # As httpcore does: the context offers what the pool speaks.
                context.set_alpn_protocols(["h2", "http/1.1"])
            else:
                context = client_ssl_context(verify=ssl is not False, alpn=("h2", "http/1.1"))
        self._settings = ChannelSettings(
            scheme=parts.scheme,
            authority=parts.netloc,
            server_hostname=self._host,
            ssl=context,
            functional_timeout=functional_timeout,
            max_streams=max_streams_per_connection,
            config=config,
        )
        self._extra_headers = encode_headers(headers) if headers is not None else []
        self._functional_timeout = functional_timeout
        self._timeouts = Timeouts.coerce(timeout)
        self._http1 = http1
        self._wait_for_ready = wait_for_ready
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._http1_max_connections = http1_max_connections
        # A Timeouts(connect=...) given as the pool's timeout bounds every attempt.
        self._connect_timeout = self._timeouts.connect or connect_timeout
        self._max_pending = max_pending
        self._retry = retry or RetryPolicy()
        self._backoff = backoff or ConnectionBackoff()
        self._ejection = ejection or EjectionPolicy()
        self._resolve_interval = resolve_interval
        self._resolve = endpoints is None
        self._endpoints = [self._new_endpoint(address) for address in endpoints or ()]
        if endpoints is not None and not self._endpoints:
            raise ValueError("endpoints must not be empty")
        self._resolved_at: float | None = None
        self._resolving: asyncio.Task[None] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turns = itertools.count()
        self._active = 0
        self._idle: asyncio.Event | None = None
        self._maintenance: asyncio.TimerHandle | None = None
        self._closing = False

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
        await self._ensure_endpoints()
        self._maintain(asyncio.get_running_loop().time())

    async def aclose(self, timeout: float | None = None) -> None:
        """Close gracefully: no new requests; requests in flight finish; then close.

        Args:
            timeout: Bound, in seconds, on waiting for requests in flight;
                after it their connections are closed under them.
        """
        if self._closing:
            return
        self._closing = True
        if self._maintenance is not None:
            self._maintenance.cancel()
        self._wake_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._active:
                    self._idle = asyncio.Event()
                    await self._idle.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        connections = [conn for ep in self._endpoints for conn in ep.connections]
        for endpoint in self._endpoints:
            endpoint.closed = True
        await asyncio.gather(*(conn.shutdown(timeout=1.0) for conn in connections))

    # ------------------------------------------------------------------
    # Requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: HeadersIn | None = None,
        content: Content | None = None,
        timeout: Timeouts | float | object | None = _DEFAULT,
    ) -> Response:
        """Send a request and read its whole response.

        Args:
            method: The HTTP method.
            path: The request target, starting with ``/``.
            headers: Extra header fields.
            content: The body: bytes (or str, sent as UTF-8), or an async
                iterable of bytes.
            timeout: Bound on the whole request, retries and backoff
                included, in seconds (None: no bound), or ``Timeouts`` for
                each phase too; defaults to the pool's ``timeout``.

        Raises:
            RequestTimeout: The total timeout ran out (also a ``TimeoutError``,
                as are ``ConnectTimeout``, ``ReadTimeout``, ``WriteTimeout``
                and ``PoolTimeout`` for the phases).
            H2PoolError: The request failed and could not be retried.
        """
        request = self._build(method, path, headers, content, timeout)
        deadline = self._deadline(request)
        async with self._request_scope(request, deadline):
            return await self._send(request, deadline, read_body=True)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        headers: HeadersIn | None = None,
        content: Content | None = None,
        timeout: Timeouts | float | object | None = _DEFAULT,
    ) -> AsyncIterator[Response]:
        """Send a request; the response body is read as the caller iterates.

        Use as ``async with pool.stream("GET", "/") as response:``. Retries
        happen until the response headers arrive, never after. On exit an
        unread body is abandoned (RST_STREAM CANCEL). Arguments are those of
        :meth:`request`; ``timeout`` also bounds reading the body.
        """
        request = self._build(method, path, headers, content, timeout)
        deadline = self._deadline(request)
        async with self._request_scope(request, deadline):
            response = await self._send(request, deadline, read_body=False)
        try:
            yield response
        finally:
            await response.aclose()

    def stats(self) -> PoolStats:
        """A snapshot of every endpoint and of the requests in the pool."""
        now = asyncio.get_running_loop().time()
        return PoolStats(
            endpoints=tuple(ep.stats(now) for ep in self._endpoints),
            active=self._active,
            pending=len(self._waiters),
            closed=self._closing,
        )

    # ------------------------------------------------------------------
    # Building and bounding requests

    def _build(
        self,
        method: str,
        path: str,
        headers: HeadersIn | None,
        content: Content | None,
        timeout: Timeouts | float | object | None,
    ) -> OutgoingRequest:
        method = method.upper()
        if not path.startswith("/") and not (path == "*" and method == "OPTIONS"):
            raise ValueError(f"path must start with '/': {path!r}")
        body: bytes | None = None
        upload: Upload | None = None
        fields = list(self._extra_headers)
        if headers is not None:
            fields += encode_headers(headers)
        if isinstance(content, str):
            content = content.encode()
        if isinstance(content, bytes | bytearray | memoryview):
            body = bytes(content)
            if not any(name == b"content-length" for name, _ in fields):
                fields.append((b"content-length", str(len(body)).encode()))
        elif content is not None:
            upload = Upload(content)
        if timeout is _DEFAULT:
            timeouts = self._timeouts
        else:
            assert timeout is None or isinstance(timeout, Timeouts | int | float)
            timeouts = Timeouts.coerce(timeout, self._timeouts)
        return OutgoingRequest(method, path, fields, body, upload, timeouts)

    def _deadline(self, request: OutgoingRequest) -> float | None:
        total = request.timeouts.total
        return None if total is None else asyncio.get_running_loop().time() + total

    @contextlib.asynccontextmanager
    async def _request_scope(
        self, request: OutgoingRequest, deadline: float | None
    ) -> AsyncIterator[None]:
        """Bound a request by its deadline; say what was going on when it ran out."""
        if deadline is None:
            yield
            return
        try:
            async with deadline_scope(deadline, request.target):
                yield
        except RequestTimeout:
            raise RequestTimeout(self._timeout_message(request)) from None

    def _timeout_message(self, request: OutgoingRequest) -> str:
        now = asyncio.get_running_loop().time()
        states = ", ".join(
            f"{ep.address} {ep.state(now).value}"
            + (f" (last error: {ep.last_error})" if ep.last_error and not ep.live() else "")
            for ep in self._endpoints
        )
        message = f"{request.target}: timed out; endpoints: {states or 'none resolved'}"
        if request.last_error is not None:
            message += f"; last error: {request.last_error}"
        return message

    # ------------------------------------------------------------------
    # Retries

    async def _send(
        self, request: OutgoingRequest, deadline: float | None, *, read_body: bool
    ) -> Response:
        """Run attempts under the retry policy; tenacity drives retries and their sleeps.

        The first attempt runs directly (most requests need no other); if
        the policy allows a retry, its outcome opens tenacity's loop as
        attempt 1. The policy raises ``_Retry`` only when another attempt is
        allowed (it counts attempts and watches the deadline), so tenacity
        never has to stop on its own.
        """
        try:
            return await self._attempt(request, deadline, 1, read_body)
        except _Retry as retry:
            first: _Retry | None = retry
        retrying = tenacity.AsyncRetrying(
            wait=_planned_delay,
            retry=tenacity.retry_if_exception_type(_Retry),
            before_sleep=self._log_retry,
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:
                    outcome, first = first, None
                    raise outcome  # attempt 1, already run
                number = attempt.retry_state.attempt_number
                return await self._attempt(request, deadline, number, read_body)
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        retry = state.outcome.exception() if state.outcome else None
        logger.info(
            "retrying in %.3fs after attempt %d: %s",
            state.upcoming_sleep,
            state.attempt_number,
            retry,
        )

    def _next_delay(
        self, attempt: int, deadline: float | None, retry_after: float | None = None
    ) -> float | None:
        """Delay before another attempt, or None if the policy or the deadline forbids it."""
        delay = retry_delay(self._retry, attempt, retry_after)
        if delay is None:
            return None
        if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
            return None
        return delay

    async def _attempt(
        self, request: OutgoingRequest, deadline: float | None, attempt: int, read_body: bool
    ) -> Response:
        """One counted attempt, with its uncounted retries (see ``classify_failure``)."""
        for transparent in itertools.count():
            try:
                response = await self._exchange(request, deadline, read_body)
            except H2PoolError as exc:
                request.last_error = exc
                kind = classify_failure(exc, request.method, request.replayable, self._retry)
                if kind is RetryKind.COUNTED:
                    delay = self._next_delay(attempt, deadline)
                    if delay is not None:
                        raise _Retry(delay, exc) from exc
                elif kind is not RetryKind.NO and transparent < _MAX_TRANSPARENT_RETRIES:
                    logger.debug("%s: %s; retrying (%s)", request.target, exc, kind.value)
                    if kind is RetryKind.SPACED:  # keep cut streams from landing together
                        await asyncio.sleep(self._next_delay(1, deadline) or 0)
                    continue
                raise
            if (
                response.status_code in self._retry.statuses
                and request.method in self._retry.methods
            ):
                retry_after = parse_retry_after(response.header("retry-after"))
                delay = self._next_delay(attempt, deadline, retry_after)
                if delay is not None and request.replayable:
                    await response.aclose()
                    raise _Retry(delay)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------
    # One exchange on one connection

    async def _exchange(
        self, request: OutgoingRequest, deadline: float | None, read_body: bool
    ) -> Response:
        endpoint, channel = await self._acquire(request)
        self._active += 1
        try:
            reply = await channel.exchange(request)
        except BaseException:
            self._release()
            raise
        # request() reads the body inside its own deadline scope; stream()
        # hands the body over, so its reads carry the deadline themselves.
        body = Body(reply.body, deadline=None if read_body else deadline, on_close=self._release)
        response = Response(reply.status, reply.headers, endpoint.address, body, reply.http_version)
        if read_body:
            await response.aread()  # on failure the body releases itself
        return response

    def _release(self) -> None:
        self._active -= 1
        if not self._active and self._idle is not None:
            self._idle.set()

    # ------------------------------------------------------------------
    # Routing and waiting

    async def _acquire(self, request: OutgoingRequest) -> tuple[Endpoint, Channel]:
        """A connection with a free slot, opening one or waiting as routing decides.

        Raises:
            PoolTimeout: The request's pool timeout ran out (never sent).
            PoolOverloaded: ``max_pending`` requests are waiting already.
            ConnectError: Every endpoint is failing and ``wait_for_ready`` is
                off, or their certificates fail verification.
        """
        await self._ensure_endpoints()
        async with bounded(request.timeouts.pool, PoolTimeout, f"{request.target}: pool"):
            return await self._route(request)

    async def _route(self, request: OutgoingRequest) -> tuple[Endpoint, Channel]:
        loop = asyncio.get_running_loop()
        # Sending in parallel with a liveness PING is safe only if a dead
        # connection's failure can be retried.
        retry_safe = request.replayable and request.method in self._retry.methods
        connect_timeout = request.timeouts.connect
        connect_deadline: float | None = None
        while True:
            self._check_open()
            now = loop.time()
            self._maintain(now, connect_timeout)
            decision = route(
                self._endpoints,
                now,
                waiting=len(self._waiters) + 1,
                functional_timeout=self._functional_timeout,
                turn=next(self._turns),
            )
            if decision.connection is not None and decision.endpoint is not None:
                if decision.stale and not retry_safe:
                    with contextlib.suppress(H2PoolError):
                        await decision.connection.wait_functional()
                    continue  # proven alive (or dropped as dead): route again
                return decision.endpoint, decision.connection
            if decision.endpoint is not None:
                self._start_connect(decision.endpoint, connect_timeout)
                continue
            self._fail_fast(now)
            wake_at = decision.wake_at
            if connect_timeout is not None and not any(ep.live() for ep in self._endpoints):
                # Waiting for a connection to be established, maybe one that
                # was started before with a longer timeout: bound it too.
                connect_deadline = connect_deadline or now + connect_timeout
                if now >= connect_deadline:
                    raise ConnectTimeout(
                        f"{request.target}: no connection within {connect_timeout}s"
                    )
                wake_at = connect_deadline if wake_at is None else min(wake_at, connect_deadline)
            await self._wait(wake_at)

    def _fail_fast(self, now: float) -> None:
        """Raise the last connection error instead of waiting, where waiting is pointless.

        That is when every endpoint is failing (none ready or connecting) and
        either ``wait_for_ready`` is off or every failure is a certificate
        that failed verification (not transient).
        """
        in_play = [ep for ep in self._endpoints if not ep.closed]
        if not in_play or any(ep.live() or ep.connecting for ep in in_play):
            return
        errors = [ep.last_failure for ep in in_play]
        if any(error is None for error in errors):
            return
        certificates = all(isinstance(error, CertificateVerifyError) for error in errors)
        if not self._wait_for_ready or certificates:
            error = errors[-1]
            assert isinstance(error, H2PoolError)
            raise type(error)(str(error)) from error

    async def _wait(self, wake_at: float | None) -> None:
        if len(self._waiters) >= self._max_pending:
            raise PoolOverloaded(
                f"{len(self._waiters)} requests already wait for a connection (max_pending)"
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_at(wake_at, _wake, waiter) if wake_at is not None else None
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # pass the wake-up on
            raise
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            if _wake(self._waiters.popleft()):
                return

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            _wake(waiter)

    def _check_open(self) -> None:
        if self._closing:
            raise PoolClosed("the pool is closed")

    # ------------------------------------------------------------------
    # Connections

    def _maintain(self, now: float, connect_timeout: float | None = None) -> None:
        """Keep ``min_connections`` open per endpoint, now or when backoffs end.

        Attempts started while routing a request are bounded by its
        ``connect_timeout``.

        An endpoint that may not be connected to yet (backing off, ejected)
        is tried again by one timer, armed only while such an endpoint
        exists: a healthy pool runs no timer.
        """
        retry_at: float | None = None
        for endpoint in self._endpoints:
            while len(endpoint.live()) + endpoint.connecting < self._min_connections:
                if not endpoint.may_connect(now):
                    if not endpoint.closed:
                        at = max(endpoint.next_attempt_at, endpoint.ejected_until)
                        retry_at = at if retry_at is None else min(retry_at, at)
                    break
                self._start_connect(endpoint, connect_timeout)
        if retry_at is not None and not self._closing:
            timer = self._maintenance
            if timer is None or timer.when() > retry_at:
                if timer is not None:
                    timer.cancel()
                loop = asyncio.get_running_loop()
                self._maintenance = loop.call_at(retry_at, self._maintenance_due)

    def _maintenance_due(self) -> None:
        self._maintenance = None
        if not self._closing:
            self._maintain(asyncio.get_running_loop().time())

    def _start_connect(self, endpoint: Endpoint, timeout: float | None) -> None:
        endpoint.connecting += 1
        self._spawn(self._connect(endpoint, timeout or self._connect_timeout))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_endpoint(self, address: str) -> Endpoint:
        endpoint = Endpoint(address, max_connections=self._max_connections)
        http1 = self._http1
        endpoint.http1 = http1 if isinstance(http1, bool) else address in http1
        return endpoint

    async def _connect(self, endpoint: Endpoint, timeout: float) -> None:
        try:
            channel = await open_channel(
                endpoint.host,
                endpoint.port,
                self._settings,
                http1=endpoint.http1,
                connect_timeout=timeout,
                ping_interval=endpoint.ping_interval,
            )
        except H2PoolError as exc:
            logger.warning("connecting to %s failed: %s", endpoint.address, exc)
            self._endpoint_failed(endpoint, exc, self._backoff)
        else:
            if self._closing:
                channel.close()
            else:
                channel.set_listener(self._on_connection_event)
                endpoint.add(channel, self._http1_max_connections)
                logger.debug(
                    "connected to %s with %s (rtt %s)",
                    endpoint.address,
                    channel.http_version,
                    channel.rtt,
                )
        finally:
            endpoint.connecting -= 1
            if not self._closing:
                self._maintain(asyncio.get_running_loop().time())
            self._wake_all()

    def _on_connection_event(self, connection: Channel, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.SLOT_FREED:
            self._wake_one()
            return
        if event is ConnectionEvent.CLOSED:
            error = connection.error
            endpoint = next((ep for ep in self._endpoints if connection in ep.connections), None)
            if endpoint is not None and error is not None and is_endpoint_failure(error):
                logger.warning("connection to %s failed: %s", endpoint.address, error)
                self._endpoint_failed(endpoint, error, None)
        if event is not ConnectionEvent.LIMIT_CHANGED and not self._closing:
            self._maintain(asyncio.get_running_loop().time())  # replace it
        self._wake_all()  # draining, closed, or a new limit: routing may change

    def _endpoint_failed(
        self, endpoint: Endpoint, error: BaseException, backoff: ConnectionBackoff | None
    ) -> None:
        """Count a failure against an endpoint: maybe back off, eject, re-resolve."""
        now = asyncio.get_running_loop().time()
        endpoint.record_failure(now, error, backoff)
        if (
            endpoint.consecutive_failures >= self._ejection.consecutive_failures
            and not endpoint.ejected(now)
        ):
            in_play = [ep for ep in self._endpoints if not ep.closed]
            ejected = sum(ep.ejected(now) for ep in in_play)
            if may_eject(self._ejection, len(in_play), ejected):
                duration = endpoint.eject(now, self._ejection)
                logger.warning(
                    "ejected %s for %.1fs after repeated failures", endpoint.address, duration
                )
            self._schedule_resolve()

    # ------------------------------------------------------------------
    # Endpoints from DNS

    async def _ensure_endpoints(self) -> None:
        if self._resolve and self._resolved_at is None:
            if self._resolving is None:
                self._resolving = asyncio.ensure_future(self._resolve_endpoints())
            await asyncio.shield(self._resolving)

    def _schedule_resolve(self) -> None:
        if not self._resolve or self._resolved_at is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._resolved_at >= self._resolve_interval and (
            self._resolving is None or self._resolving.done()
        ):
            self._resolving = asyncio.ensure_future(self._resolve_endpoints())
            self._tasks.add(self._resolving)
            self._resolving.add_done_callback(self._tasks.discard)

    async def _resolve_endpoints(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except OSError as exc:
            logger.warning("resolving %s failed: %s", self._host, exc)
            infos = []
        finally:
            self._resolved_at = loop.time()
        addresses = []
        for family, *_, sockaddr in infos:
            host, port = str(sockaddr[0]), self._port
            address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            return  # keep what we had
        known = {ep.address: ep for ep in self._endpoints}
        self._endpoints = [
            known.get(address) or self._new_endpoint(address) for address in addresses
        ]
        for address, endpoint in known.items():
            if address not in addresses:
                endpoint.closed = True
                for connection in endpoint.connections:
                    self._spawn(connection.shutdown(timeout=self._functional_timeout * 2))
        self._wake_all()


def _planned_delay(state: tenacity.RetryCallState) -> float:
    """The delay the policy chose when it allowed the retry (carried by ``_Retry``)."""
    error = state.outcome.exception() if state.outcome is not None else None
    return error.delay if isinstance(error, _Retry) else 0.0


def _wake(waiter: asyncio.Future[None]) -> bool:
    if waiter.done():
        return False
    waiter.set_result(None)
    return True
