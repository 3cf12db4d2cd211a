"""Regression tests: every stream is counted open once and closed once.

A stream whose response fully arrived but whose body was not read used to be
closed a second time by ``reset_stream``, driving ``open_streams`` negative
and making the client exceed the server's MAX_CONCURRENT_STREAMS.
"""

from __future__ import annotations

import asyncio
import math
import random

import pytest

import h2pool
from tests.servers import Server, hello, hold
from tests.waiting import eventually

GET = {":method": "GET", ":path": "/"}


async def get_unread(client: h2pool.H2Protocol) -> int:
    """GET whose response arrives in full and is left unread; return the stream id."""
    stream_id = await client.start_request(GET, end_stream=True)
    await client.recv_response(stream_id)
    await eventually(lambda: client.open_streams == 0)  # END_STREAM received: closed
    return stream_id


async def test_reset_of_an_unread_complete_response_frees_nothing_twice() -> None:
    async with Server(hello) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        stream_id = await get_unread(client)
        client.reset_stream(stream_id)
        assert client.open_streams == 0
        client.reset_stream(stream_id)  # again: still nothing to free
        assert client.open_streams == 0
        await client.shutdown()


async def test_unread_streams_then_a_burst_respects_the_servers_limit() -> None:
    async with Server(hello, concurrency=10) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        for _ in range(30):
            client.reset_stream(await get_unread(client))
        assert client.open_streams == 0
        assert client.max_streams == 10

        async def fetch(n: int) -> bytes:
            stream_id = await client.start_request({**GET, ":path": f"/{n}"}, end_stream=True)
            assert client.open_streams <= 10
            await client.recv_response(stream_id)
            return await client.read_stream(stream_id, -1)

        bodies = await asyncio.gather(*(fetch(n) for n in range(40)))
        assert bodies == [f"hello /{n}".encode() for n in range(40)]
        assert client.open_streams == 0
        await client.shutdown()


async def test_bulk_cancellation_leaves_exact_counts() -> None:
    async with Server(hello, concurrency=50) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)

        async def request(n: int) -> None:
            stream_id = await client.start_request({**GET, ":path": f"/{n}"}, end_stream=True)
            try:
                await client.recv_response(stream_id)
                if n % 3:
                    await client.read_stream(stream_id, -1)
                else:
                    await asyncio.sleep(1)  # left unread: cancelled with the body waiting
            finally:
                client.reset_stream(stream_id)  # what a caller's cleanup does

        rng = random.Random(7)
        tasks = [asyncio.create_task(request(n)) for n in range(3000)]
        for _ in range(40):
            await asyncio.sleep(0.005)
            for task in rng.sample(tasks, 60):
                task.cancel()
            assert 0 <= client.open_streams <= 50
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await eventually(lambda: client.open_streams == 0)
        assert client.open_streams == 0
        stream_id = await client.start_request(GET, end_stream=True)
        assert dict(await client.recv_response(stream_id))[":status"] == "200"
        assert client.open_streams in (0, 1)
        await client.read_stream(stream_id, -1)
        await client.shutdown()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, 0.0])
@pytest.mark.parametrize("name", ["functional_timeout", "ping_interval"])
async def test_non_finite_or_non_positive_durations_are_rejected(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        h2pool.H2Protocol(client_side=True, **{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["functional_timeout", "ping_interval"])
async def test_non_number_durations_are_rejected(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        h2pool.H2Protocol(client_side=True, **{name: "5"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=name):
        h2pool.H2Protocol(client_side=True, **{name: True})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
async def test_bad_connect_timeout_is_rejected_before_connecting(value: float) -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        await h2pool.open_connection("127.0.0.1", 9, connect_timeout=value)


async def test_bad_server_functional_timeout_is_rejected_at_start() -> None:
    with pytest.raises(ValueError, match="functional_timeout"):
        await h2pool.start_server(lambda proto: None, "127.0.0.1", 0, functional_timeout=math.nan)


@pytest.mark.parametrize("value", [math.nan, -1.0, "1"])
async def test_bad_shutdown_timeout_is_rejected(value: object) -> None:
    async with Server(hello) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        with pytest.raises((ValueError, TypeError), match="timeout"):
            await client.shutdown(value)  # type: ignore[arg-type]
        assert client.functional  # a bad argument changes nothing
        await client.shutdown()


async def test_free_slots_counts_what_may_start_without_waiting() -> None:
    release = asyncio.Event()
    async with Server(hold(release), concurrency=3) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        await client.wait_functional()  # the server's SETTINGS are in
        assert client.free_slots == 3
        ids = [await client.start_request(GET, end_stream=True) for _ in range(3)]
        assert client.free_slots == 0
        release.set()
        for stream_id in ids:
            await client.recv_response(stream_id)
        await eventually(lambda: client.free_slots == 3)
        client.send_goaway()
        assert client.free_slots == 0  # draining: nothing may start


async def test_response_headers_as_bytes_or_str() -> None:
    async with Server(hello) as server:
        client = await h2pool.open_connection("127.0.0.1", server.port)
        stream_id = await client.start_request(GET, end_stream=True)
        raw = await client.recv_response_bytes(stream_id)
        assert raw[0] == (b":status", b"200")
        assert (b"content-length", b"7") in raw  # "hello /"
        assert await client.recv_response(stream_id) == [
            (name.decode(), value.decode()) for name, value in raw
        ]
        assert await client.read_stream(stream_id, -1) == b"hello /"
        await client.shutdown()
