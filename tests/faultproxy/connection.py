"""One proxied connection: its two sides, and the modes it obeys."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import socket
import struct
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .proxy import FaultProxy

HOST: Final = "127.0.0.1"

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
