"""h2pool's client against h2pool's server over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import h2pool
from tests.peers import Certificates
from tests.servers import Server, echo, hold, mute_listener
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
GET = {":method": "GET", ":path": "/"}
POST = {":method": "POST", ":path": "/upload"}


@pytest.fixture
async def echo_server() -> AsyncIterator[Server]:
    async with Server(echo) as server:
        yield server


async def test_seed_example_runs() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "core.py"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # This checkout's h2pool, not whichever one is installed.
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith("Round-trip time: ")
    assert lines[0].endswith("ms")
    assert lines[1:] == [
        "Response headers: [(':status', '200')]",
        "Response body: b'hello, world'",
        "Response trailers: [('len', '5')]",
    ]
    assert err == b""


async def test_headers_in_any_form_and_out_in_wire_order(echo_server: Server) -> None:
    client = await h2pool.open_connection("127.0.0.1", echo_server.port)
    forms: list[h2pool.HeadersIn] = [
        {":method": "POST", ":path": "/", "x-a": "1", "X-Upper": "v"},
        [(b":method", b"POST"), (b":path", b"/"), (b"x-a", b"1"), (b"x-upper", b"v")],
        [("x-a", "1"), (":method", "POST"), ("x-upper", b"v"), (":path", "/")],
    ]
    for headers in forms:
        stream_id = await client.start_request(headers, end_stream=True)
        response = await client.recv_response(stream_id)
        assert response[0] == (":status", "200")
        assert dict(response)["x-echo"] == "1"
        assert await client.read_stream(stream_id, -1) == b""
        assert await client.recv_trailers(stream_id) == [("x-a", "1"), ("x-upper", "v")]
    repeated = await client.start_request(
        [(":method", "GET"), (":path", "/"), ("x-r", "1"), ("x-r", "2")], end_stream=True
    )
    await client.read_stream(repeated, -1)
    assert await client.recv_trailers(repeated) == [("x-r", "1"), ("x-r", "2")]
    await client.shutdown()


async def test_read_stream_sizes() -> None:
    async def chunks(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await proto.start_response(stream_id, {":status": "200"})
        for part in (b"abc", b"defg", b"h"):
            await proto.send_data(stream_id, part)
            await asyncio.sleep(0.01)  # separate frames, separate reads
        await proto.end_stream(stream_id)

    async with Server(chunks) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        stream_id = await client.start_request(GET, end_stream=True)
        await client.recv_response(stream_id)
        assert await client.read_stream(stream_id) == b"abc"  # next chunk
        assert await client.read_stream(stream_id, 3) == b"def"  # exactly n
        assert await client.read_stream(stream_id, 5) == b"gh"  # fewer only at the end
        assert await client.read_stream(stream_id) == b""
        assert await client.read_stream(stream_id, -1) == b""
        assert await client.read_stream(stream_id, 4) == b""
        assert await client.recv_trailers(stream_id) == []
        await client.shutdown()


async def test_large_bodies_both_ways_arrive_intact(echo_server: Server) -> None:
    client = await h2pool.open_connection("127.0.0.1", echo_server.port)
    body = os.urandom(16 * 1024 * 1024)
    stream_id = await client.start_request(POST)
    send = asyncio.ensure_future(client.send_data(stream_id, body, end_stream=True))
    received = await client.read_stream(stream_id, -1)
    await send
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    await client.shutdown()


async def test_slow_reader_bounds_what_is_buffered() -> None:
    window = 65_535
    sent = asyncio.Event()

    async def firehose(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, b"z" * (4 * 1024 * 1024), end_stream=True)
        sent.set()

    async with Server(firehose) as server:
        config = h2pool.H2Config(stream_window=window, connection_window=1024 * 1024)
        client = await h2pool.open_connection("127.0.0.1", server.port, config=config)
        stream_id = await client.start_request(GET, end_stream=True)
        await client.recv_response(stream_id)
        state = client._session.stream(stream_id)
        await eventually(lambda: state.buffered == window)  # the window is full...
        await asyncio.sleep(0.1)
        assert state.buffered == window  # ...and stays full: nothing more was sent
        assert not sent.is_set()  # the server is held back by flow control
        total = 0
        while chunk := await client.read_stream(stream_id):
            total += len(chunk)
            assert state.buffered <= window
        assert total == 4 * 1024 * 1024
        async with asyncio.timeout(5):
            await sent.wait()
        await client.shutdown()


async def test_server_refuses_streams_beyond_its_concurrency() -> None:
    release = asyncio.Event()
    async with Server(hold(release), concurrency=2) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        # Sent before the server's SETTINGS arrive, so the client cannot know the limit.
        ids = [await client.start_request(GET, end_stream=True) for _ in range(5)]
        results = [asyncio.ensure_future(client.recv_response(i)) for i in ids]
        done: set[asyncio.Future[h2pool.HeaderList]] = set()
        pending = set(results)
        async with asyncio.timeout(5):
            while len(done) < 3:  # the refusals come at once; the others wait for release
                finished, pending = await asyncio.wait(pending, return_when="FIRST_COMPLETED")
                done |= finished
        assert all(isinstance(r.exception(), h2pool.StreamRefused) for r in done)
        release.set()
        outcomes = await asyncio.gather(*results, return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, h2pool.StreamRefused)]
        assert len(refused) == 3
        assert all(r.never_processed for r in refused)
        assert [dict(o)[":status"] for o in outcomes if isinstance(o, list)] == ["200", "200"]
        assert client.max_streams == 2
        await client.shutdown()


async def test_client_waits_for_a_free_stream_slot() -> None:
    release = asyncio.Event()
    async with Server(hold(release), concurrency=2) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        await client.wait_functional()  # SETTINGS received: the limit is known
        first = [await client.start_request(GET, end_stream=True) for _ in range(2)]
        third = asyncio.ensure_future(client.start_request(GET, end_stream=True))
        await asyncio.sleep(0.05)
        assert not third.done()
        release.set()
        await client.recv_response(first[0])
        async with asyncio.timeout(5):
            stream_id = await third
        assert dict(await client.recv_response(stream_id))[":status"] == "200"
        await client.shutdown()


async def test_server_graceful_shutdown_finishes_in_flight_streams() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        started.set()
        await release.wait()
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, b"finished", end_stream=True)

    async with Server(slow) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        stream_id = await client.start_request(GET, end_stream=True)
        await started.wait()
        shutdown = asyncio.ensure_future(server.protocols[0].shutdown(timeout=5))
        await eventually(lambda: client.goaway_received)
        with pytest.raises(h2pool.ConnectionClosed) as refused:
            await client.start_request(GET)
        assert refused.value.never_processed
        release.set()
        assert await client.read_stream(stream_id, -1) == b"finished"
        async with asyncio.timeout(5):
            await shutdown
            await client.wait_closed()


async def test_shutdown_timeout_abandons_streams() -> None:
    async def never(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await asyncio.Event().wait()

    async with Server(never) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        stream_id = await client.start_request(GET, end_stream=True)
        pending = asyncio.ensure_future(client.recv_response(stream_id))
        async with asyncio.timeout(5):
            await client.shutdown(timeout=0.2)
        with pytest.raises(h2pool.ConnectionClosed):
            await pending


async def test_server_side_awaits_fail_when_the_client_vanishes() -> None:
    seen: dict[str, BaseException] = {}
    reading = asyncio.Event()
    failed = asyncio.Event()

    async def read_forever(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        reading.set()
        try:
            await proto.read_stream(stream_id, -1)
        except h2pool.H2PoolError as exc:
            seen["read_stream"] = exc
            failed.set()

    async with Server(read_forever) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        await client.start_request(POST)
        await reading.wait()
        proto = server.protocols[0]
        next_request = asyncio.ensure_future(proto.recv_request())
        client.close_connection()
        async with asyncio.timeout(5):
            with pytest.raises(h2pool.H2ConnectionError):
                await next_request
            await failed.wait()
        assert isinstance(seen["read_stream"], h2pool.H2ConnectionError)


async def test_reset_stream_frees_the_stream_and_tells_the_server(echo_server: Server) -> None:
    client = await h2pool.open_connection("127.0.0.1", echo_server.port)
    stream_id = await client.start_request(POST)
    await client.send_data(stream_id, b"partial")
    await client.reset_stream(stream_id)
    client.reset_stream(stream_id)  # again, and without awaiting: harmless
    with pytest.raises(h2pool.StreamClosed):
        await client.send_data(stream_id, b"more")
    assert client.open_streams == 0
    other = await client.start_request(GET, end_stream=True)
    assert dict(await client.recv_response(other))[":status"] == "200"
    await client.shutdown()


async def test_misuse_gets_clear_errors(echo_server: Server) -> None:
    client = await h2pool.open_connection("127.0.0.1", echo_server.port)
    stream_id = await client.start_request(GET, end_stream=True)
    with pytest.raises(h2pool.StreamClosed):
        await client.send_data(stream_id, b"after end")
    with pytest.raises(h2pool.StreamClosed):
        await client.read_stream(999)
    with pytest.raises(h2pool.H2ProtocolError) as invalid:
        await client.start_request({":method": "GET"})  # no :path
    assert invalid.value.never_processed
    await client.read_stream(stream_id, -1)
    assert client.functional
    await client.shutdown()


@pytest.mark.timeout(240)
async def test_many_streams_leave_no_state_behind(echo_server: Server) -> None:
    client = await h2pool.open_connection("127.0.0.1", echo_server.port)
    total, workers = 100_000, 100

    async def worker() -> None:
        for _ in range(total // workers):
            stream_id = await client.start_request(GET, end_stream=True)
            await client.recv_response(stream_id)
            await client.read_stream(stream_id, -1)
            await client.recv_trailers(stream_id)

    async with asyncio.timeout(240):
        await asyncio.gather(*(worker() for _ in range(workers)))
    server = echo_server.protocols[0]
    for proto in (client, server):
        session = proto._session
        assert proto.open_streams == 0
        assert session.streams == {}
        assert session.unread == {}
        assert session.conn.streams == {}
        assert len(session.finished) <= 128
        assert len(session.conn._closed_streams) <= session.conn.MAX_CLOSED_STREAMS
        assert not session.scheduler.ready
        assert not proto._recv_waiters
        assert not proto._send_waiters
    assert client._session.conn.highest_outbound_stream_id == 2 * total - 1
    await client.shutdown()


async def test_unix_sockets(tmp_path: Path) -> None:
    path = str(tmp_path / "h2.sock")

    async def serve(proto: h2pool.H2Protocol) -> None:
        stream_id, headers = await proto.recv_request()
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, dict(headers)[":authority"].encode(), end_stream=True)

    server = await h2pool.start_unix_server(serve, path)
    client = await h2pool.open_unix_connection(path, authority="svc.local")
    stream_id = await client.start_request(GET, end_stream=True)
    assert await client.read_stream(stream_id, -1) == b"svc.local"
    await client.shutdown()
    server.close()
    await server.wait_closed()


async def test_connect_failures_are_typed() -> None:
    with pytest.raises(h2pool.ConnectError) as refused:
        await h2pool.open_connection("127.0.0.1", 1)
    assert refused.value.never_processed
    assert isinstance(refused.value, ConnectionError)

    # A TCP listener that never answers the TLS handshake.
    async with mute_listener() as port:
        with pytest.raises(h2pool.ConnectTimeout) as timed_out:
            await h2pool.open_connection("127.0.0.1", port, ssl=True, connect_timeout=0.2)
    assert isinstance(timed_out.value, TimeoutError)


async def test_tls_with_alpn(certificates: Certificates) -> None:
    server_context = h2pool.server_ssl_context(
        str(certificates.cert_pem), str(certificates.key_pem)
    )
    async with Server(echo, ssl=server_context) as server:
        context = h2pool.client_ssl_context(cafile=str(certificates.ca_pem))
        client = await h2pool.open_connection("localhost", server.port, ssl=context)
        stream_id = await client.start_request(POST)
        await client.send_data(stream_id, b"secret", end_stream=True)
        assert await client.read_stream(stream_id, -1) == b"secret"
        await client.shutdown()
        # Default verification (certifi's CAs) refuses the test CA, and says why.
        with pytest.raises(h2pool.ConnectError, match="certificate verif"):
            await h2pool.open_connection("localhost", server.port, ssl=True)


async def test_alpn_without_h2_is_refused(certificates: Certificates) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificates.cert_pem), str(certificates.key_pem))
    context.set_alpn_protocols(["http/1.1"])

    client_context = h2pool.client_ssl_context(cafile=str(certificates.ca_pem))
    client_context.set_alpn_protocols(["h2", "http/1.1"])
    async with mute_listener(ssl=context) as port:
        with pytest.raises(h2pool.ConnectError, match="ALPN"):
            await h2pool.open_connection("localhost", port, ssl=client_context)


async def test_unread_bodies_do_not_stall_the_connection() -> None:
    async def big(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, b"u" * 60_000, end_stream=True)

    async with Server(big) as server:
        # The connection window holds two unread bodies at most.
        config = h2pool.H2Config(stream_window=65_535, connection_window=131_070)
        client = await h2pool.open_connection("127.0.0.1", server.port, config=config)
        async with asyncio.timeout(10):
            for _ in range(10):  # ignore each body: later responses must still come
                stream_id = await client.start_request(GET, end_stream=True)
                await client.recv_response(stream_id)
            last = await client.start_request(GET, end_stream=True)
            assert len(await client.read_stream(last, -1)) == 60_000
        await client.shutdown()


async def test_cancelled_graceful_shutdown_still_closes_the_connection() -> None:
    release = asyncio.Event()
    async with Server(hold(release)) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        stream_id = await client.start_request({":method": "GET", ":path": "/"}, end_stream=True)
        closing = asyncio.ensure_future(client.shutdown())
        await eventually(lambda: not client.accepting_streams)  # GOAWAY sent, draining
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        async with asyncio.timeout(5):
            await client.wait_closed()
        with pytest.raises(h2pool.H2ConnectionError):
            await client.recv_response(stream_id)
        release.set()
