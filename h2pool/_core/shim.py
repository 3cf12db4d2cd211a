"""The asyncio shim: where a :class:`~h2pool._core.session.Session` meets asyncio.

:class:`ProtocolShim` is an ``asyncio.Protocol`` that does only what needs
asyncio: it feeds received bytes to the Session with the loop's clock,
applies the :class:`~h2pool._core.states.Wakeups` the Session returns
(futures to resolve, listener events, closing the transport), arms the one
health timer (decided by :func:`~h2pool._core.health.check_health`), and
writes output coalesced, once per pass of the event loop. Every protocol
decision is the Session's; nothing runs a task per stream. The stream API
on top is :class:`~h2pool._core.protocol.H2Protocol`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .._exceptions import ConnectError, ConnectionDead, ConnectionLost, H2ConnectionError
from .config import H2Config, check_duration
from .health import HealthAction, PingBudget, check_health, ping_allowed_at
from .session import Session
from .states import CloseAction, ConnectionEvent
from .streams import Stream

if TYPE_CHECKING:
    from .protocol import H2Protocol

__all__ = ["ConnectedCallback", "Listener", "ProtocolShim"]

logger = logging.getLogger("h2pool.core")

#: What ``start_server`` calls with each new server-side protocol.
ConnectedCallback = Callable[["H2Protocol"], Any]

#: A function told of every :class:`ConnectionEvent` of a connection.
Listener = Callable[["H2Protocol", ConnectionEvent], None]

# Used by wait_functional() and graceful shutdown when no functional_timeout
# was configured: a PING must still be answered in bounded time.
_DEFAULT_PING_TIMEOUT = 10.0

_Waiters = dict[int, asyncio.Future[None]]


class ProtocolShim(asyncio.Protocol):
    """Transport glue, wake-ups, health timer and coalesced writes of one connection.

    See :class:`~h2pool._core.protocol.H2Protocol` for the arguments.
    """

    def __init__(
        self,
        *,
        client_side: bool,
        functional_timeout: float | None = None,
        concurrency: int = 100,
        config: H2Config | None = None,
        ping_interval: float | None = None,
        ping_budget: PingBudget | None = None,
        authority: str | None = None,
        on_connected: ConnectedCallback | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        check_duration("functional_timeout", functional_timeout)
        check_duration("ping_interval", ping_interval)
        self._loop = asyncio.get_running_loop()
        self._client_side = client_side
        self._functional_timeout = functional_timeout
        self._ping_timeout = functional_timeout or _DEFAULT_PING_TIMEOUT
        self._session = Session(
            client_side=client_side,
            config=config or H2Config(),
            concurrency=concurrency,
            now=self._loop.time(),
            ping_interval=ping_interval or functional_timeout or _DEFAULT_PING_TIMEOUT,
            ping_budget=ping_budget,
            authority=authority,
        )
        self._transport: asyncio.Transport | None = None
        self._on_connected = on_connected
        self._handler: asyncio.Future[Any] | None = None  # referenced so it is not collected
        self._listener: Listener | None = None
        # Waiters, woken as the Session's Wakeups say.
        self._recv_waiters: _Waiters = {}
        self._send_waiters: _Waiters = {}
        self._request_waiter: asyncio.Future[None] | None = None
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._ping_waiters: list[asyncio.Future[float]] = []
        self._health_timer: asyncio.TimerHandle | None = None
        self._writable = True
        self._flush_handle: asyncio.Handle | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._done.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the transport is closed."""
        await asyncio.shield(self._closed)

    def set_listener(self, listener: Listener | None) -> None:
        """Call ``listener(self, event)`` on every :class:`ConnectionEvent` from now on.

        The listener runs synchronously inside h2pool's event handling: it
        must not block or raise. The pool uses it to wake requests waiting
        for capacity and to notice failures without polling.
        """
        self._listener = listener

    # ------------------------------------------------------------------
    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the connection preface; on the server side, hand the protocol over."""
        # A cast, not isinstance(): uvloop's transports have asyncio.Transport's
        # methods without deriving from it.
        transport = cast("asyncio.Transport", transport)
        self._transport = transport
        session = self._session
        transport.set_write_buffer_limits(high=session.config.write_buffer_high)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            session.use_tls()
            alpn = ssl_object.selected_alpn_protocol()
            if alpn not in (None, "h2"):
                session.fail(ConnectError(f"the peer chose {alpn!r} with ALPN, not 'h2'"))
                transport.abort()
                return
        session.last_received = self._loop.time()
        conn = session.conn
        conn.initiate_connection()
        extra_window = session.config.connection_window - 65_535
        if extra_window > 0:
            conn.increment_flow_control_window(extra_window)
        self._flush()
        if self._on_connected is not None:
            self._start_handler(self._on_connected)

    def _start_handler(self, callback: ConnectedCallback) -> None:
        result = callback(cast("H2Protocol", self))  # the shim is only ever an H2Protocol
        if inspect.isawaitable(result):
            handler = asyncio.ensure_future(result)
            handler.add_done_callback(self._handler_done)
            self._handler = handler

    @staticmethod
    def _handler_done(handler: asyncio.Future[Any]) -> None:
        # A handler that stops because its connection ended did nothing wrong.
        if handler.cancelled():
            return
        exc = handler.exception()
        if isinstance(exc, H2ConnectionError):
            logger.debug("connection handler ended: %s", exc)
        elif exc is not None:
            logger.error("connection handler failed", exc_info=exc)

    def data_received(self, data: bytes) -> None:
        """Feed received bytes to the Session and apply what it says."""
        session = self._session
        pinged = session.pings_since_data
        session.receive(data, self._loop.time())
        self._pump()
        self._apply()
        self._flush()
        timer = self._health_timer
        if pinged and not session.pings_since_data and timer is not None:
            # HEADERS or DATA renewed the ping budget: a timer that waited
            # for the budget must not wait any longer.
            timer.cancel()
            self._health_timer = None
        if self._health_timer is None:
            self._watch()

    def eof_received(self) -> bool | None:
        """The peer closed its side: nothing more will arrive."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail everything still pending; the connection is gone."""
        self._transport = None
        if self._session.error is None:
            reason = f": {exc}" if exc is not None else ""
            self._session.fail(ConnectionLost(f"connection lost{reason}"))
            self._apply()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        """The transport buffer is full: stop sending DATA until it drains."""
        self._writable = False

    def resume_writing(self) -> None:
        """The transport buffer drained: resume sending DATA."""
        self._writable = True
        self._pump()
        self._after()

    # ------------------------------------------------------------------
    # Applying the Session's answers

    def _after(self) -> None:
        """After a call into the Session: apply its wake-ups, flush soon."""
        self._apply()
        self._schedule_flush()

    def _apply(self) -> None:
        wakeups = self._session.wakeups
        if wakeups.receivers:
            _wake(self._recv_waiters, wakeups.receivers)
        if wakeups.senders:
            _wake(self._send_waiters, wakeups.senders)
        if wakeups.requests:
            wakeups.requests = False
            waiter = self._request_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if wakeups.pings:
            wakeups.pings = False
            self._settle_pings()
        if wakeups.events:
            # Each kind of event is told once per batch, in order: a listener
            # re-decides once, not once per stream that closed.
            events = dict.fromkeys(wakeups.events)
            wakeups.events.clear()
            self._wake_slot_waiters()
            for event in events:
                self._notify(event)
        if wakeups.close is not None:
            abort, wakeups.close = wakeups.close is CloseAction.ABORT, None
            self._close_transport(abort=abort)

    def _notify(self, event: ConnectionEvent) -> None:
        if event is ConnectionEvent.CLOSED and self._health_timer is not None:
            self._health_timer.cancel()
            self._health_timer = None
        listener = self._listener
        if listener is not None:
            try:
                listener(cast("H2Protocol", self), event)
            except Exception:  # a listener bug must not break the connection
                logger.exception("connection listener failed")

    def _settle_pings(self) -> None:
        session = self._session
        error, rtt = session.error, session.rtt
        if error is None and (session.ping_sent_at is not None or rtt is None):
            return
        waiters, self._ping_waiters = self._ping_waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if error is not None:
                waiter.set_exception(error)
            elif rtt is not None:
                waiter.set_result(rtt)

    def _pump(self) -> None:
        session = self._session
        while self._writable and session.scheduler.ready and session.pump():
            self._flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._transport is not None:
            self._flush_handle = self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        data = self._session.take_output()
        transport = self._transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def _close_transport(self, *, abort: bool = False) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._flush()
        if abort:
            transport.abort()
        else:
            transport.close()

    # ------------------------------------------------------------------
    # Waiting

    async def _wait(self, waiters: _Waiters, stream_id: int) -> None:
        waiter = waiters.get(stream_id)
        if waiter is None:
            waiter = waiters[stream_id] = self._loop.create_future()
        try:
            await waiter
        finally:
            if waiters.get(stream_id) is waiter:
                del waiters[stream_id]

    async def _wait_sent(self, stream: Stream) -> None:
        while stream.outbound:
            if stream.error is not None:
                raise stream.error
            await self._wait(self._send_waiters, stream.id)
        if stream.error is not None:
            raise stream.error

    async def _wait_for_slot(self) -> None:
        session = self._session
        while True:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._slot_waiters:
                    self._slot_waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake_slot_waiters()  # pass the free slot on
                raise
            session.check_new_stream()
            if session.free_slots > 0:
                return

    def _wake_slot_waiters(self) -> None:
        waiters = self._slot_waiters
        session = self._session
        # Not accepting: wake them all, each re-checks and raises never-processed.
        free = session.free_slots if session.accepting_streams else len(waiters)
        while free > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    async def _ping_round_trip(self, *, send: bool) -> float:
        # A new PING replaces an outstanding one: its ACK proves the peer has
        # read everything sent before it (used by graceful shutdown).
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._ping_waiters.append(waiter)
        try:
            if send:
                self._session.send_ping(self._loop.time())
                self._schedule_flush()
            self._watch()
            return await waiter
        finally:
            if waiter in self._ping_waiters:
                self._ping_waiters.remove(waiter)

    # ------------------------------------------------------------------
    # Health (tickless functional timeout, decided by health.check_health)

    def _ping_allowed_at(self) -> float:
        session = self._session
        return ping_allowed_at(
            session.ping_budget, session.pings_since_data, session.last_ping_sent
        )

    def _needs_watch(self) -> bool:
        session = self._session
        if self._ping_waiters or session.ping_sent_at is not None:
            return True
        return self._functional_timeout is not None and session.open_streams > 0

    def _watch(self) -> None:
        """Someone waits on the connection: make sure its health is being checked."""
        if self._health_timer is None and self._session.error is None and self._needs_watch():
            self._check_health()

    def _check_health(self) -> None:
        self._health_timer = None
        session = self._session
        if session.error is not None or not self._needs_watch():
            return  # idle and nobody waits: nothing runs, nothing is sent
        now = self._loop.time()
        action, deadline = check_health(
            now,
            session.last_received,
            session.ping_sent_at,
            session.ping_interval,
            self._ping_timeout,
            self._ping_allowed_at(),
        )
        if action is HealthAction.DEAD:
            silent = now - session.last_received
            session.fail(
                ConnectionDead(
                    f"connection dead: PING unanswered and nothing received for {silent:.3f}s"
                    f" (functional timeout {self._ping_timeout}s)"
                )
            )
            self._apply()
            self._close_transport(abort=True)
            return
        if action is HealthAction.PING:
            session.send_ping(now)
            self._schedule_flush()
        self._health_timer = self._loop.call_at(deadline, self._check_health)


def _wake(waiters: _Waiters, stream_ids: list[int]) -> None:
    """Resolve the waiters of ``stream_ids`` (each re-checks its stream), and forget the ids."""
    for stream_id in stream_ids:
        waiter = waiters.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
    stream_ids.clear()
