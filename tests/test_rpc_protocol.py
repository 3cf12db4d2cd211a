"""``h2pool.rpc`` against peers that grpcio cannot play: what goes on the wire, answers that
are not gRPC, resets, missing statuses, odd DATA framing; and a crashed grpcio server.

The scripted peer is tests/rawpeer.py (plain h2, frames written as the test says); the crash
is ``GrpcServerProcess.kill()`` (SIGKILL: the kernel resets the connections).
"""

from __future__ import annotations

import asyncio
import gzip
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import h2.events
import pytest
from h2.errors import ErrorCodes

from h2pool import rpc
from tests.peers import GrpcProcessFactory, Rpc, frame_message
from tests.rawpeer import RawConnection, RawPeer, raw_peer
from tests.rpc_support import outcome, start, streams_freed

pytestmark = [pytest.mark.timeout(30)]

GRPC_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
OK_TRAILERS = [("grpc-status", "0")]


@pytest.fixture
async def peer() -> AsyncIterator[RawPeer]:
    async with raw_peer() as running:
        yield running


@pytest.fixture
async def channel(peer: RawPeer) -> AsyncIterator[rpc.Channel]:
    async with rpc.insecure_channel(f"127.0.0.1:{peer.port}") as opened:
        yield opened


async def next_call(
    peer: RawPeer, conn: RawConnection | None = None
) -> tuple[Any, int, dict[str, str]]:
    """The connection, stream id and request headers of the next call the peer gets."""
    if conn is None:
        conn = await peer.accept()
    event = await conn.next_event(h2.events.RequestReceived)
    assert event.stream_id is not None
    headers = {str(name): str(value) for name, value in event.headers or ()}
    return conn, event.stream_id, headers


async def request_body(conn: RawConnection, stream_id: int) -> bytes:
    """The request body of ``stream_id``, up to its END_STREAM."""
    body = b""
    async with asyncio.timeout(5):
        while True:
            event = await conn.events.get()
            if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                assert event.data is not None
                body += event.data
                conn.h2.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                conn.flush()
            if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                return body


def answer(
    conn: RawConnection,
    stream_id: int,
    chunks: list[bytes],
    headers: list[tuple[str, str]] = GRPC_HEADERS,
    trailers: list[tuple[str, str]] | None = OK_TRAILERS,
) -> None:
    """Response headers, one DATA frame per chunk, then trailers (or END_STREAM on the data)."""
    conn.h2.send_headers(stream_id, headers)
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        conn.h2.send_data(stream_id, chunk, end_stream=last and trailers is None)
    if trailers is not None:
        conn.h2.send_headers(stream_id, trailers, end_stream=True)
    elif not chunks:
        conn.h2.end_stream(stream_id)
    conn.flush()


# --- The request on the wire -------------------------------------------------------------------


async def test_request_on_the_wire(peer: RawPeer, channel: rpc.Channel) -> None:
    call = channel.unary_unary(Rpc.UNARY)(
        b"hello", timeout=30, metadata=(("x-a", "1"), ("x-b-bin", b"\x00\xff"))
    )
    conn, stream_id, headers = await next_call(peer)
    assert headers[":method"] == "POST"
    assert headers[":path"] == Rpc.UNARY
    assert headers[":scheme"] == "http"
    assert headers["content-type"] == "application/grpc"
    assert headers["te"] == "trailers"
    assert headers["user-agent"].startswith("h2pool-rpc/")
    assert "gzip" in headers["grpc-accept-encoding"]
    assert headers["x-a"] == "1"
    assert headers["x-b-bin"] == "AP8"  # base64 without padding
    timeout = headers["grpc-timeout"]
    assert timeout[-1] in "numSMH"
    assert len(timeout) <= 9
    assert "grpc-encoding" not in headers
    assert await request_body(conn, stream_id) == frame_message(b"hello")
    answer(conn, stream_id, [frame_message(b"world")])
    assert await call == b"world"


async def test_compressed_request_on_the_wire(peer: RawPeer) -> None:
    message = b"squeeze me " * 100
    target = f"127.0.0.1:{peer.port}"
    async with rpc.insecure_channel(target, compression=rpc.Compression.Gzip) as channel:
        call = channel.stream_unary(Rpc.CLIENT_STREAM)(iter([message, message]))
        conn, stream_id, headers = await next_call(peer)
        assert headers["grpc-encoding"] == "gzip"
        body = await request_body(conn, stream_id)
        # Both messages flagged compressed, each a gzip member of the message.
        first_flag, first_length = struct.unpack_from(">BI", body)
        assert first_flag == 1
        assert first_length < len(message)
        assert gzip.decompress(body[5 : 5 + first_length]) == message
        answer(conn, stream_id, [frame_message(b"ok")])
        assert await call == b"ok"


