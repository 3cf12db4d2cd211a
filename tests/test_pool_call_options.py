"""Per-request options the gRPC client needs: ``wait_for_ready`` and bodies that can rewind."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

import h2pool
from tests.servers import Server

pytestmark = pytest.mark.timeout(30)


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_wait_for_ready_false_per_request_fails_fast_on_a_waiting_pool() -> None:
    port = closed_port()
    pool = h2pool.Pool(f"http://127.0.0.1:{port}", timeout=20, wait_for_ready=True)
    async with pool:
        started = asyncio.get_running_loop().time()
        with pytest.raises(h2pool.ConnectError) as caught:
            await pool.request("GET", "/", wait_for_ready=False)
        assert asyncio.get_running_loop().time() - started < 5
        assert f"127.0.0.1:{port}" in str(caught.value)
        # The pool's own default still waits (until the request's timeout).
        with pytest.raises(h2pool.RequestTimeout):
            await pool.request("GET", "/", timeout=0.5)


async def test_wait_for_ready_true_per_request_waits_on_a_failing_fast_pool() -> None:
    pool = h2pool.Pool(f"http://127.0.0.1:{closed_port()}", wait_for_ready=False)
    async with pool:
        with pytest.raises(h2pool.ConnectError):
            await pool.request("GET", "/")
        with pytest.raises(h2pool.RequestTimeout):
            await pool.request("GET", "/", timeout=0.5, wait_for_ready=True)


class Messages:
    """A rewindable body: chunks fed from a queue, kept for a replay."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        for chunk in [*chunks, None]:
            self._queue.put_nowait(chunk)
        self._kept: list[bytes] = []
        self._position = 0
        self.rewinds = 0

    @property
    def rewindable(self) -> bool:
        return True

    def rewind(self) -> None:
        self.rewinds += 1
        self._position = 0

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> bytes:
        if self._position < len(self._kept):
            self._position += 1
            return self._kept[self._position - 1]
        chunk = await self._queue.get()
        if chunk is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        self._kept.append(chunk)
        self._position += 1
        return chunk


def refuse_first_after_one_chunk(refused: list[int]) -> Server:
    """A server refusing its first request once the first body chunk arrived; echoing the rest."""

    async def handler(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        if not refused:
            await proto.read_stream(stream_id)  # the first chunk reached the server
            refused.append(stream_id)
            proto.reset_stream(stream_id, h2pool.ErrorCode.REFUSED_STREAM)
            return
        body = await proto.read_stream(stream_id, -1)
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, body, end_stream=True)

    return Server(handler)


async def test_a_refused_streamed_body_that_can_rewind_is_sent_again_whole() -> None:
    refused: list[int] = []
    body = Messages([b"one,", b"two,", b"three"])
    async with (
        refuse_first_after_one_chunk(refused) as server,
        h2pool.Pool(f"http://127.0.0.1:{server.port}") as pool,
    ):
        response = await pool.request("POST", "/", content=body)
    assert response.content == b"one,two,three"
    assert len(refused) == 1
    assert body.rewinds == 1


async def test_a_refused_streamed_body_that_cannot_rewind_is_not_sent_again() -> None:
    refused: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"one,", b"two,", b"three"):
            yield chunk
            await asyncio.sleep(0.01)

    async with (
        refuse_first_after_one_chunk(refused) as server,
        h2pool.Pool(f"http://127.0.0.1:{server.port}") as pool,
    ):
        with pytest.raises(h2pool.StreamRefused) as caught:
            await pool.request("POST", "/", content=chunks())
    assert caught.value.never_processed
    assert len(refused) == 1


async def test_a_request_failing_after_the_response_headers_keeps_them() -> None:
    async def answer(proto: h2pool.H2Protocol, stream_id: int, h: h2pool.HeaderList) -> None:
        path = dict(h)[":path"]
        if path != "/silent":
            await proto.start_response(stream_id, {":status": "200", "x-answer": "early"})
        if path == "/reset":
            proto.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)
            return
        await asyncio.sleep(30)  # the body (or the whole answer) never comes

    async with (
        Server(answer) as server,
        h2pool.Pool(f"http://127.0.0.1:{server.port}") as pool,
    ):
        with pytest.raises(h2pool.RequestTimeout) as timed_out:
            await pool.request("POST", "/stall", content=b"x", timeout=0.3)
        assert timed_out.value.response_headers == [("x-answer", "early")]
        with pytest.raises(h2pool.StreamReset) as reset:
            await pool.request("POST", "/reset", content=b"x")
        assert reset.value.response_headers == [("x-answer", "early")]
        assert reset.value.endpoint == f"127.0.0.1:{server.port}"
        # Before any answer: nothing to keep.
        with pytest.raises(h2pool.RequestTimeout) as nothing:
            await pool.request("GET", "/silent", timeout=0.3)
        assert nothing.value.response_headers is None
