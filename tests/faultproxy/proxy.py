"""The fault-injection proxy, its context manager and its fixture."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import pytest

from .connection import HOST, Mode, _Connection, _Side

# How long aclose() waits for the transports it aborted to report that they are closed.
_CLOSE_TIMEOUT: Final = 5.0


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