# --- Answers that are not gRPC -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, rpc.StatusCode.INTERNAL),
        (401, rpc.StatusCode.UNAUTHENTICATED),
        (403, rpc.StatusCode.PERMISSION_DENIED),
        (404, rpc.StatusCode.UNIMPLEMENTED),
        (429, rpc.StatusCode.UNAVAILABLE),
        (502, rpc.StatusCode.UNAVAILABLE),
        (503, rpc.StatusCode.UNAVAILABLE),
        (504, rpc.StatusCode.UNAVAILABLE),
        (500, rpc.StatusCode.UNKNOWN),
        (302, rpc.StatusCode.UNKNOWN),
    ],
)
@pytest.mark.parametrize("method", [Rpc.UNARY, Rpc.SERVER_STREAM, Rpc.BIDI])
async def test_http_status_mapping(
    peer: RawPeer, channel: rpc.Channel, method: Rpc, status: int, code: rpc.StatusCode
) -> None:
    call = start(channel, method)
    conn, stream_id, _ = await next_call(peer)
    headers = [(":status", str(status)), ("content-type", "text/html")]
    answer(conn, stream_id, [b"<html>no</html>"], headers=headers, trailers=None)
    with pytest.raises(rpc.RpcError) as caught:
        await outcome(call)
    assert caught.value.code() is code
    assert str(status) in caught.value.details()
    await streams_freed(channel)


async def test_http_error_with_grpc_status_wins(peer: RawPeer, channel: rpc.Channel) -> None:
    """A Trailers-Only answer says its status, whatever the HTTP status."""
    call = channel.unary_unary(Rpc.UNARY)(b"x")
    conn, stream_id, _ = await next_call(peer)
    fields = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "5")]
    conn.h2.send_headers(stream_id, [*fields, ("grpc-message", "gone%20away")], end_stream=True)
    conn.flush()
    with pytest.raises(rpc.RpcError) as caught:
        await call
    assert caught.value.code() is rpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "gone away"


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("application/grpc+json", True),
        ("application/grpc;charset=utf-8", True),
        ("Application/GRPC", True),
        ("application/grpcx", False),
        ("application/json", False),
        ("text/html", False),
        (None, False),
    ],
)
@pytest.mark.parametrize("method", [Rpc.UNARY, Rpc.SERVER_STREAM])
async def test_content_type(
    peer: RawPeer, channel: rpc.Channel, method: Rpc, content_type: str | None, accepted: bool
) -> None:
    call = start(channel, method)
    conn, stream_id, _ = await next_call(peer)
    headers = [(":status", "200")]
    if content_type is not None:
        headers.append(("content-type", content_type))
    answer(conn, stream_id, [frame_message(b"pong")], headers=headers)
    if accepted:
        assert await outcome(call) == [b"pong"]
    else:
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        assert caught.value.code() is rpc.StatusCode.UNKNOWN
        assert "content-type" in caught.value.details()
    await streams_freed(channel)


# --- Resets and missing statuses ---------------------------------------------------------------

RESETS = [
    (ErrorCodes.CANCEL, rpc.StatusCode.CANCELLED),
    (ErrorCodes.ENHANCE_YOUR_CALM, rpc.StatusCode.RESOURCE_EXHAUSTED),
    (ErrorCodes.INADEQUATE_SECURITY, rpc.StatusCode.PERMISSION_DENIED),
    (ErrorCodes.INTERNAL_ERROR, rpc.StatusCode.INTERNAL),
    (ErrorCodes.PROTOCOL_ERROR, rpc.StatusCode.INTERNAL),
    (ErrorCodes.FLOW_CONTROL_ERROR, rpc.StatusCode.INTERNAL),
    (ErrorCodes.NO_ERROR, rpc.StatusCode.INTERNAL),
]


