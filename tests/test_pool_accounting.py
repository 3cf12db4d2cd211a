"""Stream slots at the pool level: each request released once, each slot counted once.

Regression tests for issue 7: unread bodies, cancelled requests and bulk cancellation once
drove the open-stream counts negative, after which the pool sent more streams than the
server's MAX_CONCURRENT_STREAMS allowed.
"""

from __future__ import annotations

import asyncio
import random

import pytest

import h2pool
from tests.servers import Server

pytestmark = pytest.mark.timeout(30)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


async def small(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
    """Answer 200 with a small body at once."""
    await proto.start_response(stream_id, {":status": "200"})
    await proto.send_data(stream_id, b"x" * 100, end_stream=True)


def assert_idle(pool: h2pool.Pool) -> None:
    stats = pool.stats()
    assert (stats.active, stats.pending) == (0, 0), stats
    assert [ep.open_streams for ep in stats.endpoints] == [0] * len(stats.endpoints), stats


async def test_unread_bodies_and_cancellations_leave_the_counts_exact() -> None:
    async with (
        Server(small, concurrency=10) as server,
        h2pool.Pool(url(server.port), max_connections=1) as pool,
    ):
        # 30 streams whose body arrived in full but is never read.
        for _ in range(30):
            async with pool.stream("GET", "/") as response:
                assert response.status_code == 200
                await asyncio.sleep(0.001)  # let the whole body arrive unread
        assert_idle(pool)
        # A cancelled request().
        task = asyncio.ensure_future(pool.request("GET", "/"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert_idle(pool)
        # 5,000 requests cancelled in bulk, at random points of their life.
        rng = random.Random(5)
        loop = asyncio.get_running_loop()
        tasks = [asyncio.ensure_future(pool.request("GET", "/")) for _ in range(5000)]
        for task in tasks:
            loop.call_later(rng.random() * 0.05, task.cancel)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)
        assert_idle(pool)
        # The server allows 10 streams: 40 concurrent requests all succeed, none refused.
        responses = await asyncio.gather(*(pool.request("GET", "/") for _ in range(40)))
        assert [r.status_code for r in responses] == [200] * 40
        assert_idle(pool)


async def test_a_request_waiting_for_a_slot_takes_it_once_and_gives_it_back_once() -> None:
    release = asyncio.Event()

    async def held(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await release.wait()
        await small(proto, stream_id, _)

    async with (
        Server(held, concurrency=2) as server,
        h2pool.Pool(url(server.port), max_connections=1) as pool,
    ):
        tasks = [asyncio.ensure_future(pool.request("GET", "/")) for _ in range(6)]
        await asyncio.sleep(0.1)
        stats = pool.stats()
        assert (stats.active, stats.pending) == (2, 4)
        tasks[3].cancel()  # a waiter leaves the queue
        await asyncio.sleep(0)
        assert pool.stats().pending == 3
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(r, h2pool.Response) for r in results) == 5
        assert_idle(pool)
