"""A fault-injection TCP proxy for tests, placed between a client and a real server.

The proxy listens on 127.0.0.1 and forwards each client connection to its own upstream
connection. Its mode can be switched at any time, and a switch applies at once to the
connections already open as well as to new ones:

* ``passthrough()``: forward bytes both ways (the default).
* ``blackhole()``: forward nothing, in either direction. Both sockets are still read, and what is
  read is dropped, so TCP stays open and no kernel buffer fills up: the client sees a silent
  peer, as behind a network partition. New connections are accepted and are silent too.
* ``reset()``: send RST on every open connection, and on each new one as soon as it is accepted.
* ``delay(seconds)``: forward every chunk ``seconds`` after it was read, both ways, in order.
  Chunks are pipelined: latency is added once per chunk, not accumulated across chunks.
* ``close_after(nbytes)``: forward as usual, but close a connection (both sides, with FIN) once
  ``nbytes`` have been forwarded to its client, counting from the switch for open connections.

Example::

    async with fault_proxy(nghttpd_h2c.port) as proxy:
        client = connect(proxy.address)
        ...
        proxy.blackhole()  # the live connection goes silent mid-run

Bytes that the proxy had already handed to a socket when the mode changed may still arrive: a
switch stops forwarding from that point on, it cannot recall what was sent. The proxy runs in the
test's event loop and needs no threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import pytest

__all__ = [
    "FaultProxy",
    "FaultProxyFactory",
    "Mode",
    "fault_proxy",
    "fault_proxy_factory",
]

HOST: Final = "127.0.0.1"

# How long aclose() waits for the transports it aborted to report that they are closed.
_CLOSE_TIMEOUT: Final = 5.0

# struct linger {int l_onoff; int l_linger;}: on, zero seconds, so close() sends RST.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class Mode(enum.Enum):
    """What the proxy does with the bytes it reads."""

    PASS = "pass"
    """Forward both ways."""
    BLACKHOLE = "blackhole"
    """Read both ways and drop everything; write nothing."""
    RESET = "reset"
    """RST every connection."""
    DELAY = "delay"
    """Forward each chunk after a fixed delay."""
    CLOSE_AFTER = "close_after"
    """Forward, then close once a number of bytes have gone to the client."""


class _Marker(enum.Enum):
    """Items queued for a side alongside data."""

    EOF = "eof"  # half-close: write_eof() on this side
    CLOSE = "close"  # the other side is gone: close the connection once this is reached


_Item = bytes | _Marker


class _Side(asyncio.Protocol):
    """One of a connection's two sockets: the client's, or the proxy's own to upstream."""

    def __init__(self, connection: _Connection, name: str) -> None:
        self.connection = connection
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.write_paused = False  # this side's write buffer is above its high-water mark
        self.got_eof = False
        self.eof_sent = False
        self.lost = False
        # Items waiting to be written to this side, each with the loop time it is due.
        self.queue: collections.deque[tuple[float, _Item]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        # Done once the transport is closed; aclose() waits for it.
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connection.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.connection.received(self, data)

    def eof_received(self) -> bool:
        self.got_eof = True
        self.connection.received(self, _Marker.EOF)
        return True  # keep our writing half open: the other direction may still carry data

    def pause_writing(self) -> None:
        self.write_paused = True
        self.connection.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.connection.update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.cancel_timer()
        if not self.closed.done():
            self.closed.set_result(None)
        self.connection.side_lost(self, exc)

    def __repr__(self) -> str:
        if self.lost:
            state = "lost"
        elif self.transport is not None and self.transport.is_reading():
            state = "reading"
        else:
            state = "paused"
        return f"<_Side {self.name} {state} queued={len(self.queue)}>"

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def set_reading(self, reading: bool) -> None:
        transport = self.transport
        if transport is None or self.lost or transport.is_closing():
            return
        if reading and not transport.is_reading():
            transport.resume_reading()
        elif not reading and transport.is_reading():
            transport.pause_reading()

    def abort(self, *, rst: bool) -> None:
        """Close at once, dropping unsent bytes; with ``rst``, the peer gets ECONNRESET."""
        self.cancel_timer()
        self.queue.clear()
        transport = self.transport
        if transport is None or self.lost:
            return
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()

    def close(self) -> None:
        """Close after writing what the transport holds (FIN); queued items are dropped."""
        self.cancel_timer()
        self.queue.clear()
        if self.transport is not None and not self.lost:
            self.transport.close()


class _Connection:
    """A client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, "client")
        self.upstream: _Side | None = None
        self.upstream_gone = False  # the upstream connect failed, or upstream closed
        self.eof_dropped = False  # a peer half-closed while the connection was blackholed
        self.connect_task: asyncio.Task[None] | None = None
        # Client bytes read before upstream was connected.
        self.pending: list[_Item] = []
        # Bytes that may still go to the client before the connection is closed (close_after).
        self.budget: int | None = None
        self.closing = False

    # --- Events from the sides -----------------------------------------------------------------

    def side_made(self, side: _Side) -> None:
        proxy = self.proxy
        proxy._sides.add(side)
        if side is self.client:
            proxy._accepted_connection(self)
            if proxy._closing:
                self.abort(rst=False)
                return
            if proxy.mode is Mode.RESET:
                self.abort(rst=True)
                return
            if proxy.mode is Mode.CLOSE_AFTER:
                self.set_budget(proxy._close_after)
                if self.closing:
                    return
            self.update_reading()  # pauses the client until upstream is connected
            self.connect_task = asyncio.create_task(self._connect())
            proxy._tasks.add(self.connect_task)
            self.connect_task.add_done_callback(proxy._tasks.discard)
            return
        # The upstream side.
        if self.closing or proxy._closing:
            side.abort(rst=False)
            return
        pending, self.pending = self.pending, []
        for item in pending:
            self.send(side, item)
        self.update_reading()

    def received(self, side: _Side, item: _Item) -> None:
        """Handle bytes or EOF read from ``side``."""
        if self.closing:
            return
        if self.proxy.mode is Mode.BLACKHOLE:
            # Dropped; EOF too, so the other peer hears nothing.
            self.eof_dropped = self.eof_dropped or item is _Marker.EOF
            return
        target = self.other(side)
        if target is None:
            if not self.upstream_gone:
                self.pending.append(item)  # still connecting
            return
        self.send(target, item)

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        self.proxy._sides.discard(side)
        if side is self.client:
            self.proxy._connections.discard(self)
            self.closing = True
            self._cancel_connect()
            if self.upstream is not None:
                if exc is None:
                    self.upstream.close()
                else:
                    self.upstream.abort(rst=True)
            return
        self.upstream_gone = True
        if self.closing or self.client.lost:
            return
        if exc is not None and self.proxy.mode is not Mode.BLACKHOLE:
            self.abort(rst=True)  # pass an upstream reset on
        elif self.proxy.mode is not Mode.BLACKHOLE:
            self.send(self.client, _Marker.CLOSE)
        # In blackhole mode the client hears nothing; mode_changed() closes it later.

    # --- Forwarding ----------------------------------------------------------------------------

    def other(self, side: _Side) -> _Side | None:
        return self.upstream if side is self.client else self.client

    def send(self, target: _Side, item: _Item) -> None:
        """Write ``item`` to ``target`` now, or queue it behind earlier delayed items."""
        proxy = self.proxy
        if proxy.mode is Mode.DELAY or target.queue:
            delay = proxy._delay if proxy.mode is Mode.DELAY else 0.0
            loop = asyncio.get_running_loop()
            target.queue.append((loop.time() + delay, item))
            self._schedule(target)
        else:
            self._deliver(target, item)

    def _schedule(self, target: _Side) -> None:
        if target.timer is None and target.queue:
            loop = asyncio.get_running_loop()
            target.timer = loop.call_at(target.queue[0][0], self._flush_due, target)

    def _flush_due(self, target: _Side) -> None:
        target.timer = None
        now = asyncio.get_running_loop().time()
        # Items behind the head may have earlier due times (queued after a switch away from
        # DELAY): they wait for the head, which keeps the order.
        while target.queue and target.queue[0][0] <= now and not self.closing:
            _, item = target.queue.popleft()
            self._deliver(target, item)
        self._schedule(target)

    def _deliver(self, target: _Side, item: _Item) -> None:
        transport = target.transport
        if self.closing or transport is None or target.lost or transport.is_closing():
            return
        if item is _Marker.CLOSE:
            self.close()
        elif item is _Marker.EOF:
            if not target.eof_sent and transport.can_write_eof():
                target.eof_sent = True
                transport.write_eof()
            if self.client.got_eof and self.upstream and self.upstream.got_eof:
                self.close()  # both directions are finished
        elif not target.eof_sent:
            if target is self.client and self.budget is not None:
                if len(item) >= self.budget:
                    transport.write(item[: self.budget])
                    self.budget = 0
                    self.close()
                    return
                self.budget -= len(item)
            transport.write(item)

    def update_reading(self) -> None:
        """Pause or resume reading on both sides to match the mode and the write buffers."""
        if self.closing:
            return
        if self.proxy.mode is Mode.BLACKHOLE:
            # Keep reading whatever the buffers say: dropping bytes must not back TCP up.
            self.client.set_reading(True)
            if self.upstream is not None:
                self.upstream.set_reading(True)
            return
        upstream = self.upstream
        self.client.set_reading(upstream is not None and not upstream.write_paused)
        if upstream is not None:
            upstream.set_reading(not self.client.write_paused)

    # --- Mode switches and closing -------------------------------------------------------------

    def mode_changed(self, previous: Mode, mode: Mode) -> None:
        if self.closing:
            return
        if mode is Mode.RESET:
            self.abort(rst=True)
            return
        if mode is Mode.BLACKHOLE:
            self.pending.clear()
            for side in (self.client, self.upstream):
                if side is not None:
                    side.cancel_timer()
                    side.queue.clear()
        elif previous is Mode.BLACKHOLE and (self.upstream_gone or self.eof_dropped):
            # A peer went away while the connection was silent, and was not heard: the
            # connection cannot be resumed faithfully.
            self.close()
            return
        if mode is Mode.CLOSE_AFTER:
            self.set_budget(self.proxy._close_after)
        else:
            self.budget = None
        self.update_reading()

    def set_budget(self, nbytes: int) -> None:
        self.budget = nbytes
        if nbytes == 0:
            self.close()

    def close(self) -> None:
        """Close both sides with FIN, after the bytes already written to them."""
        self.closing = True
        self._cancel_connect()
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()

    def abort(self, *, rst: bool) -> None:
        """Close both sides at once; with ``rst``, both peers get ECONNRESET."""
        self.closing = True
        self._cancel_connect()
        self.client.abort(rst=rst)
        if self.upstream is not None:
            self.upstream.abort(rst=rst)

    def _cancel_connect(self) -> None:
        if self.connect_task is not None:
            self.connect_task.cancel()

    async def _connect(self) -> None:
        proxy = self.proxy
        loop = asyncio.get_running_loop()

        def make_upstream() -> _Side:
            self.upstream = _Side(self, "upstream")
            return self.upstream

        try:
            await loop.create_connection(make_upstream, proxy.upstream_host, proxy.upstream_port)
        except OSError:
            self.upstream_gone = True
            self.pending.clear()
            if not self.closing and proxy.mode is not Mode.BLACKHOLE:
                # As close as a proxy gets to "connection refused".
                self.abort(rst=True)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 whose forwarding can be broken on cue.

    Attributes:
        upstream_host: The server's address.
        upstream_port: The server's port; may be changed, and applies to new connections.
        port: The port the proxy listens on (valid after ``start()``).
    """

    def __init__(self, upstream_port: int, upstream_host: str = HOST) -> None:
        """Prepare, but do not start, a proxy in pass-through mode.

        Args:
            upstream_port: Port of the server to forward to.
            upstream_host: Address of that server.
        """
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self._mode = Mode.PASS
        self._delay = 0.0
        self._close_after = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._sides: set[_Side] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = 0
        self._accept_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closing = False

    # --- Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1.

        Raises:
            RuntimeError: Already started.
        """
        if self._server is not None or self._closing:
            raise RuntimeError("the proxy has already been started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self).client, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening, abort every connection and wait until all of it is closed.

        Idempotent. Bounded in time: it does not wait for peers, only for our own transports.
        """
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._connections):
            connection.closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # After the connects, so that one finishing just before its cancellation is included.
        sides = list(self._sides)
        for side in sides:
            side.abort(rst=False)
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await asyncio.gather(*(side.closed for side in sides))
            if server is not None:
                await server.wait_closed()
        for _, waiter in self._accept_waiters:
            waiter.cancel()
        self._accept_waiters.clear()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- Modes -------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    def passthrough(self) -> None:
        """Forward both ways, on open and new connections."""
        self._switch(Mode.PASS)

    def blackhole(self) -> None:
        """Forward nothing from now on, on open and new connections; keep TCP open.

        Bytes are still read from both sockets and dropped, and so are EOFs; delayed bytes not
        yet forwarded are dropped too. If the server closes an upstream connection meanwhile,
        the client is not told until the mode changes again, when it is closed.
        """
        self._switch(Mode.BLACKHOLE)

    def reset(self) -> None:
        """RST every open connection now, and each new one as soon as it is accepted.

        Both peers see ECONNRESET: the client on its next read, the server likewise.
        """
        self._switch(Mode.RESET)

    def delay(self, seconds: float) -> None:
        """Forward every chunk ``seconds`` after it was read, both ways, keeping the order.

        Args:
            seconds: Added latency per chunk; chunks are pipelined, so a stream of ``n`` chunks
                is late by ``seconds``, not ``n * seconds``.
        """
        if seconds < 0:
            raise ValueError(f"delay must not be negative, got {seconds}")
        self._delay = seconds
        self._switch(Mode.DELAY)

    def close_after(self, nbytes: int) -> None:
        """Close each connection (FIN both ways) once ``nbytes`` more have gone to its client.

        Open connections count from now; ``0`` closes them at once. New connections get the
        same allowance. Bytes from client to server are forwarded without limit.

        Args:
            nbytes: Bytes forwarded server to client before the connection is closed.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must not be negative, got {nbytes}")
        self._close_after = nbytes
        self._switch(Mode.CLOSE_AFTER)

    def _switch(self, mode: Mode) -> None:
        previous, self._mode = self._mode, mode
        for connection in list(self._connections):
            connection.mode_changed(previous, mode)

    # --- State -------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``, where clients connect."""
        if not self.port:
            raise RuntimeError("the proxy has not been started")
        return f"{HOST}:{self.port}"

    @property
    def connections(self) -> int:
        """Client connections currently open."""
        return len(self._connections)

    @property
    def accepted(self) -> int:
        """Client connections accepted since start, including those reset at once."""
        return self._accepted

    async def wait_accepted(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` client connections have been accepted in total.

        Raises:
            TimeoutError: Fewer were accepted within ``timeout`` seconds.
        """
        if self._accepted >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._accept_waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise TimeoutError(
                f"{self._accepted} of {count} connections accepted within {timeout:g} s"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._accept_waiters.remove(entry)

    def _accepted_connection(self, connection: _Connection) -> None:
        self._accepted += 1
        self._connections.add(connection)
        for count, waiter in self._accept_waiters:
            if self._accepted >= count and not waiter.done():
                waiter.set_result(None)

    def __repr__(self) -> str:
        return (
            f"<FaultProxy 127.0.0.1:{self.port or '?'} -> "
            f"{self.upstream_host}:{self.upstream_port} {self._mode.value} "
            f"connections={self.connections} accepted={self.accepted}>"
        )


@contextlib.asynccontextmanager
async def fault_proxy(upstream_port: int, upstream_host: str = HOST) -> AsyncIterator[FaultProxy]:
    """Run a ``FaultProxy`` to ``upstream_host:upstream_port`` for the duration of a block.

    Args:
        upstream_port: Port of the server to forward to.
        upstream_host: Address of that server.

    Yields:
        The started proxy, in pass-through mode; it is closed on exit.
    """
    proxy = FaultProxy(upstream_port, upstream_host)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.aclose()


FaultProxyFactory = Callable[[int], Awaitable[FaultProxy]]
"""``await factory(upstream_port)`` returns a started proxy to 127.0.0.1:``upstream_port``."""


@pytest.fixture
async def fault_proxy_factory() -> AsyncIterator[FaultProxyFactory]:
    """Start ``FaultProxy`` instances on demand; all of them are closed at teardown.

    Not registered as a plugin: import it into a test module (or list ``tests.faultproxy`` in
    ``pytest_plugins``) to use it.
    """
    proxies: list[FaultProxy] = []

    async def make(upstream_port: int) -> FaultProxy:
        proxy = FaultProxy(upstream_port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in reversed(proxies):
            await proxy.aclose()