@pytest.mark.parametrize(("error_code", "code"), RESETS)
@pytest.mark.parametrize("method", list(Rpc))
async def test_reset_before_headers(
    peer: RawPeer, channel: rpc.Channel, method: Rpc, error_code: int, code: rpc.StatusCode
) -> None:
    call = start(channel, method)
    conn, stream_id, _ = await next_call(peer)
    conn.h2.reset_stream(stream_id, error_code)
    conn.flush()
    with pytest.raises(rpc.RpcError) as caught:
        await outcome(call)
    assert caught.value.code() is code
    assert await call.code() is code
    assert not call.cancelled()  # the server's cancel, not ours
    await streams_freed(channel)


@pytest.mark.parametrize(("error_code", "code"), RESETS)
@pytest.mark.parametrize("method", [Rpc.SERVER_STREAM, Rpc.BIDI])
async def test_reset_mid_stream(
    peer: RawPeer, channel: rpc.Channel, method: Rpc, error_code: int, code: rpc.StatusCode
) -> None:
    call = start(channel, method)
    conn, stream_id, _ = await next_call(peer)
    conn.h2.send_headers(stream_id, GRPC_HEADERS)
    conn.h2.send_data(
        stream_id, frame_message(b"one") + frame_message(b"two")[:3]
    )  # and half a message
    conn.flush()
    assert await call.read() == b"one"
    conn.h2.reset_stream(stream_id, error_code)
    conn.flush()
    with pytest.raises(rpc.RpcError) as caught:
        await call.read()
    assert caught.value.code() is code
    await streams_freed(channel)


async def test_refused_stream_is_unavailable(peer: RawPeer, channel: rpc.Channel) -> None:
    """REFUSED_STREAM: never processed, so retried by the pool; refused every time: UNAVAILABLE."""
    call = channel.unary_unary(Rpc.UNARY)(b"x", timeout=10)
    conn = await peer.accept()

    async def refuse_all() -> None:
        while True:
            _, stream_id, _ = await next_call(peer, conn)
            conn.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            conn.flush()

    refusing = asyncio.ensure_future(refuse_all())
    try:
        with pytest.raises(rpc.RpcError) as caught:
            await call
    finally:
        refusing.cancel()
    assert caught.value.code() is rpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("method", list(Rpc))
@pytest.mark.parametrize("ending", ["trailers-without-status", "data-end-stream", "headers-end"])
async def test_missing_grpc_status(
    peer: RawPeer, channel: rpc.Channel, method: Rpc, ending: str
) -> None:
    call = start(channel, method)
    conn, stream_id, _ = await next_call(peer)
    if ending == "trailers-without-status":
        answer(conn, stream_id, [frame_message(b"pong")], trailers=[("x-other", "1")])
    elif ending == "data-end-stream":
        answer(conn, stream_id, [frame_message(b"pong")], trailers=None)
    else:  # Trailers-Only shape, but no status in it
        conn.h2.send_headers(stream_id, GRPC_HEADERS, end_stream=True)
        conn.flush()
    with pytest.raises(rpc.RpcError) as caught:
        await outcome(call)
    assert caught.value.code() is rpc.StatusCode.UNKNOWN
    assert "grpc-status" in caught.value.details()
    await streams_freed(channel)


async def test_unknown_grpc_status_is_unknown(peer: RawPeer, channel: rpc.Channel) -> None:
    call = channel.unary_unary(Rpc.UNARY)(b"x")
    conn, stream_id, _ = await next_call(peer)
    answer(conn, stream_id, [frame_message(b"pong")], trailers=[("grpc-status", "42")])
    with pytest.raises(rpc.RpcError) as caught:
        await call
    assert caught.value.code() is rpc.StatusCode.UNKNOWN


# --- DATA framing ------------------------------------------------------------------------------

MESSAGES = [b"", b"a", b"bc" * 3, bytes(range(256)) * 40, b"", b"z" * 70_000]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7, 1000, 16_384, None])
@pytest.mark.parametrize("method", [Rpc.SERVER_STREAM, Rpc.BIDI])
async def test_messages_split_and_joined_across_frames(
    peer: RawPeer, channel: rpc.Channel, method: Rpc, size: int | None
) -> None:
    """The messages' bytes cut into DATA frames of ``size`` (None: as many as fit in one)."""
    wire = b"".join(frame_message(message) for message in MESSAGES)
    step = size or 16_384  # the largest frame the client accepts by default
    chunks = [wire[offset : offset + step] for offset in range(0, len(wire), step)]
    call = start(channel, method)
    conn, stream_id, _ = await next_call(peer)
    answer(conn, stream_id, chunks)
    assert await outcome(call) == MESSAGES


