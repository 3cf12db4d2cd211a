"""Requests a server refuses as never processed are retried within bounds (gRFC A6).

Regression tests for issue 7: a server refusing every request (REFUSED_STREAM, or GOAWAY with
last_stream_id 0) once got 17 attempts per request with no delay. Now each request gets one
immediate transparent retry, then the backoff, ``RetryPolicy.max_attempts`` and its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h2.events
import pytest

import h2pool
from tests.rawpeer import RawConnection, RawPeer, raw_peer
from tests.servers import Server

pytestmark = pytest.mark.timeout(30)

CALLS = 200


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def goaway_on_every_request() -> AsyncIterator[tuple[RawPeer, list[int]]]:
    """A scripted peer answering each request with GOAWAY(last_stream_id=0); counts them."""
    seen: list[int] = []
    tasks: set[asyncio.Task[None]] = set()
    async with raw_peer() as peer:

        async def serve() -> None:
            while True:
                conn = await peer.connections.get()
                task = asyncio.ensure_future(drive(conn))
                tasks.add(task)

        async def drive(conn: RawConnection) -> None:
            sent = False
            while True:
                event = await conn.events.get()
                if isinstance(event, h2.events.RequestReceived):
                    seen.append(event.stream_id)
                    if not sent:
                        conn.goaway(0)
                        sent = True

        acceptor = asyncio.ensure_future(serve())
        try:
            yield peer, seen
        finally:
            acceptor.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(acceptor, *tasks, return_exceptions=True)


async def test_refused_stream_on_every_request_is_bounded() -> None:
    received: list[int] = []

    async def refuse(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        received.append(stream_id)
        proto.reset_stream(stream_id, h2pool.ErrorCode.REFUSED_STREAM)

    retry = h2pool.RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.02)
    async with Server(refuse) as server, h2pool.Pool(url(server.port), retry=retry) as pool:
        results = await asyncio.gather(
            *(pool.request("POST", f"/r{i}", content=b"x") for i in range(CALLS)),
            return_exceptions=True,
        )
    assert all(isinstance(r, h2pool.StreamRefused) for r in results), {type(r) for r in results}
    assert len(received) <= CALLS * (retry.max_attempts + 1)
    error = results[7]
    assert isinstance(error, h2pool.StreamRefused)
    assert error.never_processed
    assert f"POST {url(server.port)}/r7 to 127.0.0.1:{server.port}: " in str(error)
    assert f"127.0.0.1:{server.port}" in str(error)
    assert "never processed" in str(error)


async def test_goaway_zero_on_every_request_is_bounded() -> None:
    retry = h2pool.RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.02)
    async with goaway_on_every_request() as (peer, seen):
        pool = h2pool.Pool(url(peer.port), retry=retry, timeout=10, max_connections=4)
        async with pool:
            results = await asyncio.gather(
                *(pool.request("GET", f"/g{i}") for i in range(CALLS)), return_exceptions=True
            )
    assert all(isinstance(r, h2pool.StreamRefused) for r in results), {type(r) for r in results}
    assert len(seen) <= CALLS * (retry.max_attempts + 1)
    error = results[0]
    assert isinstance(error, h2pool.StreamRefused)
    assert f"GET {url(peer.port)}/g0 to 127.0.0.1:{peer.port}: " in str(error)
    assert f"127.0.0.1:{peer.port}" in str(error)


async def test_the_transparent_retry_goes_to_another_connection_at_once() -> None:
    """One refusal is retried at once (no backoff), even with retries off."""
    refused: list[int] = []

    async def refuse_first(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        if not refused:
            refused.append(stream_id)
            proto.reset_stream(stream_id, h2pool.ErrorCode.REFUSED_STREAM)
            return
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

    retry = h2pool.RetryPolicy(max_attempts=1)
    async with Server(refuse_first) as server, h2pool.Pool(url(server.port), retry=retry) as pool:
        response = await pool.request("POST", "/", content=b"once")
        assert response.status_code == 200
        assert len(refused) == 1


async def test_no_retry_is_started_once_the_pool_closes() -> None:
    arrived, release = asyncio.Event(), asyncio.Event()
    received: list[int] = []

    async def reset_later(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        received.append(stream_id)
        arrived.set()
        await release.wait()
        proto.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)  # retryable for a GET

    async with Server(reset_later) as server:
        pool = h2pool.Pool(url(server.port))
        request = asyncio.ensure_future(pool.request("GET", "/"))
        await arrived.wait()
        closing = asyncio.ensure_future(pool.aclose())
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(h2pool.PoolClosed):
            await request
        await closing
    assert len(received) == 1
