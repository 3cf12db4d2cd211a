"""Failover under faults: real servers behind a fault-injection proxy, killed, blackholed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import h2pool
from tests.faultproxy import FaultProxy
from tests.peers import INDEX_HTML, HypercornFactory, Nghttpd

pytestmark = pytest.mark.peer

FUNCTIONAL_TIMEOUT = 0.5


@contextlib.contextmanager
def backends(docroot: Path, count: int) -> Iterator[list[Nghttpd]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Nghttpd(docroot)) for _ in range(count)]


async def run_load(
    pool: h2pool.Pool, duration: float, workers: int
) -> tuple[list[float], list[BaseException]]:
    """GET /index.html from ``workers`` tasks for ``duration`` s; latencies and failures."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + duration
    latencies: list[float] = []
    failures: list[BaseException] = []

    async def worker() -> None:
        while loop.time() < stop_at:
            started = loop.time()
            try:
                response = await pool.request("GET", "/index.html")
                assert response.content == INDEX_HTML
            except h2pool.H2PoolError as exc:
                failures.append(exc)
            latencies.append(loop.time() - started)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies, failures


async def test_one_backend_blackholed_and_one_killed_mid_run(docroot: Path) -> None:
    with backends(docroot, 3) as (steady, silenced, killed):
        async with FaultProxy(silenced.port) as proxy:
            pool = h2pool.Pool(
                "http://service.test",
                endpoints=[f"127.0.0.1:{steady.port}", proxy.address, f"127.0.0.1:{killed.port}"],
                functional_timeout=FUNCTIONAL_TIMEOUT,
                timeout=10,
            )
            async with pool:
                await pool.start()
                loop = asyncio.get_running_loop()
                loop.call_later(0.8, proxy.blackhole)  # TCP stays up, nothing moves
                loop.call_later(1.6, killed.kill)  # connections reset, new ones refused
                latencies, failures = await run_load(pool, duration=3.5, workers=40)
                stats = {ep.address: ep for ep in pool.stats().endpoints}

    assert failures == []
    assert len(latencies) > 1000
    assert max(latencies) < 4 * FUNCTIONAL_TIMEOUT, max(latencies)
    assert stats[f"127.0.0.1:{steady.port}"].state is h2pool.ConnectivityState.READY
    assert stats[proxy.address].state is not h2pool.ConnectivityState.READY
    assert stats[f"127.0.0.1:{killed.port}"].state is not h2pool.ConnectivityState.READY
    assert "connection dead" in (stats[proxy.address].last_error or "")  # found by the pings


async def test_reset_and_truncated_connections_are_retried(docroot: Path) -> None:
    with backends(docroot, 2) as (steady, flaky):
        async with FaultProxy(flaky.port) as proxy:
            pool = h2pool.Pool(
                "http://service.test",
                endpoints=[f"127.0.0.1:{steady.port}", proxy.address],
                functional_timeout=FUNCTIONAL_TIMEOUT,
                timeout=10,
            )
            async with pool:
                await pool.start()
                loop = asyncio.get_running_loop()
                loop.call_later(0.3, proxy.close_after, 5000)  # connections cut mid-stream
                loop.call_later(0.9, proxy.reset)  # then every connection gets RST
                latencies, failures = await run_load(pool, duration=1.8, workers=20)
    assert failures == []
    assert len(latencies) > 500


async def test_a_slow_endpoint_is_still_served(docroot: Path) -> None:
    with backends(docroot, 1) as (server,):
        async with FaultProxy(server.port) as proxy:
            proxy.delay(0.05)
            async with h2pool.Pool(
                "http://service.test", endpoints=[proxy.address], functional_timeout=0.2
            ) as pool:
                responses = await asyncio.gather(
                    *(pool.request("GET", "/index.html") for _ in range(50))
                )
                assert {r.content for r in responses} == {INDEX_HTML}
                rtt = pool.stats().endpoints[0].rtt
                assert rtt is not None
                assert rtt >= 0.1


async def test_hypercorn_goaway_every_few_requests_fails_no_get(
    hypercorn_factory: HypercornFactory,
) -> None:
    # Hypercorn sends GOAWAY after 20 requests per connection, then never
    # answers the streams still in flight below last_stream_id: the pool's
    # health PING makes it close, and those GETs are retried elsewhere.
    server = hypercorn_factory(keep_alive_max_requests=20)
    async with h2pool.Pool(
        f"http://127.0.0.1:{server.port}", functional_timeout=0.3, timeout=10
    ) as pool:
        paths = [f"/item/{i}" for i in range(600)]
        semaphore = asyncio.Semaphore(15)

        async def get(path: str) -> bytes:
            async with semaphore:
                return (await pool.request("GET", path)).content

        bodies = await asyncio.gather(*(get(path) for path in paths))
    assert bodies == [f"hello {path}".encode() for path in paths]
