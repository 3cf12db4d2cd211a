"""The core client against a scripted peer: GOAWAY, health, limits, hostile frames.

Each test drives :mod:`tests.rawpeer` frame by frame to reach a situation a
real server produces only by chance, and checks what h2pool's client does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h2.connection
import h2.events
import h2.settings
import pytest
from hyperframe.frame import PriorityFrame

import h2pool
from tests.rawpeer import RawConnection, RawPeer, raw_peer
from tests.waiting import eventually

GET = {":method": "GET", ":path": "/"}


@pytest.fixture
async def peer() -> AsyncIterator[RawPeer]:
    async with raw_peer() as peer:
        yield peer


async def connect(peer: RawPeer, **kwargs: object) -> tuple[h2pool.H2Protocol, RawConnection]:
    client = await h2pool.open_connection("127.0.0.1", peer.port, **kwargs)  # type: ignore[arg-type]
    return client, await peer.accept()


async def requests_seen(conn: RawConnection, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        event = await conn.next_event(h2.events.RequestReceived)
        ids.append(event.stream_id)
    return ids


async def test_goaway_lets_lower_streams_finish_and_refuses_higher(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    s1, s3, s5 = [await client.start_request(GET, end_stream=True) for _ in range(3)]
    assert await requests_seen(conn, 3) == [s1, s3, s5]

    conn.goaway(last_stream_id=s3)
    # Frames after GOAWAY would make a plain h2 client raise ProtocolError.
    conn.h2.ping(b"pingpong")
    conn.respond(s1, b"one")
    conn.respond(s3, b"three")

    with pytest.raises(h2pool.StreamRefused) as refused:
        await client.recv_response(s5)
    assert refused.value.never_processed
    assert refused.value.stream_id == s5
    for stream_id, body in ((s1, b"one"), (s3, b"three")):
        assert dict(await client.recv_response(stream_id))[":status"] == "200"
        assert await client.read_stream(stream_id, -1) == body

    assert not client.accepting_streams
    with pytest.raises(h2pool.ConnectionClosed) as closed:
        await client.start_request(GET)
    assert closed.value.never_processed
    # Drained: the client closes the connection itself.
    async with asyncio.timeout(5):
        await conn.closed.wait()
        await client.wait_closed()


async def test_two_phase_goaway_as_grpc_sends_it(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    stream_id = await client.start_request(GET, end_stream=True)
    await requests_seen(conn, 1)
    conn.goaway(last_stream_id=2**31 - 1)
    conn.h2.ping(b"\0" * 8)
    conn.flush()
    conn.goaway(last_stream_id=stream_id)
    conn.respond(stream_id, b"still served")
    assert await client.read_stream(stream_id, -1) == b"still served"
    assert client.goaway_received


async def test_silent_peer_is_declared_dead_within_two_timeouts(peer: RawPeer) -> None:
    timeout = 0.2
    client, conn = await connect(peer, functional_timeout=timeout)
    await client.wait_functional()
    conn.silent = True  # TCP stays open, nothing comes back (not even PING ACKs)
    stream_id = await client.start_request(GET, end_stream=True)
    started = asyncio.get_running_loop().time()
    with pytest.raises(h2pool.ConnectionDead):
        await client.recv_response(stream_id)
    elapsed = asyncio.get_running_loop().time() - started
    assert timeout * 1.5 <= elapsed <= timeout * 4
    assert not client.functional
    assert await conn.next_event(h2.events.PingReceived)
    with pytest.raises(h2pool.ConnectionDead):
        await client.wait_functional()


async def test_no_ping_while_frames_keep_arriving(peer: RawPeer) -> None:
    client, conn = await connect(peer, functional_timeout=0.15)
    stream_id = await client.start_request(GET, end_stream=True)
    await requests_seen(conn, 1)
    conn.respond(stream_id, b"", end_stream=False)
    for _ in range(20):  # 1 s of traffic, a frame every 50 ms
        conn.h2.send_data(stream_id, b"x" * 10)
        conn.flush()
        assert await client.read_stream(stream_id) == b"x" * 10
        await asyncio.sleep(0.05)
    conn.h2.end_stream(stream_id)
    conn.flush()
    assert await client.read_stream(stream_id, -1) == b""
    pings = [e for e in _drain(conn) if isinstance(e, h2.events.PingReceived)]
    assert pings == []
    assert client.functional


async def test_idle_connection_nobody_waits_on_sends_nothing(peer: RawPeer) -> None:
    client, conn = await connect(peer, functional_timeout=0.05)
    await conn.next_event(h2.events.RemoteSettingsChanged)
    await asyncio.sleep(0.4)  # eight functional timeouts of idleness
    assert [e for e in _drain(conn) if isinstance(e, h2.events.PingReceived)] == []
    assert client.functional


async def test_slow_but_alive_peer_is_pinged_not_killed(peer: RawPeer) -> None:
    client, conn = await connect(peer, functional_timeout=0.1)
    stream_id = await client.start_request(GET, end_stream=True)
    await requests_seen(conn, 1)
    # The peer answers PINGs (h2 acks them) but takes 0.6 s to respond.
    pings = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.6
    while loop.time() < deadline:
        try:
            await conn.next_event(h2.events.PingReceived, timeout=deadline - loop.time())
            pings += 1
        except TimeoutError:
            break
    conn.respond(stream_id, b"late")
    assert await client.read_stream(stream_id, -1) == b"late"
    assert client.functional
    assert 2 <= pings <= 7  # about one per functional timeout of silence
    assert client.rtt is not None


async def test_wait_functional_returns_rtt(peer: RawPeer) -> None:
    client, _ = await connect(peer, functional_timeout=1.0)
    rtt = await client.wait_functional()
    assert 0 < rtt < 1.0
    assert client.rtt == rtt
    # Proven live and recently heard from: answered at once with the same RTT.
    assert await client.wait_functional() == rtt


async def test_too_many_pings_doubles_ping_interval(peer: RawPeer) -> None:
    client, conn = await connect(peer, functional_timeout=0.3)
    assert client.ping_interval == 0.3
    conn.goaway(0, error_code=h2pool.ErrorCode.ENHANCE_YOUR_CALM, debug=b"too_many_pings")
    async with asyncio.timeout(5):
        await client.wait_closed()
    assert client.ping_interval == 0.6


async def test_lowered_stream_limit_below_open_streams_does_not_deadlock(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    await apply_settings(conn, {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    opened = [await client.start_request(GET, end_stream=True) for _ in range(3)]
    fourth = asyncio.create_task(client.start_request(GET, end_stream=True))
    await requests_seen(conn, 3)
    await apply_settings(conn, {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    assert client.max_streams == 1
    conn.respond(opened[0])
    conn.respond(opened[1])
    await client.read_stream(opened[1], -1)
    assert not fourth.done()  # one still open, limit 1: must wait
    conn.respond(opened[2])
    async with asyncio.timeout(5):
        stream_id = await fourth
    assert await requests_seen(conn, 1) == [stream_id]


async def test_every_pending_await_fails_when_the_connection_is_lost(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    await apply_settings(
        conn,
        {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 4,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10,
        },
    )
    no_response = await client.start_request(GET, end_stream=True)
    no_body = await client.start_request(GET, end_stream=True)
    no_trailers = await client.start_request(GET, end_stream=True)
    upload = await client.start_request({":method": "POST", ":path": "/"})
    await requests_seen(conn, 4)
    conn.respond(no_body, end_stream=False)
    conn.respond(no_trailers, end_stream=False)
    conn.h2.send_data(no_trailers, b"body")
    conn.flush()
    assert await client.recv_response(no_body)
    assert await client.read_stream(no_trailers, 4) == b"body"
    conn.silent = True  # PING ACKs stop too
    pending = {
        "recv_response": client.recv_response(no_response),
        "read_stream": client.read_stream(no_body),
        "recv_trailers": client.recv_trailers(no_trailers),
        "send_data (window)": client.send_data(upload, b"x" * 100),
        "start_request (slot)": client.start_request(GET),
        "wait_functional": client.wait_functional(),
    }
    tasks = {name: asyncio.ensure_future(aw) for name, aw in pending.items()}
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in tasks.values())
    conn.abort()
    async with asyncio.timeout(2):
        await asyncio.wait(tasks.values())
    for name, task in tasks.items():
        assert isinstance(task.exception(), h2pool.H2ConnectionError), name
    slot_error = tasks["start_request (slot)"].exception()
    assert isinstance(slot_error, h2pool.H2PoolError)
    assert slot_error.never_processed
    assert not client.functional


async def test_reset_fails_the_stream_with_its_error_code(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    stream_id = await client.start_request({":method": "POST", ":path": "/"})
    await requests_seen(conn, 1)
    waiting = asyncio.ensure_future(client.recv_response(stream_id))
    conn.h2.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)
    conn.flush()
    with pytest.raises(h2pool.StreamReset) as reset:
        await waiting
    assert reset.value.error_code == h2pool.ErrorCode.INTERNAL_ERROR
    assert not reset.value.never_processed
    with pytest.raises(h2pool.StreamReset):
        await client.send_data(stream_id, b"late")
    # The connection is unharmed.
    other = await client.start_request(GET, end_stream=True)
    await requests_seen(conn, 1)
    conn.respond(other, b"ok")
    assert await client.read_stream(other, -1) == b"ok"


async def test_refused_stream_is_marked_never_processed(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    stream_id = await client.start_request(GET, end_stream=True)
    await requests_seen(conn, 1)
    conn.h2.reset_stream(stream_id, h2pool.ErrorCode.REFUSED_STREAM)
    conn.flush()
    with pytest.raises(h2pool.StreamRefused) as refused:
        await client.read_stream(stream_id)
    assert refused.value.never_processed


async def test_unusual_but_legal_frames_do_not_disturb_the_connection(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    stream_id = await client.start_request(GET, end_stream=True)
    await requests_seen(conn, 1)
    conn.unknown_frame(0xFA, b"whatever", stream_id=stream_id)  # RFC 9113 section 5.5
    conn.unknown_frame(0x10, b"\x00\x00\x00\x01u=1")  # PRIORITY_UPDATE to a client
    conn.write_frame(PriorityFrame(stream_id, depends_on=0, stream_weight=200))
    conn.h2.advertise_alternative_service(b'h2=":8443"', origin=b"http://127.0.0.1")
    await apply_settings(
        conn,
        {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
            h2.settings.SettingCodes.HEADER_TABLE_SIZE: 1024,
            0xFE03: 1,  # grpcio sends this unknown setting
        },
    )
    conn.h2.send_headers(stream_id, [(":status", "103"), ("link", "</a.css>; rel=preload")])
    conn.respond(stream_id, b"final")
    headers = await client.recv_response(stream_id)
    assert dict(headers)[":status"] == "200"
    assert await client.read_stream(stream_id, -1) == b"final"
    assert client.functional
    assert await client.wait_functional() > 0


async def test_priority_schedules_outgoing_data(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    post = {":method": "POST", ":path": "/"}
    blocker = await client.start_request(post)
    # Exhaust the connection window (65,535 bytes until the peer opens it).
    await client.send_data(blocker, b"b" * 65_535)
    low = await client.start_request(post)
    urgent = await client.start_request(post)
    urgent_later = await client.start_request(post)
    shared_a = await client.start_request(post)
    shared_b = await client.start_request(post)
    client.set_priority(low, h2pool.Priority(urgency=6))
    client.set_priority(urgent, h2pool.Priority(urgency=0))
    client.set_priority(urgent_later, h2pool.Priority(urgency=0))
    client.set_priority(shared_a, h2pool.Priority(urgency=2, incremental=True))
    client.set_priority(shared_b, h2pool.Priority(urgency=2, incremental=True))
    size = 2 * 16_384  # two frames each
    order = [low, shared_b, urgent_later, shared_a, urgent]
    sends = [asyncio.ensure_future(client.send_data(s, bytes(size))) for s in order]
    await asyncio.sleep(0.05)
    assert not any(send.done() for send in sends)
    _drain(conn)
    conn.h2.increment_flow_control_window(10 * size)
    conn.flush()
    async with asyncio.timeout(5):
        await asyncio.gather(*sends)
    frames: list[int] = []
    while len(frames) < 10:
        event = await conn.next_event(h2.events.DataReceived)
        if event.stream_id != blocker:
            frames.append(event.stream_id)
    assert frames == [
        urgent, urgent, urgent_later, urgent_later,  # u=0, in stream order
        shared_a, shared_b, shared_a, shared_b,  # u=2, incremental: turns
        low, low,  # u=6
    ]  # fmt: skip


async def apply_settings(conn: RawConnection, settings: dict[int, int]) -> None:
    """Change the peer's settings and wait until the client has acknowledged them."""
    conn.h2.update_settings(settings)
    conn.flush()
    await conn.next_event(h2.events.SettingsAcknowledged)


