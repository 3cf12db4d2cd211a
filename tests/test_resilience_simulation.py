"""Many clients and endpoints in a simulation (tests/simulation.py): no sockets, a simulated clock.

The pool's own pure decisions (``route()`` with its balancer, the peak-EWMA, outlier
detection on answers, the never-all rule) run for every simulated request.
"""

from __future__ import annotations

import statistics

import pytest

from h2pool._pool.balancer import Balancer
from tests.simulation import Server, Simulation, balanced

pytestmark = pytest.mark.timeout(60)


def fleet_with_a_slow_and_a_failing_endpoint(
    size: int,
) -> tuple[list[Server], Server, Server]:
    servers = [Server(f"10.0.{i // 250}.{i % 250}:80", latency=0.01) for i in range(size)]
    slow, failing = servers[size // 3], servers[2 * size // 3]
    slow.latency = 0.1  # ten times slower, not dead
    failing.status = 503  # answers fast, and fails
    failing.latency = 0.001
    return servers, slow, failing


def run(clients: int, endpoints: int, rate: float, duration: float, seed: int) -> None:
    servers, slow, failing = fleet_with_a_slow_and_a_failing_endpoint(endpoints)
    simulation = Simulation(servers, clients=clients, rate=rate, seed=seed)
    simulation.run(duration)
    healthy = [s.address for s in servers if s not in (slow, failing)]
    spread = simulation.spread(healthy)
    mean = statistics.fmean(simulation.served(healthy).values())
    sent = sum(client.sent for client in simulation.clients)
    print(
        f"{clients} clients x {endpoints} endpoints, {sent} requests: spread over the healthy "
        f"{spread:.3f} (max/mean); slow {slow.served} (healthy mean {mean:.0f}); failing "
        f"{failing.served}, ejected by {simulation.ejected_by(failing.address)} clients"
    )
    assert sum(client.unplaced for client in simulation.clients) == 0
    # The load is spread evenly over the healthy endpoints.
    assert spread < 1.25
    # The slow endpoint gets little: about one probe per client (an endpoint never
    # measured takes one request at once), then nothing while it stays slow.
    assert slow.served < 0.25 * mean
    assert slow.served <= 2 * clients
    # The failing one is ejected by every client after its five 503 in a row.
    assert simulation.ejected_by(failing.address) == clients
    assert failing.served == clients * simulation.policy.consecutive_gateway_failures
    assert all(client.statuses[503] == 5 for client in simulation.clients)


def test_100_clients_x_50_endpoints_with_a_slow_and_a_failing_one() -> None:
    run(clients=100, endpoints=50, rate=40.0, duration=8.0, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_500_clients_x_200_endpoints_with_a_slow_and_a_failing_one() -> None:
    run(clients=500, endpoints=200, rate=40.0, duration=25.0, seed=2)


@pytest.mark.parametrize("balancer", [Balancer.ROUND_ROBIN, Balancer.LEAST_REQUEST])
def test_latency_blind_balancers_feed_the_slow_endpoint_its_share(balancer: Balancer) -> None:
    # The contrast that p2c's peak-EWMA makes: round robin and least request
    # spread evenly over every endpoint the outlier detection leaves in, slow or not.
    servers, slow, failing = fleet_with_a_slow_and_a_failing_endpoint(20)
    simulation = Simulation(servers, clients=20, rate=40.0, choose=balanced(balancer), seed=3)
    simulation.run(3.0)
    healthy = [s.address for s in servers if s not in (slow, failing)]
    mean = statistics.fmean(simulation.served(healthy).values())
    assert slow.served > 0.5 * mean
    assert simulation.ejected_by(failing.address) == 20


def test_clients_may_see_a_subset_of_the_servers() -> None:
    servers = [Server(f"10.0.0.{i}:80") for i in range(6)]
    simulation = Simulation(
        servers,
        clients=3,
        rate=50.0,
        seed=4,
        addresses_of=lambda i: ["10.0.0.0:80", f"10.0.0.{i + 1}:80"],
    )
    simulation.run(1.0)
    served = simulation.served()
    assert served["10.0.0.4:80"] == served["10.0.0.5:80"] == 0
    assert all(served[f"10.0.0.{i}:80"] for i in range(4))


def test_the_simulation_is_deterministic() -> None:
    def outcome(seed: int) -> dict[str, int]:
        servers, _, _ = fleet_with_a_slow_and_a_failing_endpoint(10)
        simulation = Simulation(servers, clients=5, rate=20.0, seed=seed)
        simulation.run(2.0)
        return simulation.served()

    assert outcome(7) == outcome(7)
    assert outcome(7) != outcome(8)
