"""Tiers' pure decisions: backups take requests only while no primary is usable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._exceptions import ConnectError
from h2pool._pool.endpoint import Endpoint, backup_addresses, rotation, serving_tier
from tests.test_pool_decisions import FakeConnection, decide

NOW = 100.0


class Shape:
    """What tiers read of an endpoint, drawn by hypothesis."""

    def __init__(self, tier: int, ejected: bool, failed: bool, live: bool) -> None:
        self.tier, self.ejected, self.failed, self.live = tier, ejected, failed, live

    def build(self, index: int) -> Endpoint[FakeConnection]:
        ep: Endpoint[FakeConnection] = Endpoint(f"10.0.{self.tier}.{index}:80", tier=self.tier)
        if self.live:
            ep.connections = [FakeConnection()]
        if self.failed:
            ep.record_failure(NOW - 1, ConnectError("refused"), None)
        if self.ejected:
            ep.ejected_until = NOW + 10
        return ep


shapes = st.builds(Shape, st.integers(0, 1), st.booleans(), st.booleans(), st.booleans())
fleets = st.lists(shapes, min_size=1, max_size=8).map(
    lambda drawn: [shape.build(index) for index, shape in enumerate(drawn)]
)


@given(fleets)
def test_rotation_takes_the_lowest_tier_with_a_usable_endpoint(
    endpoints: list[Endpoint[FakeConnection]],
) -> None:
    chosen = rotation(endpoints, NOW)
    assert chosen  # never empty
    usable_tiers = sorted({ep.tier for ep in endpoints if ep.usable(NOW)})
    if usable_tiers:
        # Never a backup while a primary is usable; the backups when none is.
        assert {ep.tier for ep in chosen} == {usable_tiers[0]}
        assert any(ep.usable(NOW) for ep in chosen)
        assert not any(ep.ejected(NOW) for ep in chosen)
    else:
        # Nothing usable: every tier in play, whichever comes back first serves.
        not_ejected = [ep for ep in endpoints if not ep.ejected(NOW)]
        assert list(chosen) == (not_ejected or endpoints)
    assert serving_tier(endpoints, NOW) == max(ep.tier for ep in chosen)


@given(fleets)
def test_routing_never_sends_to_a_backup_while_a_primary_is_usable(
    endpoints: list[Endpoint[FakeConnection]],
) -> None:
    decision = decide(endpoints, NOW)
    if any(ep.tier == 0 and ep.usable(NOW) for ep in endpoints) and decision.endpoint:
        assert decision.endpoint.tier == 0


def test_requests_return_to_a_primary_after_proof_of_life() -> None:
    primary: Endpoint[FakeConnection] = Endpoint("10.0.0.1:80")
    backup: Endpoint[FakeConnection] = Endpoint("10.0.0.2:80", tier=1)
    backup.connections = [FakeConnection()]
    primary.record_failure(NOW, ConnectError("refused"), h2pool.ConnectionBackoff())
    assert list(rotation([primary, backup], NOW)) == [backup]
    assert serving_tier([primary, backup], NOW) == 1
    primary.add(FakeConnection(), http1=False, http1_max_connections=10)  # a new connection
    assert list(rotation([primary, backup], NOW)) == [primary]
    assert serving_tier([primary, backup], NOW) == 0


def test_an_ejection_that_ends_is_no_proof_of_life() -> None:
    """Ejecting forgets the count of failures, not the failure: a new connection is needed."""
    primary: Endpoint[FakeConnection] = Endpoint("10.0.0.1:80")
    backup: Endpoint[FakeConnection] = Endpoint("10.0.0.2:80", tier=1)
    for _ in range(5):
        primary.record_failure(NOW, ConnectError("refused"), None)
    primary.eject(NOW, h2pool.EjectionPolicy(base_time=1.0), "failures in a row")
    later = NOW + 2.0
    assert not primary.ejected(later)
    assert not primary.usable(later)
    assert list(rotation([primary, backup], later)) == [backup]


def test_a_primary_never_tried_is_usable() -> None:
    primary: Endpoint[FakeConnection] = Endpoint("10.0.0.1:80")
    backup: Endpoint[FakeConnection] = Endpoint("10.0.0.2:80", tier=1)
    backup.connections = [FakeConnection()]
    decision = decide([primary, backup], NOW)
    assert decision.endpoint is primary  # connect to it, not a request to the live backup
    assert decision.connection is None


def test_backup_addresses_are_checked() -> None:
    assert backup_addresses(None, None) == []
    assert backup_addresses(("10.0.0.9:80",), ["10.0.0.1:80"]) == ["10.0.0.9:80"]
    with pytest.raises(TypeError, match="backup_endpoints"):
        backup_addresses("10.0.0.9:80", None)
    with pytest.raises(ValueError, match="host:port"):
        backup_addresses(["10.0.0.9"], None)
    with pytest.raises(ValueError, match="twice"):
        backup_addresses(["10.0.0.9:80", "10.0.0.9:80"], None)
    with pytest.raises(ValueError, match="both"):
        backup_addresses(["10.0.0.1:80"], ["10.0.0.1:80"])


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"subset_size": 0}, ValueError),
        ({"subset_size": 2.5}, TypeError),
        ({"subset_client": (0, 3)}, ValueError),  # needs subset_size
        ({"subset_size": 3, "subset_client": (3, 3)}, ValueError),
        ({"subset_size": 3, "subset_client": (-1, 3)}, ValueError),
        ({"subset_size": 3, "subset_client": [0, 3]}, TypeError),
        ({"backup_endpoints": "10.0.0.9:80"}, TypeError),
    ],
)
def test_pool_checks_the_tier_and_subset_options(options: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        h2pool.Pool("http://svc.test", endpoints=["10.0.0.1:80"], **options)  # type: ignore[arg-type]
