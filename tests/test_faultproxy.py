"""Self-tests of ``tests.faultproxy`` against an asyncio echo server, with plain sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.faultproxy import FaultProxy, FaultProxyFactory, Mode, fault_proxy
from tests.faultproxy import fault_proxy_factory as fault_proxy_factory  # the fixture
from tests.peers import free_port
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(10)

DELAY = 0.1

# A read that should get nothing waits this long before the test concludes that nothing came.
SILENCE = 0.3


class EchoServer:
    """An asyncio TCP server on 127.0.0.1 that writes back whatever it reads."""

    def __init__(self) -> None:
        self.port = 0
        self.received = 0  # bytes read, over all connections
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[object]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass  # e.g. the proxy reset us
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._writers.discard(writer)

    async def __aenter__(self) -> EchoServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        async with asyncio.timeout(5):
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()


class Client:
    """A plain asyncio stream connection, closed by ``aclose()``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def roundtrip(self, data: bytes) -> bytes:
        """Send ``data`` and read back as many bytes, within 5 s."""
        self.writer.write(data)
        async with asyncio.timeout(5):
            return await self.reader.readexactly(len(data))

    async def read_until_eof(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.reader.read()

    async def aclose(self) -> None:
        self.writer.transport.abort()
        # A reset connection stores its error for wait_closed(); it has been asserted already.
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(5):
                await self.writer.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    async with EchoServer() as server:
        yield server


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(echo.port) as running:
        yield running


Connect = Callable[[FaultProxy], Awaitable[Client]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open client connections to a proxy; all are closed at teardown."""
    clients: list[Client] = []

    async def open_client(proxy: FaultProxy) -> Client:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        client = Client(reader, writer)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.aclose()


async def assert_silent(client: Client) -> None:
    """Assert that nothing, not even EOF, arrives within ``SILENCE`` seconds."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(SILENCE):
            await client.reader.read(1)
    assert not client.reader.at_eof()


async def assert_reset(client: Client) -> None:
    """Assert that the connection is reset (RST) within 5 seconds."""
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5):
            await client.reader.read(1)


async def test_passthrough_echoes_and_counts(proxy: FaultProxy, connect: Connect) -> None:
    assert proxy.mode is Mode.PASS
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    first = await connect(proxy)
    second = await connect(proxy)
    assert await first.roundtrip(b"ping") == b"ping"
    assert await second.roundtrip(b"pong" * 10000) == b"pong" * 10000
    assert (proxy.accepted, proxy.connections) == (2, 2)
    await first.aclose()
    await eventually(lambda: proxy.connections == 1)
    assert proxy.accepted == 2


async def test_half_close_is_forwarded(proxy: FaultProxy, connect: Connect) -> None:
    client = await connect(proxy)
    client.writer.write(b"last words")
    client.writer.write_eof()
    # The echo server sees EOF, answers and closes; the proxy passes both on.
    assert await client.read_until_eof() == b"last words"
    await eventually(lambda: proxy.connections == 0)


async def test_blackhole_silences_open_and_new_connections(
    proxy: FaultProxy, echo: EchoServer, connect: Connect
) -> None:
    old = await connect(proxy)
    assert await old.roundtrip(b"before") == b"before"
    received = echo.received

    proxy.blackhole()
    old.writer.write(b"lost")
    await assert_silent(old)
    new = await connect(proxy)
    new.writer.write(b"also lost")
    await assert_silent(new)
    assert echo.received == received  # nothing reached the server either
    assert (proxy.connections, proxy.accepted) == (2, 2)

    proxy.passthrough()
    assert await (await connect(proxy)).roundtrip(b"fresh") == b"fresh"
    # The open connections carry on; what was dropped stays dropped.
    assert await old.roundtrip(b"after") == b"after"
    assert await new.roundtrip(b"after") == b"after"


async def test_blackhole_keeps_reading_so_the_sender_never_blocks(
    proxy: FaultProxy, echo: EchoServer, connect: Connect
) -> None:
    client = await connect(proxy)
    await client.roundtrip(b"x")
    proxy.blackhole()
    # Far more than the kernel buffers on the way hold: drained only if the proxy reads it.
    client.writer.write(b"\0" * (32 * 1024 * 1024))
    async with asyncio.timeout(5):
        await client.writer.drain()
    assert echo.received == 1
    await assert_silent(client)


async def test_reset_hits_open_and_new_connections(proxy: FaultProxy, connect: Connect) -> None:
    old = await connect(proxy)
    assert await old.roundtrip(b"hi") == b"hi"

    proxy.reset()
    await assert_reset(old)
    new = await connect(proxy)  # the kernel completes the handshake before the proxy resets
    await assert_reset(new)
    assert proxy.accepted == 2
    await eventually(lambda: proxy.connections == 0)

    proxy.passthrough()
    assert await (await connect(proxy)).roundtrip(b"back") == b"back"


async def test_delay_adds_latency_both_ways(proxy: FaultProxy, connect: Connect) -> None:
    client = await connect(proxy)
    proxy.delay(DELAY)
    started = time.monotonic()
    assert await client.roundtrip(b"slow") == b"slow"
    # Once on the way there and once back; 1 ms for the event loop's clock resolution.
    assert time.monotonic() - started >= 2 * DELAY - 0.001


async def test_delay_keeps_order_and_pipelines_chunks(proxy: FaultProxy, connect: Connect) -> None:
    client = await connect(proxy)
    proxy.delay(DELAY)
    messages = [b"message %03d\n" % i for i in range(100)]
    started = time.monotonic()
    for message in messages:
        client.writer.write(message)
        await client.writer.drain()
    async with asyncio.timeout(5):
        echoed = await client.reader.readexactly(sum(map(len, messages)))
    assert echoed == b"".join(messages)
    # Latency is added per chunk, not summed over chunks: however the writes were split into
    # reads, this takes about 2 * DELAY, far less than it would if each chunk waited its turn.
    assert time.monotonic() - started < 1.5


async def test_close_after_closes_new_connections(proxy: FaultProxy, connect: Connect) -> None:
    proxy.close_after(5)
    client = await connect(proxy)
    client.writer.write(b"hello world")
    assert await client.read_until_eof() == b"hello"
    await eventually(lambda: proxy.connections == 0)


@pytest.mark.parametrize(
    ("limit", "sent", "received"),
    [(4, b"12345678", b"1234"), (0, b"", b"")],
    ids=["counts-from-the-switch", "zero-closes-at-once"],
)
async def test_close_after_on_open_connections(
    proxy: FaultProxy, connect: Connect, limit: int, sent: bytes, received: bytes
) -> None:
    client = await connect(proxy)
    assert await client.roundtrip(b"abc") == b"abc"
    proxy.close_after(limit)
    if sent:
        client.writer.write(sent)
    assert await client.read_until_eof() == received


async def test_unreachable_upstream_resets_the_client(connect: Connect) -> None:
    async with fault_proxy(free_port()) as proxy:
        client = await connect(proxy)
        await assert_reset(client)


async def test_upstream_reset_is_passed_on(echo: EchoServer, connect: Connect) -> None:
    async with fault_proxy(echo.port) as inner, fault_proxy(inner.port) as outer:
        client = await connect(outer)
        assert await client.roundtrip(b"x") == b"x"
        inner.reset()
        await assert_reset(client)


async def test_aclose_with_busy_connections_is_prompt(echo: EchoServer, connect: Connect) -> None:
    proxy = FaultProxy(echo.port)
    await proxy.start()
    quiet = await connect(proxy)
    await quiet.roundtrip(b"x")
    proxy.delay(10)  # leaves bytes queued in the proxy
    delayed = await connect(proxy)
    delayed.writer.write(b"queued")
    await proxy.wait_accepted(2)
    started = time.monotonic()
    await proxy.aclose()
    assert time.monotonic() - started < 1
    assert proxy.connections == 0
    for client in (quiet, delayed):
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionResetError):
                assert await client.reader.read() == b""
    await proxy.aclose()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_wait_accepted_times_out(proxy: FaultProxy) -> None:
    with pytest.raises(TimeoutError, match="0 of 1 connections accepted"):
        await proxy.wait_accepted(1, timeout=0.05)


def test_mode_arguments_are_checked() -> None:
    proxy = FaultProxy(1)
    with pytest.raises(ValueError, match="negative"):
        proxy.delay(-1)
    with pytest.raises(ValueError, match="negative"):
        proxy.close_after(-1)
    with pytest.raises(RuntimeError, match="not been started"):
        _ = proxy.address


async def test_factory_fixture(fault_proxy_factory: FaultProxyFactory, echo: EchoServer) -> None:
    proxy = await fault_proxy_factory(echo.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    client = Client(reader, writer)
    try:
        assert await client.roundtrip(b"factory") == b"factory"
    finally:
        await client.aclose()
