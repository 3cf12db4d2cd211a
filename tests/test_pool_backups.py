"""Backup endpoints and subsetting end to end, against replicas in other processes."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import pytest

import h2pool
from h2pool import ConnectivityState
from tests.peers.replica import Replica
from tests.waiting import eventually


def stats_of(pool: h2pool.Pool, address: str) -> h2pool.EndpointStats:
    return next(ep for ep in pool.stats().endpoints if ep.address == address)


async def test_backups_take_over_when_every_primary_dies_and_hand_back_when_one_returns() -> None:
    with (
        Replica(delay=0.02) as first,
        Replica(delay=0.02) as second,
        Replica(delay=0.02) as backup,
    ):
        primaries = [first.address, second.address]
        async with h2pool.Pool(
            "http://svc.test", endpoints=primaries, backup_endpoints=[backup.address]
        ) as pool:
            served: Counter[str] = Counter()
            returned: Counter[str] = Counter()  # requests started once the primary was back
            stop = asyncio.Event()
            back = asyncio.Event()

            async def client() -> None:
                while not stop.is_set():
                    started_back = back.is_set()
                    response = await pool.get("/")  # every one must succeed
                    assert response.status_code == 200
                    served[response.endpoint] += 1
                    if started_back:
                        returned[response.endpoint] += 1

            clients = [asyncio.ensure_future(client()) for _ in range(8)]
            await eventually(lambda: served[first.address] + served[second.address] > 100)
            assert served[backup.address] == 0
            assert await backup.count() == 0  # never sent to
            idle = stats_of(pool, backup.address)
            assert (idle.state, idle.connections, idle.tier) == (ConnectivityState.IDLE, 0, 1)
            assert {stats_of(pool, a).tier for a in primaries} == {0}

            first.kill()  # mid-run: requests in flight on it
            second.kill()
            await eventually(lambda: served[backup.address] > 100)
            assert stats_of(pool, backup.address).connections >= 1

            await asyncio.to_thread(first.start)  # back on the same port
            await eventually(lambda: stats_of(pool, first.address).connections >= 1, 10.0)
            # Proof of life given: requests go back to the primary, the backup is let go.
            # The backup's requests in flight finish on it (graceful shutdown), then it closes.
            await eventually(lambda: stats_of(pool, backup.address).state is ConnectivityState.IDLE)
            back.set()
            await eventually(lambda: returned[first.address] > 100)
            stop.set()
            await asyncio.gather(*clients)  # re-raises any failed request
            assert returned[backup.address] == 0
            assert await first.count() >= 100


async def test_a_pool_with_backups_never_connects_to_them_while_a_primary_serves() -> None:
    with Replica() as primary, Replica() as backup:
        async with h2pool.Pool(
            "http://svc.test",
            endpoints=[primary.address],
            backup_endpoints=[backup.address],
            min_connections=2,
        ) as pool:
            for _ in range(3):
                await asyncio.gather(*(pool.get("/") for _ in range(50)))
            assert stats_of(pool, primary.address).connections == 2
            assert stats_of(pool, backup.address).state is ConnectivityState.IDLE
            assert await backup.count() == 0


async def test_a_refused_primary_sends_the_first_requests_to_the_backup_until_it_starts() -> None:
    """A fresh pool whose only primary refuses: no request fails (no fail-fast on the tier).

    With ``min_connections=0`` too, the primary is tried again by the pool itself
    (no request is spent on it) and takes the requests once it answers.
    """
    with Replica() as primary, Replica() as backup:
        primary.kill()
        async with h2pool.Pool(
            "http://svc.test",
            endpoints=[primary.address],
            backup_endpoints=[backup.address],
            min_connections=0,
        ) as pool:
            responses = await asyncio.gather(*(pool.get("/") for _ in range(20)))
            assert {r.endpoint for r in responses} == {backup.address}
            assert stats_of(pool, primary.address).state is ConnectivityState.TRANSIENT_FAILURE
            await asyncio.to_thread(primary.start)
            await eventually(lambda: stats_of(pool, primary.address).connections == 1, 10.0)
            responses = await asyncio.gather(*(pool.get("/") for _ in range(20)))
            assert {r.endpoint for r in responses} == {primary.address}
            await eventually(lambda: stats_of(pool, backup.address).state is ConnectivityState.IDLE)


@pytest.mark.timeout(120)  # twelve processes to start on a loaded machine
async def test_a_pool_with_a_subset_connects_to_that_many_replicas_only() -> None:
    replicas = [Replica(startup_timeout=30.0) for _ in range(12)]
    try:
        # In parallel: each process takes a second or so to import h2pool.
        await asyncio.gather(*(asyncio.to_thread(replica.start) for replica in replicas))
        fleet = [replica.address for replica in replicas]
        async with h2pool.Pool("http://svc.test", endpoints=fleet, subset_size=3) as pool:
            members = {ep.address for ep in pool.stats().endpoints}
            assert len(members) == 3
            assert members <= set(fleet)
            # min_connections: one connection to each member, none to the others.
            await eventually(lambda: all(ep.connections for ep in pool.stats().endpoints))
            responses = await asyncio.gather(*(pool.get("/") for _ in range(60)))
            used = {r.endpoint for r in responses}
            assert used == members  # spread over the subset
            counts = await asyncio.gather(*(replica.count() for replica in replicas))
            assert sum(1 for count in counts if count) == 3
            assert sum(counts) == 60
    finally:
        for replica in replicas:
            replica.close()


class Resolver:
    """The event loop's ``getaddrinfo`` answering ``ips`` (or failing while ``down``)."""

    def __init__(self, *ips: str) -> None:
        self.ips = list(ips)
        self.down = False

    async def __call__(self, host: str, port: int, **_: Any) -> list[Any]:
        if self.down:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in self.ips]