@pytest.mark.parametrize("size", [1, 4, 5, 6, None])
async def test_unary_response_split_across_frames(
    peer: RawPeer, channel: rpc.Channel, size: int | None
) -> None:
    wire = frame_message(b"x" * 1000)
    step = size or len(wire)
    chunks = [wire[offset : offset + step] for offset in range(0, len(wire), step)]
    call = channel.unary_unary(Rpc.UNARY)(b"q")
    conn, stream_id, _ = await next_call(peer)
    answer(conn, stream_id, chunks)
    assert await call == b"x" * 1000


@pytest.mark.parametrize("method", list(Rpc))
async def test_truncated_message(peer: RawPeer, channel: rpc.Channel, method: Rpc) -> None:
    call = start(channel, method)
    conn, stream_id, _ = await next_call(peer)
    answer(conn, stream_id, [frame_message(b"whole")[:-1]])
    with pytest.raises(rpc.RpcError) as caught:
        await outcome(call)
    assert caught.value.code() is rpc.StatusCode.INTERNAL


@pytest.mark.parametrize("method", [Rpc.UNARY, Rpc.CLIENT_STREAM])
@pytest.mark.parametrize("count", [0, 2])
async def test_unary_response_needs_one_message(
    peer: RawPeer, channel: rpc.Channel, method: Rpc, count: int
) -> None:
    call = start(channel, method)
    conn, stream_id, _ = await next_call(peer)
    answer(conn, stream_id, [frame_message(b"m")] * count if count else [])
    with pytest.raises(rpc.RpcError) as caught:
        await outcome(call)
    assert caught.value.code() in (rpc.StatusCode.INTERNAL, rpc.StatusCode.UNIMPLEMENTED)


async def test_compressed_message_without_encoding(peer: RawPeer, channel: rpc.Channel) -> None:
    call = channel.unary_stream(Rpc.SERVER_STREAM)(b"x")
    conn, stream_id, _ = await next_call(peer)
    answer(conn, stream_id, [frame_message(b"data", compress=True)])
    with pytest.raises(rpc.RpcError) as caught:
        await outcome(call)
    assert caught.value.code() is rpc.StatusCode.INTERNAL


async def test_compressed_and_plain_messages_mixed(peer: RawPeer, channel: rpc.Channel) -> None:
    call = channel.unary_stream(Rpc.SERVER_STREAM)(b"x")
    conn, stream_id, _ = await next_call(peer)
    headers = [*GRPC_HEADERS, ("grpc-encoding", "gzip")]
    chunks = [frame_message(b"packed", compress=True) + frame_message(b"plain")]
    answer(conn, stream_id, chunks, headers=headers)
    assert await outcome(call) == [b"packed", b"plain"]


# --- A connection lost mid-call ----------------------------------------------------------------


async def test_connection_dropped_mid_stream(peer: RawPeer, channel: rpc.Channel) -> None:
    calls = [start(channel, method) for method in Rpc]
    conn = await peer.accept()
    streams = [(await next_call(peer, conn))[1] for _ in calls]
    conn.h2.send_headers(streams[1], GRPC_HEADERS)
    conn.h2.send_data(streams[1], frame_message(b"first"))
    conn.flush()
    assert await calls[1].read() == b"first"
    conn.abort()
    for call in calls:
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        assert caught.value.code() is rpc.StatusCode.UNAVAILABLE
    await streams_freed(channel)


@pytest.mark.peer
async def test_server_killed_mid_call(grpc_process_factory: GrpcProcessFactory) -> None:
    server = grpc_process_factory()
    async with rpc.insecure_channel(server.target) as channel:
        assert await channel.unary_unary(Rpc.UNARY)(b"up") == b"up"
        never = (("x-never", "1"),)
        calls = [start(channel, method, never) for method in Rpc]
        streaming = start(channel, Rpc.SERVER_STREAM, (("x-count", "1000"), ("x-interval", "0.05")))
        assert await streaming.read() == b"ping"
        await asyncio.to_thread(server.wait_for_calls, None, 6)
        server.kill()
        killed = time.monotonic()
        for call in [*calls, streaming]:
            with pytest.raises(rpc.RpcError) as caught:
                await outcome(call)
            assert caught.value.code() is rpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - killed < 5.0  # noticed from the reset connection, not a timer
        await streams_freed(channel)