def _drain(conn: RawConnection) -> list[h2.events.Event]:
    events = []
    while not conn.events.empty():
        events.append(conn.events.get_nowait())
    return events


async def pending_awaits(
    client: h2pool.H2Protocol, conn: RawConnection
) -> tuple[int, dict[str, asyncio.Future[object]]]:
    """Open streams so that every kind of await is pending on the last one.

    The peer allows 2 streams with a 10-byte window: stream A waits for its
    response, stream B has its response and waits for data and trailers while
    its upload waits for window, and a third request waits for a slot.
    """
    conn.h2.update_settings(
        {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10,
        }
    )
    first = await client.start_request(GET, end_stream=True)
    second = await client.start_request({":method": "POST", ":path": "/"})
    await requests_seen(conn, 2)
    conn.respond(second, end_stream=False)
    await client.recv_response(second)
    awaits: dict[str, object] = {
        "recv_response": client.recv_response(first),
        "read_stream": client.read_stream(second),
        "recv_trailers": client.recv_trailers(second),
        "send_data": client.send_data(second, b"x" * 100),
        "start_request": client.start_request(GET),
    }
    tasks = {name: asyncio.ensure_future(aw) for name, aw in awaits.items()}  # type: ignore[call-overload]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in tasks.values())
    return first, tasks


