"""``h2pool.rpc`` streams against grpcio's server: client streams, bidirectional calls,
flow control both ways, and cancellation of every kind of call mid-stream.

Servers: ``GrpcTestServer`` in a thread, or ``GrpcServerProcess`` where the client's own
memory is measured (the server's allocations must not count).
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

import h2pool
from h2pool import rpc
from tests.peers import GrpcProcessFactory, GrpcTestServer, Rpc
from tests.rpc_support import Md, multicallable, open_streams, outcome, start, streams_freed

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]

MiB = 1024 * 1024


def channel_to(target: str, **kwargs: Any) -> rpc.Channel:
    return rpc.insecure_channel(target, **kwargs)


# --- Client streams ----------------------------------------------------------------------------


async def test_client_stream_of_many_messages(grpc_server: GrpcTestServer) -> None:
    async def produce() -> AsyncIterator[bytes]:
        for index in range(2000):
            yield bytes([index % 256]) * (index % 50)

    total = sum(index % 50 for index in range(2000))
    summary: Md = (("x-reply", "summary"),)
    async with channel_to(grpc_server.target) as channel:
        upload = channel.stream_unary(Rpc.CLIENT_STREAM)
        assert await upload(produce(), metadata=summary) == f"2000 {total}".encode()
        big = [bytes([index]) * (MiB + index) for index in range(8)]
        assert await upload(big, metadata=summary) == f"8 {sum(map(len, big))}".encode()


async def test_write_after_done_writing_and_iterator_misuse(grpc_server: GrpcTestServer) -> None:
    async with channel_to(grpc_server.target) as channel:
        upload = channel.stream_unary(Rpc.CLIENT_STREAM)
        call = upload()
        await call.write(b"a")
        await call.done_writing()
        with pytest.raises(h2pool.H2PoolError):
            await call.write(b"b")
        assert await call == b"a"
        with pytest.raises(h2pool.H2PoolError):
            await call.write(b"c")  # the call has ended
        iterated = upload(iter([b"x"]))
        with pytest.raises(h2pool.H2PoolError):
            await iterated.write(b"y")  # the iterator is the call's only writer
        with pytest.raises(h2pool.H2PoolError):
            await iterated.done_writing()
        assert await iterated == b"x"


@pytest.mark.parametrize("method", [Rpc.CLIENT_STREAM, Rpc.BIDI])
async def test_request_iterator_raising_ends_the_call(
    grpc_server: GrpcTestServer, method: Rpc
) -> None:
    async def produce() -> AsyncIterator[bytes]:
        yield b"first"
        raise RuntimeError("the producer broke")

    async with channel_to(grpc_server.target) as channel:
        call = multicallable(channel, method)(produce())
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        assert caught.value.code() is rpc.StatusCode.CANCELLED
        assert "the producer broke" in caught.value.details()
        await streams_freed(channel)


async def test_error_status_stops_the_writer(grpc_server: GrpcTestServer) -> None:
    metadata: Md = (("x-status", "FAILED_PRECONDITION"), ("x-after", "1"))
    async with channel_to(grpc_server.target) as channel:
        call = channel.stream_stream(Rpc.BIDI)(metadata=metadata)
        await call.write(b"a")
        assert await call.read() == b"a"
        with pytest.raises(rpc.RpcError) as caught:
            await call.read()
        assert caught.value.code() is rpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(rpc.RpcError) as caught:
            await call.write(b"b")
        assert caught.value.code() is rpc.StatusCode.FAILED_PRECONDITION
        await streams_freed(channel)


# --- Bidirectional -----------------------------------------------------------------------------


async def test_bidi_interleaves_reads_and_writes(grpc_server: GrpcTestServer) -> None:
    async with channel_to(grpc_server.target) as channel:
        call = channel.stream_stream(Rpc.BIDI)(metadata=(("x-echo-a", "1"),))
        await call.write(b"1")
        await call.write(b"2")
        assert await call.read() == b"1"
        await call.write(b"3")
        assert await call.read() == b"2"
        assert await call.read() == b"3"
        # A reader waiting while the writer writes: both progress on one stream.
        reader = asyncio.ensure_future(call.read())
        await asyncio.sleep(0)
        assert not reader.done()
        await call.write(b"4")
        assert await reader == b"4"
        # Large messages both ways at once (more than the windows: both sides must flow).
        big = [bytes([index]) * (3 * MiB) for index in range(4)]

        async def write_all() -> None:
            for message in big:
                await call.write(message)
            await call.done_writing()

        writer = asyncio.ensure_future(write_all())
        received = [message async for message in call]
        await writer
        assert received == big
        assert await call.code() is rpc.StatusCode.OK
        assert (await call.trailing_metadata())["x-trailer-a"] == "1"


async def test_bidi_with_an_async_iterator_paced_by_responses(grpc_server: GrpcTestServer) -> None:
    answered = asyncio.Queue[bytes]()

    async def ping_pong() -> AsyncIterator[bytes]:
        yield b"0"
        for index in range(1, 20):
            previous = await answered.get()  # each request waits for the previous echo
            assert previous == b"%d" % (index - 1)
            yield b"%d" % index

    async with channel_to(grpc_server.target) as channel:
        call = channel.stream_stream(Rpc.BIDI)(ping_pong())
        async for message in call:
            answered.put_nowait(message)
        assert answered.qsize() == 1  # the last echo: all 20 went both ways in turn
        assert await call.code() is rpc.StatusCode.OK


# --- Flow control ------------------------------------------------------------------------------


async def test_slow_reader_of_64_mib_bounds_memory(
    grpc_process_factory: GrpcProcessFactory,
) -> None:
    """A 64 MiB server stream read slowly: the client holds a few MiB at most.

    Measured with tracemalloc in this process (the server is a child process, so only the
    client's allocations count): its peak while the whole stream is read is what the
    client buffered, and flow control (the 4 MiB stream window) must keep it far below
    the 64 MiB the server wants to send. The server's count of messages it could send while
    the reader paused shows the same from the other side.
    """
    server = grpc_process_factory()
    metadata: Md = (("x-count", "64"), ("x-size", str(MiB)))
    async with channel_to(server.target) as channel:
        await channel.unary_unary(Rpc.UNARY)(b"warm")  # connection set up before measuring
        tracemalloc.start()
        try:
            call = start(channel, Rpc.SERVER_STREAM, metadata)
            assert await call.read() == bytes([0]) * MiB
            await asyncio.sleep(0.5)  # a slow reader: the server is held back meanwhile
            held_back = server.stats()["messages"][Rpc.SERVER_STREAM]
            for index in range(1, 64):
                message = await call.read()
                assert message == bytes([index]) * MiB
                del message
                if index % 8 == 0:
                    await asyncio.sleep(0.02)
            assert await call.read() is rpc.EOF
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert await call.code() is rpc.StatusCode.OK
    assert held_back < 16, held_back
    assert peak < 16 * MiB, peak


async def test_fast_producer_waits_for_window(grpc_server: GrpcTestServer) -> None:
    """A producer of 64 MiB to a server that does not read: it stops well before the end."""
    written = 0
    message = b"p" * MiB

    async def produce() -> AsyncIterator[bytes]:
        nonlocal written
        for _ in range(64):
            yield message
            written += 1

    # The server reads nothing for 3 s (x-sleep), then everything. Its silence is no reason
    # for health PINGs here (grpcio's default ping policy is another test's subject).
    metadata: Md = (("x-sleep", "3"), ("x-reply", "summary"))
    async with channel_to(grpc_server.target, functional_timeout=10.0) as channel:
        call = channel.stream_unary(Rpc.CLIENT_STREAM)(produce(), metadata=metadata)
        await asyncio.to_thread(grpc_server.wait_for_calls, Rpc.CLIENT_STREAM, 1)
        # Wait until the producer stops making progress (no event says "blocked").
        async with asyncio.timeout(10):
            while True:
                before = written
                await asyncio.sleep(0.3)
                if written == before:
                    break
        assert written < 32, written  # held by the server's windows, not buffered here
        assert not call.done()
        assert await call == f"64 {64 * MiB}".encode()
    assert written == 64


async def test_fast_writer_waits_for_window(grpc_server: GrpcTestServer) -> None:
    """``write()`` returns only as the window lets the message go."""
    metadata: Md = (("x-never", "1"),)
    async with channel_to(grpc_server.target) as channel:
        call = channel.stream_unary(Rpc.CLIENT_STREAM)(metadata=metadata)
        written = 0

        async def write_all() -> None:
            nonlocal written
            while written < 64:
                await call.write(b"w" * MiB)
                written += 1

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(write_all(), 3)
        assert written < 32, written
        # The write that timed out was abandoned: cancelling a write cancels the call.
        assert call.cancelled()
        assert await call.code() is rpc.StatusCode.CANCELLED


# --- Cancellation mid-stream -------------------------------------------------------------------

# Each call is mid-stream when cancelled: headers received, the server's handler waiting (not
# in its request iterator, which a reset may end as if the stream ended, so that the server's
# count of cancelled calls would miss it, with grpc.aio's cancel too).
MID_STREAM: dict[Rpc, Md] = {
    Rpc.UNARY: (("x-never", "1"), ("x-headers-first", "1")),
    Rpc.SERVER_STREAM: (("x-count", "1000"), ("x-interval", "0.05")),
    Rpc.CLIENT_STREAM: (("x-headers-first", "1"), ("x-sleep", "30")),
    Rpc.BIDI: (("x-interval", "30"),),  # the second echo waits
}


async def _mid_stream(channel: rpc.Channel, server: GrpcTestServer, method: Rpc) -> Any:
    """A call of ``method`` with headers and some messages exchanged, not ended."""
    metadata = MID_STREAM[method]
    if method in (Rpc.UNARY, Rpc.SERVER_STREAM):
        call = multicallable(channel, method)(b"m", metadata=metadata)
    else:
        call = multicallable(channel, method)(metadata=metadata)
        await call.write(b"m")
        await call.write(b"n")
    if method is Rpc.UNARY:
        # Read through Pool.request: its headers come with its end, as in grpc.aio.
        await asyncio.to_thread(server.wait_for_calls, method, 1)
    else:
        await call.initial_metadata()
    if method in (Rpc.SERVER_STREAM, Rpc.BIDI):
        assert await call.read() == b"m"
    return call


@pytest.mark.parametrize("method", list(Rpc))
async def test_cancel_mid_stream(grpc_server: GrpcTestServer, method: Rpc) -> None:
    ended: list[Any] = []
    async with channel_to(grpc_server.target) as channel:
        call = await _mid_stream(channel, grpc_server, method)
        call.add_done_callback(ended.append)
        assert open_streams(channel) == 1
        assert call.cancel()
        assert call.cancelled()
        assert call.done()
        assert ended == [call]
        assert not call.cancel()  # once
        if method is not Rpc.UNARY:
            # The stream is reset by cancel() itself: its slot is free at once.
            assert open_streams(channel) == 0
        await streams_freed(channel)
        assert channel.pool.stats().active == 0
        assert await call.code() is rpc.StatusCode.CANCELLED
        with pytest.raises(asyncio.CancelledError):  # as grpc.aio: the call was cancelled here
            await outcome(call)
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1, 10.0, method)
        # The channel goes on.
        assert await channel.unary_unary(Rpc.UNARY)(b"after") == b"after"


@pytest.mark.parametrize("method", list(Rpc))
async def test_cancel_the_awaiting_task(grpc_server: GrpcTestServer, method: Rpc) -> None:
    async with channel_to(grpc_server.target) as channel:
        call = await _mid_stream(channel, grpc_server, method)
        task = asyncio.ensure_future(outcome(call))
        await asyncio.sleep(0)  # the task is waiting on the call
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert call.cancelled()
        assert await call.code() is rpc.StatusCode.CANCELLED
        await streams_freed(channel)
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1, 10.0, method)


@pytest.mark.parametrize("method", list(Rpc))
async def test_cancel_before_the_response(grpc_server: GrpcTestServer, method: Rpc) -> None:
    async with channel_to(grpc_server.target) as channel:
        call = start(channel, method, (("x-never", "1"),))
        await asyncio.to_thread(grpc_server.wait_for_calls, method, 1)
        assert call.cancel()
        assert await call.code() is rpc.StatusCode.CANCELLED
        await streams_freed(channel)
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1, 10.0, method)


async def test_close_cancels_calls_in_flight(grpc_server: GrpcTestServer) -> None:
    channel = channel_to(grpc_server.target)
    calls = [start(channel, method, (("x-never", "1"),)) for method in Rpc]
    await asyncio.to_thread(grpc_server.wait_for_calls, None, len(calls))
    await channel.close()
    for call in calls:
        assert await call.code() is rpc.StatusCode.CANCELLED
    await asyncio.to_thread(grpc_server.wait_for_cancelled, len(calls), 10.0)


@pytest.mark.parametrize("method", list(Rpc))
async def test_cancel_at_once(grpc_server: GrpcTestServer, method: Rpc) -> None:
    async with channel_to(grpc_server.target) as channel:
        await channel.unary_unary(Rpc.UNARY)(b"warm")
        # Cancelled the moment it is made.
        call = start(channel, method, (("x-never", "1"),))
        assert call.cancel()
        assert await call.code() is rpc.StatusCode.CANCELLED
        # The task awaiting a call cancelled before the call's own work ever ran.
        made: list[Any] = []

        async def make_and_wait() -> list[Any]:
            made.append(start(channel, method, (("x-never", "1"),)))
            return await outcome(made[0])

        task = asyncio.ensure_future(make_and_wait())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert made[0].cancelled()
        async with asyncio.timeout(5):
            assert await made[0].code() is rpc.StatusCode.CANCELLED
        await streams_freed(channel)
        assert channel.pool.stats().active == 0
