"""A deterministic simulation of many clients and endpoints: a simulated clock, no sockets.

A real fleet is thousands of clients; one machine cannot run them, so the pool's pure
decisions run here against simulated servers, with the same code the pool runs:

- each :class:`Client` is one pool's view of the fleet: real ``Endpoint`` objects
  (``h2pool._pool.endpoint``), one :class:`SimConnection` each, its own turn counter and
  random source;
- a :data:`Choose` function picks the endpoint of each request; :func:`balanced` is the
  pool's own (``route()`` with a balancer), and another policy (subsetting, a retry
  budget) plugs in its own;
- every answer goes through ``Endpoint.answered`` (the peak-EWMA latency, outlier
  detection on answers) and ``eject_outlier`` (the never-all rule), as the pool's
  maintenance does;
- each :class:`Server` answers after a latency (its base, a jitter, and a queueing factor
  that grows with the requests it holds) with a status.

Everything is driven by one :class:`Clock` (an event heap) and seeded random sources: the
same arguments give the same run. :class:`Simulation` methods (``send``, ``answered``)
can be overridden to add retries, hedges or budgets.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h2pool
from h2pool._pool.balancer import Balancer
from h2pool._pool.endpoint import Endpoint, eject_outlier
from h2pool._pool.routing import route

__all__ = [
    "Choose",
    "Client",
    "Clock",
    "Server",
    "SimConnection",
    "Simulation",
    "balanced",
]


class Clock:
    """Simulated time: callbacks run in time order (ties in the order they were set)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` at simulated time ``when`` (not before now)."""
        heapq.heappush(self._events, (max(when, self.now), next(self._order), callback))

    def run(self, until: float) -> None:
        """Run every event due up to ``until``; the clock then reads ``until``."""
        events = self._events
        while events and events[0][0] <= until:
            self.now, _, callback = heapq.heappop(events)
            callback()
        self.now = until


@dataclass
class Server:
    """One simulated endpoint (a replica): how it answers, and what it served.

    Attributes:
        address: ``"host:port"``.
        latency: Seconds of an answer when it holds no other request.
        jitter: Each latency is multiplied by a uniform factor in [1 - jitter, 1 + jitter].
        capacity: Requests it holds before its latency doubles (each one held adds
            ``1 / capacity`` to the factor); None: no queueing.
        status: The status of every answer.
        served: Requests it answered.
        held: Requests it holds now.
    """

    address: str
    latency: float = 0.01
    jitter: float = 0.2
    capacity: float | None = 50.0
    status: int = 200
    served: int = 0
    held: int = 0

    def answer_after(self, rng: random.Random) -> float:
        """The latency of a request arriving now."""
        factor = rng.uniform(1 - self.jitter, 1 + self.jitter)
        queueing = 1 + self.held / self.capacity if self.capacity else 1.0
        return self.latency * factor * queueing


@dataclass(eq=False)
class SimConnection:
    """A client's connection to a server: what routing reads of one (``ConnectionView``)."""

    clock: Clock
    open_streams: int = 0
    max_streams: int = 100
    reserved: int = 0
    accepting_streams: bool = True
    functional: bool = True
    ping_interval: float = 1.0
    rtt: float | None = None

    @property
    def last_received(self) -> float:
        """Always live: the simulation has no silent connections."""
        return self.clock.now


@dataclass(eq=False)
class Client:
    """One pool's view of the fleet.

    Attributes:
        name: For reports.
        endpoints: One ``Endpoint`` per server, each with one connection.
        rng: This client's random source (p2c samples, arrivals).
        turn: Its turn counter (as the scheduler's).
        sent: Requests it sent.
        unplaced: Requests its choice function found no endpoint for.
    """

    name: str
    endpoints: list[Endpoint[SimConnection]]
    rng: random.Random
    turn: int = 0
    sent: int = 0
    unplaced: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)


#: Picks the endpoint of a client's request at the clock's time (None: none can take it).
Choose = Callable[[Client, float], Endpoint[SimConnection] | None]


def balanced(balancer: Balancer = Balancer.P2C) -> Choose:
    """The pool's choice: ``route()`` over the client's endpoints with ``balancer``."""

    def choose(client: Client, now: float) -> Endpoint[SimConnection] | None:
        client.turn += 1
        decision = route(
            client.endpoints,
            now,
            waiting=1,
            functional_timeout=1.0,
            turn=client.turn,
            balancer=balancer,
            rng=client.rng.random,
        )
        return decision.endpoint if decision.connection is not None else None

    return choose


class Simulation:
    """Clients sending requests to servers, each as an open loop of Poisson arrivals.

    Args:
        servers: The fleet.
        clients: How many clients (pools).
        rate: Requests per second of each client.
        choose: The choice function (:func:`balanced` by default).
        policy: The clients' ejection policy.
        seed: Seeds every random source.
        addresses_of: The servers client ``i`` has endpoints for (all of them by
            default; subsetting gives each client its subset).
    """

    def __init__(
        self,
        servers: Sequence[Server],
        *,
        clients: int,
        rate: float,
        choose: Choose | None = None,
        policy: h2pool.EjectionPolicy | None = None,
        seed: int = 0,
        addresses_of: Callable[[int], Sequence[str]] | None = None,
    ) -> None:
        self.clock = Clock()
        self.servers = {server.address: server for server in servers}
        self.rate = rate
        self.choose = choose or balanced()
        self.policy = policy or h2pool.EjectionPolicy()
        self._rng = random.Random(seed)
        every = list(self.servers)
        self.clients = [
            self._client(f"client{i}", addresses_of(i) if addresses_of else every)
            for i in range(clients)
        ]

    def _client(self, name: str, addresses: Sequence[str]) -> Client:
        endpoints: list[Endpoint[SimConnection]] = []
        for address in addresses:
            endpoint: Endpoint[SimConnection] = Endpoint(address)
            endpoint.connections = [SimConnection(self.clock)]
            endpoints.append(endpoint)
        rng = random.Random(self._rng.getrandbits(64))
        # As the scheduler: each client starts at its own turn.
        return Client(name, endpoints, rng, turn=rng.randrange(1 << 16))

    def run(self, duration: float) -> None:
        """Run every client for ``duration`` simulated seconds from now."""
        end = self.clock.now + duration
        for client in self.clients:
            self._arrive(client, end)
        self.clock.run(end)

    def _arrive(self, client: Client, end: float) -> None:
        when = self.clock.now + client.rng.expovariate(self.rate)
        if when < end:
            self.clock.at(when, lambda: self._arrived(client, end))

    def _arrived(self, client: Client, end: float) -> None:
        self.send(client)
        self._arrive(client, end)

    def send(self, client: Client) -> None:
        """One request of ``client``: choose, send, and answer it after the server's latency."""
        now = self.clock.now
        endpoint = self.choose(client, now)
        if endpoint is None:
            client.unplaced += 1
            return
        client.sent += 1
        server = self.servers[endpoint.address]
        connection = endpoint.connections[0]
        latency = server.answer_after(client.rng)
        connection.open_streams += 1
        server.held += 1

        def done() -> None:
            connection.open_streams -= 1
            server.held -= 1
            server.served += 1
            self.answered(client, endpoint, server.status, latency)

        self.clock.at(now + latency, done)

    def answered(
        self, client: Client, endpoint: Endpoint[SimConnection], status: int, latency: float
    ) -> None:
        """An answer reached ``client``: the pool's bookkeeping (balancer, outlier detection)."""
        now = self.clock.now
        client.statuses[status] += 1
        reason = endpoint.answered(status, latency, now, self.policy)
        if reason is not None:
            eject_outlier(client.endpoints, endpoint, now, self.policy, reason)

    # -- results -------------------------------------------------------------

    def served(self, addresses: Sequence[str] | None = None) -> dict[str, int]:
        """Requests served per server (of ``addresses``, or all)."""
        wanted = addresses if addresses is not None else list(self.servers)
        return {address: self.servers[address].served for address in wanted}

    def spread(self, addresses: Sequence[str]) -> float:
        """max / mean of the requests served by ``addresses`` (1.0: perfectly even)."""
        counts = list(self.served(addresses).values())
        return max(counts) / statistics.fmean(counts)

    def ejected_by(self, address: str) -> int:
        """Clients that have ``address`` ejected now."""
        now = self.clock.now
        return sum(
            any(ep.address == address and ep.ejected(now) for ep in client.endpoints)
            for client in self.clients
        )