async def test_every_pending_await_fails_on_goaway_above_it(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    _, tasks = await pending_awaits(client, conn)
    conn.goaway(last_stream_id=0)  # nothing was processed
    async with asyncio.timeout(2):
        await asyncio.wait(tasks.values())
    for name, task in tasks.items():
        error = task.exception()
        assert isinstance(error, h2pool.H2PoolError), name
        assert error.never_processed, name
        kind = h2pool.ConnectionClosed if name == "start_request" else h2pool.StreamRefused
        assert isinstance(error, kind), name


async def test_every_pending_stream_await_fails_on_reset(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    first, tasks = await pending_awaits(client, conn)
    slot = tasks.pop("start_request")
    for stream_id in (first, first + 2):
        conn.h2.reset_stream(stream_id, h2pool.ErrorCode.CANCEL)
    conn.flush()
    async with asyncio.timeout(2):
        await asyncio.wait(tasks.values())
        new_stream = await slot  # the resets freed slots
    for name, task in tasks.items():
        error = task.exception()
        assert isinstance(error, h2pool.StreamReset), name
        assert error.error_code == h2pool.ErrorCode.CANCEL
    assert new_stream == first + 4


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 64,  # a frame header announcing 16 MiB, over the advertised maximum
        b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"\x01" * 5,  # SETTINGS of 5 bytes
        b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd",  # DATA on stream 0
    ],
)
async def test_garbage_fails_only_its_own_connection_with_a_clear_error(
    peer: RawPeer, garbage: bytes
) -> None:
    client, conn = await connect(peer)
    bystander, other = await connect(peer)
    stream_id = await client.start_request(GET, end_stream=True)
    kept = await bystander.start_request(GET, end_stream=True)
    await requests_seen(conn, 1)
    await requests_seen(other, 1)
    conn.write_raw(garbage)
    with pytest.raises(h2pool.H2ProtocolError, match="violated HTTP/2") as error:
        await client.recv_response(stream_id)
    assert error.value.error_code in (
        h2pool.ErrorCode.PROTOCOL_ERROR,
        h2pool.ErrorCode.FRAME_SIZE_ERROR,
    )
    assert not client.functional
    goaway = await conn.next_event(h2.events.ConnectionTerminated)
    assert goaway.error_code == error.value.error_code  # the peer is told why
    other.respond(kept, b"unharmed")
    assert await bystander.read_stream(kept, -1) == b"unharmed"