async def test_primaries_from_dns_and_listed_backups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host resolves to the primaries; while it does not, the backups serve."""
    with Replica() as primary, Replica() as backup:
        resolver = Resolver("127.0.0.1")
        resolver.down = True
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
        backoff = h2pool.ConnectionBackoff(initial=0.05, max=0.05)
        async with h2pool.Pool(
            f"http://svc.test:{primary.port}", backup_endpoints=[backup.address], backoff=backoff
        ) as pool:
            response = await pool.get("/")  # no address: the backup, no error
            assert response.endpoint == backup.address
            resolver.down = False
            await asyncio.sleep(0.06)  # the resolver's backoff (no event to await)

            # The next request asks the resolver again (in the background: it
            # is served by the backup); those that follow go to the primary.
            responses = [await pool.get("/") for _ in range(3)]
            assert responses[-1].endpoint == primary.address
            await eventually(lambda: stats_of(pool, backup.address).state is ConnectivityState.IDLE)
            assert [ep.tier for ep in pool.stats().endpoints] == [0, 1]


async def test_a_subset_of_the_addresses_dns_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = [f"127.0.0.{n}" for n in range(1, 41)]
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", Resolver(*fleet))
    async with h2pool.Pool("http://svc.test:9", subset_size=5, min_connections=0) as pool:
        members = [ep.address for ep in pool.stats().endpoints]
    assert len(members) == 5
    assert {address.removesuffix(":9") for address in members} <= set(fleet)


async def test_with_a_health_check_a_primary_returns_only_once_its_check_passes() -> None:
    """Connecting again is not proof enough when the pool has a health check."""
    serving = {"primary": True}

    async def check(probe: h2pool.Probe) -> bool:
        await probe.request("GET", "/healthz")
        return serving["primary"] or probe.address == backup.address

    with Replica() as primary, Replica() as backup:
        async with h2pool.Pool(
            "http://svc.test",
            endpoints=[primary.address],
            backup_endpoints=[backup.address],
            health_check=h2pool.HealthCheck(check=check, interval=0.1),
        ) as pool:
            assert (await pool.get("/")).endpoint == primary.address
            primary.kill()
            await eventually(lambda: stats_of(pool, primary.address).connections == 0)
            assert (await pool.get("/")).endpoint == backup.address
            serving["primary"] = False  # it comes back not serving yet
            await asyncio.to_thread(primary.start)
            # Retried by maintenance with its backoff (1 s, then 1.6 s, ...).
            await eventually(lambda: stats_of(pool, primary.address).connections >= 1, 10.0)
            assert stats_of(pool, primary.address).ejected  # held until its check passes
            responses = await asyncio.gather(*(pool.get("/") for _ in range(20)))
            assert {r.endpoint for r in responses} == {backup.address}
            serving["primary"] = True
            await eventually(lambda: not stats_of(pool, primary.address).ejected)
            responses = await asyncio.gather(*(pool.get("/") for _ in range(20)))
            assert {r.endpoint for r in responses} == {primary.address}
