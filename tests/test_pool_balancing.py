"""Load balancing and outlier detection on answers, end to end (replicas in other processes)."""

from __future__ import annotations

import asyncio
import collections

import pytest

import h2pool
from h2pool import rpc
from tests.peers.grpc_server import GrpcTestServer
from tests.peers.grpc_service import Rpc
from tests.peers.replica import Replica
from tests.rpc_support import Md, outcome, start

pytestmark = pytest.mark.timeout(60)


async def _spread(pool: h2pool.Pool, requests: int, concurrency: int) -> collections.Counter[str]:
    """Send ``requests`` GETs, ``concurrency`` at a time; count the answers per endpoint."""
    served: collections.Counter[str] = collections.Counter()
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            response = await pool.get("/")
            assert response.status_code == 200
            served[response.endpoint or "?"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return served


async def test_a_slow_replica_gets_little_traffic() -> None:
    # The number: two fast replicas and one answering in 100 ms; of
    # 2,000 requests (20 at a time) the slow one gets well under 10%.
    with Replica() as fast1, Replica() as fast2, Replica(delay=0.1) as slow:
        endpoints = [fast1.address, slow.address, fast2.address]
        async with h2pool.Pool("http://svc.test", endpoints=endpoints) as pool:
            served = await _spread(pool, 2000, 20)
            share = served[slow.address] / 2000
            print(f"p2c: the slow replica served {share:.1%} of 2,000 requests: {dict(served)}")
            assert share < 0.10
            assert await slow.count() == served[slow.address]  # the server's own count
            for stats in pool.stats().endpoints:  # the balancer's view
                assert stats.latency is not None
                assert stats.score is not None
                assert stats.score >= stats.latency


@pytest.mark.parametrize("balancer", ["round_robin", "least_request"])
async def test_the_other_balancers_use_every_replica(balancer: str) -> None:
    with Replica() as first, Replica() as second, Replica() as third:
        endpoints = [first.address, second.address, third.address]
        async with h2pool.Pool(
            "http://svc.test",
            endpoints=endpoints,
            balancer=balancer,  # type: ignore[arg-type]
        ) as pool:
            served = await _spread(pool, 300, 3)
            assert set(served) == set(endpoints)
            if balancer == "round_robin":
                assert max(served.values()) - min(served.values()) <= 3


async def test_a_replica_answering_503_is_ejected_and_says_why() -> None:
    # Envoy's consecutive gateway failures: five 503 in a row eject the
    # replica (for base_time); the other takes every request after that.
    with Replica() as good, Replica(status=503) as bad:
        retry = h2pool.RetryPolicy(max_attempts=1)
        async with h2pool.Pool(
            "http://svc.test",
            endpoints=[good.address, bad.address],
            retry=retry,
            balancer="round_robin",
        ) as pool:
            statuses = [(await pool.get("/")).status_code for _ in range(20)]
            assert statuses.count(503) == 5  # then ejected
            bad_stats = next(ep for ep in pool.stats().endpoints if ep.address == bad.address)
            assert bad_stats.ejected
            assert bad_stats.ejection_reason == "5 gateway errors in a row, the last: status 503"
            responses = [await pool.get("/") for _ in range(20)]
            assert {r.endpoint for r in responses} == {good.address}


async def test_another_answer_resets_the_count() -> None:
    with Replica() as good, Replica(status=503) as bad:
        policy = h2pool.EjectionPolicy(consecutive_gateway_failures=3)
        async with h2pool.Pool(
            "http://svc.test",
            endpoints=[good.address, bad.address],
            ejection=policy,
            retry=h2pool.RetryPolicy(max_attempts=1),
            balancer="round_robin",
        ) as pool:

            async def answers_of_bad(count: int) -> None:
                while count:
                    response = await pool.get("/")
                    count -= response.endpoint == bad.address

            def bad_ejected() -> bool:
                stats = pool.stats().endpoints
                return next(ep.ejected for ep in stats if ep.address == bad.address)

            await answers_of_bad(2)
            await bad.set(status=200)
            await answers_of_bad(1)  # a success: the two 503 are forgotten
            await bad.set(status=503)
            await answers_of_bad(2)
            assert not bad_ejected()
            await answers_of_bad(1)
            assert bad_ejected()


async def test_a_retry_of_a_503_goes_to_another_replica() -> None:
    # Envoy's previous hosts: the replica that answered 503 is avoided by the
    # retry while another can take it (ejection and the budget are off here,
    # so only that rule keeps a retry from landing on the same replica).
    with Replica() as good, Replica(status=503) as bad:
        async with h2pool.Pool(
            "http://svc.test",
            endpoints=[good.address, bad.address],
            retry=h2pool.RetryPolicy(max_attempts=2, statuses=frozenset({503})),
            ejection=h2pool.EjectionPolicy(consecutive_gateway_failures=0),
            retry_budget=None,
        ) as pool:
            responses = [await pool.get("/") for _ in range(40)]
            assert {r.status_code for r in responses} == {200}
            assert {r.endpoint for r in responses} == {good.address}
            assert await good.count() == 40
            assert await bad.count() > 0  # first attempts went there (fast 503s look fast)


async def test_the_last_replica_is_never_ejected() -> None:
    with Replica(status=503) as only:
        async with h2pool.Pool(
            "http://svc.test", endpoints=[only.address], retry=h2pool.RetryPolicy(max_attempts=1)
        ) as pool:
            for _ in range(10):
                assert (await pool.get("/")).status_code == 503
            (stats,) = pool.stats().endpoints
            assert not stats.ejected
            assert stats.ejection_reason is None


def test_a_wrong_balancer_is_one_line() -> None:
    with pytest.raises(ValueError, match=r"^balancer must be one of 'p2c', .*not 'fastest'$"):
        h2pool.Pool("http://svc.test", balancer="fastest")  # type: ignore[arg-type]


@pytest.mark.peer
@pytest.mark.parametrize(
    ("method", "metadata"),
    [
        (Rpc.UNARY, ()),  # Trailers-Only: the status in the response headers
        (Rpc.UNARY, (("x-after", "1"),)),  # the message, then the status in trailers
        (Rpc.SERVER_STREAM, (("x-after", "1"), ("x-count", "1"))),
    ],
)
async def test_grpc_unavailable_counts_as_a_gateway_error(method: Rpc, metadata: Md) -> None:
    # Every call ends UNAVAILABLE (in an HTTP 200 answer): the replica that
    # first answers five in a row is ejected; never both of them.
    with GrpcTestServer() as first, GrpcTestServer() as second:
        addresses = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
        async with rpc.Channel(
            "http://svc.test", endpoints=addresses, balancer="round_robin"
        ) as channel:
            for _ in range(12):
                with pytest.raises(rpc.RpcError) as caught:
                    await outcome(
                        start(channel, method, (("x-status", "UNAVAILABLE"), *metadata)), method
                    )
                assert caught.value.code() is rpc.StatusCode.UNAVAILABLE
            ejected = [ep for ep in channel.pool.stats().endpoints if ep.ejected]
            assert len(ejected) == 1
            assert ejected[0].ejection_reason == (
                "5 gateway errors in a row, the last: gRPC UNAVAILABLE"
            )