async def test_server_declares_a_silent_client_dead() -> None:
    failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def serve(proto: h2pool.H2Protocol) -> None:
        stream_id, _ = await proto.recv_request()
        try:
            await proto.read_stream(stream_id, -1)
        except h2pool.H2PoolError as exc:
            failed.set_result(exc)

    server = await h2pool.start_server(serve, "127.0.0.1", 0, functional_timeout=0.2)
    port = server.sockets[0].getsockname()[1]
    silent = h2.connection.H2Connection()
    silent.initiate_connection()
    silent.send_headers(
        1, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    )
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(silent.data_to_send())  # a request, then nothing: PINGs go unanswered
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(3):
        error = await failed
    assert isinstance(error, h2pool.ConnectionDead)
    assert asyncio.get_running_loop().time() - started <= 0.2 * 4
    writer.close()
    server.close()
    await server.wait_closed()


async def test_streams_cut_off_by_a_drain_say_so(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    s1, s3 = [await client.start_request(GET, end_stream=True) for _ in range(2)]
    await requests_seen(conn, 2)
    conn.goaway(last_stream_id=s3)  # both allowed to finish...
    await eventually(lambda: client.goaway_received)
    conn.abort()  # ...but the peer closes without finishing them
    for stream_id in (s1, s3):
        with pytest.raises(h2pool.DrainInterrupted) as cut:
            await client.recv_response(stream_id)
        assert isinstance(cut.value, h2pool.ConnectionLost)
        assert not cut.value.never_processed  # at or below last_stream_id: maybe processed
        assert cut.value.stream_id == stream_id
