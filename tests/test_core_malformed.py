"""Malformed responses are stream errors (RFC 9113 section 8.1.1), not crashes.

A scripted peer answers with a ``:status`` that is not a three-digit code in
100..599; the client must reset that one stream (PROTOCOL_ERROR), free its
slot, raise a typed H2ProtocolError and keep the connection serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h2.errors
import h2.events
import pytest

import h2pool
from tests.rawpeer import RawConnection, RawPeer, raw_peer

GET = {":method": "GET", ":path": "/"}


@pytest.fixture
async def peer() -> AsyncIterator[RawPeer]:
    async with raw_peer() as peer:
        yield peer


async def connect(peer: RawPeer) -> tuple[h2pool.H2Protocol, RawConnection]:
    client = await h2pool.open_connection("127.0.0.1", peer.port, concurrency=10)
    conn = await peer.accept()
    conn.h2.config.validate_outbound_headers = False  # let it send what it is told
    conn.h2.config.normalize_outbound_headers = False
    return client, conn


def answer(
    conn: RawConnection, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = True
) -> None:
    conn.h2.send_headers(stream_id, headers, end_stream=end_stream)
    conn.flush()


BAD_STATUSES: list[list[tuple[bytes, bytes]]] = [
    [(b":status", b"abc")],
    [(b":status", b"9999999999")],
    [(b":status", b"20")],
    [(b":status", b"600")],
    [(b":status", b"099")],
    [(b":status", b" 200")],
    [(b":status", b"")],
    [(b"content-type", b"text/plain")],  # no :status at all
    [(b":status", b"200"), (b":status", b"200")],
]


@pytest.mark.parametrize("headers", BAD_STATUSES, ids=lambda h: repr(h)[:40])
async def test_bad_status_is_a_stream_error(
    peer: RawPeer, headers: list[tuple[bytes, bytes]]
) -> None:
    client, conn = await connect(peer)
    stream_id = await client.start_request(GET, end_stream=True)
    await conn.next_event(h2.events.RequestReceived)
    # Without END_STREAM the stream stays open, so the client must reset it.
    answer(conn, stream_id, headers, end_stream=False)
    with pytest.raises(h2pool.H2ProtocolError) as raised:
        await client.recv_response(stream_id)
    error = raised.value
    assert error.stream_id == stream_id
    assert not error.never_processed
    assert str(stream_id) in str(error)
    assert ":status" in str(error)
    reset = await conn.next_event(h2.events.StreamReset)
    assert reset.stream_id == stream_id
    assert reset.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert client.open_streams == 0
    assert client.functional
    # The connection goes on serving.
    good = await client.start_request(GET, end_stream=True)
    await conn.next_event(h2.events.RequestReceived)
    conn.respond(good, b"ok")
    assert dict(await client.recv_response(good))[":status"] == "200"
    assert await client.read_stream(good, -1) == b"ok"


async def test_bad_status_on_a_finished_stream_frees_its_slot(peer: RawPeer) -> None:
    # With END_STREAM both halves are closed: nothing may be sent on the
    # stream any more (RFC 9113 section 5.1), but the response is still refused.
    client, conn = await connect(peer)
    stream_id = await client.start_request(GET, end_stream=True)
    await conn.next_event(h2.events.RequestReceived)
    answer(conn, stream_id, [(b":status", b"abc")], end_stream=True)
    with pytest.raises(h2pool.H2ProtocolError, match="abc"):
        await client.recv_response(stream_id)
    assert client.open_streams == 0
    assert client.functional


async def test_bad_status_value_is_named(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    stream_id = await client.start_request(GET, end_stream=True)
    await conn.next_event(h2.events.RequestReceived)
    answer(conn, stream_id, [(b":status", b"9999999999")])
    with pytest.raises(h2pool.H2ProtocolError, match="9999999999"):
        await client.recv_response(stream_id)


async def test_two_hundred_bad_answers_leave_the_connection_serving(peer: RawPeer) -> None:
    client, conn = await connect(peer)

    async def serve() -> None:
        while True:
            event = await conn.next_event(h2.events.RequestReceived, timeout=10)
            answer(conn, event.stream_id, [(b":status", b"abc")])

    server = asyncio.create_task(serve())

    async def one() -> None:
        stream_id = await client.start_request(GET, end_stream=True)
        with pytest.raises(h2pool.H2ProtocolError):
            await client.recv_response(stream_id)

    await asyncio.gather(*(one() for _ in range(200)))
    server.cancel()
    assert client.open_streams == 0
    good = await client.start_request(GET, end_stream=True)
    await conn.next_event(h2.events.RequestReceived)
    conn.respond(good, b"ok")
    assert dict(await client.recv_response(good))[":status"] == "200"
    assert client.functional


async def test_informational_then_bad_final_status(peer: RawPeer) -> None:
    client, conn = await connect(peer)
    stream_id = await client.start_request(GET, end_stream=True)
    await conn.next_event(h2.events.RequestReceived)
    conn.h2.send_headers(stream_id, [(b":status", b"103")])
    answer(conn, stream_id, [(b":status", b"2xx")])
    with pytest.raises(h2pool.H2ProtocolError, match="2xx"):
        await client.recv_response(stream_id)
    assert client.open_streams == 0
