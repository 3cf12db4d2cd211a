"""Maintenance across tiers, in memory: which endpoints are connected, when (no sockets).

``open_channel`` is replaced by a script: each address refuses or accepts,
and an attempt may be held until the test lets it finish.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import h2pool
from h2pool._core.protocol import ConnectionEvent
from h2pool._exceptions import ConnectError, ConnectionLost
from h2pool._pool import maintenance
from tests.waiting import eventually

PRIMARY, BACKUP = "10.0.0.1:80", "10.0.0.2:80"


class FakeChannel:
    """What maintenance and routing read of a connection."""

    http_version = "HTTP/2"

    def __init__(self, address: str) -> None:
        self.address = address
        self.reserved = 0
        self.open_streams = 0
        self.max_streams = 100
        self.last_received = 0.0
        self.ping_interval = 1.0
        self.rtt = None
        self.error: h2pool.H2PoolError | None = None
        self.closed = False
        self.shut_down = False
        self.listener: Any = None

    @property
    def functional(self) -> bool:
        return not self.closed

    @property
    def accepting_streams(self) -> bool:
        return not self.closed and not self.shut_down

    def set_listener(self, listener: Any) -> None:
        self.listener = listener

    def close(self) -> None:
        self.closed = True

    async def shutdown(self, timeout: float | None) -> None:
        self.shut_down = True

    def lose(self) -> None:
        """The peer went away: the connection fails and says so."""
        self.closed = True
        self.error = ConnectionLost("connection lost")
        self.listener(self, ConnectionEvent.CLOSED)


class Network:
    """The script of connection attempts."""

    def __init__(self) -> None:
        self.refusing: set[str] = set()
        self.held: dict[str, asyncio.Future[None]] = {}
        self.attempts: list[str] = []
        self.channels: list[FakeChannel] = []

    async def open_channel(self, address: str, *_: Any, **__: Any) -> FakeChannel:
        self.attempts.append(address)
        if address in self.held:
            await self.held.pop(address)
        if address in self.refusing:
            raise ConnectError(f"cannot connect to {address}: refused")
        channel = FakeChannel(address)
        self.channels.append(channel)
        return channel

    def of(self, address: str) -> list[FakeChannel]:
        return [channel for channel in self.channels if channel.address == address]


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    script = Network()
    monkeypatch.setattr(maintenance, "open_channel", script.open_channel)
    return script


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def pool(**options: Any) -> h2pool.Pool:
    return h2pool.Pool("http://svc.test", endpoints=[PRIMARY], backup_endpoints=[BACKUP], **options)


async def test_backups_are_connected_only_while_they_serve(network: Network) -> None:
    async with pool(min_connections=2) as tiered:
        await settle()
        assert network.attempts == [PRIMARY, PRIMARY]  # the backup is left alone
        network.refusing.add(PRIMARY)
        for channel in network.of(PRIMARY):
            channel.lose()
        await settle()
        # The backup serves now: min_connections to it; the primary is tried again.
        assert len(network.of(BACKUP)) == 2
        assert PRIMARY in network.attempts[2:]
        stats = {ep.address: ep for ep in tiered.stats().endpoints}
        assert stats[BACKUP].connections == 2
        assert stats[PRIMARY].connections == 0


async def test_the_backups_are_let_go_once_a_primary_connects_again(network: Network) -> None:
    backoff = h2pool.ConnectionBackoff(initial=0.01, max=0.01, jitter=0.0)
    async with pool(backoff=backoff) as tiered:
        await settle()
        network.refusing.add(PRIMARY)
        network.of(PRIMARY)[0].lose()
        await settle()
        backup = network.of(BACKUP)[0]
        assert backup.accepting_streams
        network.refusing.discard(PRIMARY)  # back: the next retry connects
        await eventually(lambda: backup.shut_down)  # gracefully: GOAWAY, nothing cut
        stats = {ep.address: ep for ep in tiered.stats().endpoints}
        assert stats[PRIMARY].connections == 1


async def test_a_backup_connecting_as_the_primaries_come_back_is_closed(network: Network) -> None:
    async with pool() as tiered:
        await settle()
        released = asyncio.get_running_loop().create_future()
        network.held[BACKUP] = released
        network.refusing.add(PRIMARY)
        network.of(PRIMARY)[0].lose()
        await settle()
        assert network.attempts[-1] == BACKUP  # held
        # The primary connects again (a request's attempt, say) before the backup does.
        network.refusing.discard(PRIMARY)
        tiered._maintenance.start_connect(tiered._maintenance.endpoints[0], None)
        await settle()
        released.set_result(None)
        await settle()
        assert [channel.closed for channel in network.of(BACKUP)] == [True]
        stats = {ep.address: ep for ep in tiered.stats().endpoints}
        assert stats[BACKUP].connections == 0
