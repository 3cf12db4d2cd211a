"""Subsetting's pure decisions: bounded, valid, stable when endpoints come and go."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._pool.subset import aperture, random_subset, subset

addresses = st.lists(
    st.integers(0, 10_000).map(lambda n: f"10.{n // 250}.{n % 250}.1:8080"),
    min_size=1,
    max_size=80,
    unique=True,
)
seeds = st.binary(min_size=16, max_size=16)
sizes = st.integers(1, 40)


@st.composite
def clients(draw: st.DrawFn) -> tuple[int, int]:
    count = draw(st.integers(1, 500))
    return draw(st.integers(0, count - 1)), count


@given(addresses, sizes, seeds)
def test_random_subset_is_bounded_and_valid(fleet: list[str], size: int, seed: bytes) -> None:
    chosen = random_subset(fleet, size, seed)
    assert len(chosen) == min(size, len(fleet))
    assert len(set(chosen)) == len(chosen)
    assert set(chosen) <= set(fleet)
    assert chosen == [address for address in fleet if address in chosen]  # their order


@given(addresses, sizes, seeds)
def test_random_subset_does_not_depend_on_the_order(
    fleet: list[str], size: int, seed: bytes
) -> None:
    assert set(random_subset(fleet, size, seed)) == set(random_subset(fleet[::-1], size, seed))


@given(addresses, sizes, seeds, st.data())
def test_random_subset_changes_by_one_member_when_one_endpoint_comes_or_goes(
    fleet: list[str], size: int, seed: bytes, data: st.DataObject
) -> None:
    """Rendezvous hashing: one endpoint removed (or added back) changes at most one member."""
    gone = data.draw(st.sampled_from(fleet))
    before = set(random_subset(fleet, size, seed))
    after = set(random_subset([a for a in fleet if a != gone], size, seed))
    assert len(before - after) <= 1
    assert len(after - before) <= 1
    if gone not in before:
        assert after == before  # a non-member leaving changes nothing


@given(addresses, sizes, clients())
def test_aperture_is_bounded_and_valid(
    fleet: list[str], size: int, client: tuple[int, int]
) -> None:
    index, count = client
    chosen = aperture(fleet, size, index, count)
    width = max(size, -(-len(fleet) // count))
    assert len(chosen) == min(width, len(fleet))
    assert len(set(chosen)) == len(chosen)
    assert set(chosen) <= set(fleet)
    assert chosen == [address for address in fleet if address in chosen]


@given(addresses, sizes, clients(), st.data())
def test_aperture_changes_by_two_members_at_most_when_one_endpoint_comes_or_goes(
    fleet: list[str], size: int, client: tuple[int, int], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(fleet))
    before = set(aperture(fleet, size, *client))
    after = set(aperture([a for a in fleet if a != gone], size, *client))
    assert len(before - after) <= 2
    assert len(after - before) <= 2


@given(addresses, sizes, st.integers(1, 60))
def test_aperture_spreads_clients_evenly(fleet: list[str], size: int, count: int) -> None:
    """Every endpoint is in as many clients' windows as any other, to within one."""
    covered = dict.fromkeys(fleet, 0)
    for index in range(count):
        for address in aperture(fleet, size, index, count):
            covered[address] += 1
    assert min(covered.values()) >= 1  # the fleet is covered
    assert max(covered.values()) - min(covered.values()) <= 1


@given(addresses, seeds)
def test_no_size_keeps_every_endpoint(fleet: list[str], seed: bytes) -> None:
    assert subset(fleet, None, seed=seed) == fleet
    assert subset(fleet, None, seed=seed, client=(0, 3)) == fleet


def test_subset_picks_the_scheme() -> None:
    fleet = [f"10.0.0.{n}:8080" for n in range(30)]
    seed = bytes(16)
    assert subset(fleet, 3, seed=seed) == random_subset(fleet, 3, seed)
    assert subset(fleet, 3, seed=seed, client=(4, 10)) == aperture(fleet, 3, 4, 10)
    assert random_subset(fleet, 3, seed) != random_subset(fleet, 3, bytes(range(16)))


async def test_pools_draw_their_own_random_subsets_or_share_the_fleet_by_index() -> None:
    fleet = [f"10.0.0.{n}:8080" for n in range(40)]

    def members(**options: object) -> list[str]:
        pool = h2pool.Pool("http://svc.test", endpoints=fleet, min_connections=0, **options)  # type: ignore[arg-type]
        return [ep.address for ep in pool.stats().endpoints]

    assert members(subset_size=5) != members(subset_size=5)  # each pool its own seed
    covered = [
        address
        for index in range(8)
        for address in members(subset_size=5, subset_client=(index, 8))
    ]
    assert sorted(covered) == sorted(fleet)  # eight clients x five: each endpoint once
