"""Active health checks: an endpoint that says it does not serve leaves the rotation."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._pool.policies import EjectionPolicy, may_eject
from h2pool._pool.probes import Verdict, health_verdict
from tests.servers import Server
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(30)


class Replica:
    """An h2pool server answering ``/healthz`` with 200 or 503, and anything else with 200."""

    def __init__(self) -> None:
        self.serving = True
        self.checks = 0
        self.server = Server(self.handle)

    async def handle(
        self, proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
    ) -> None:
        path = dict(headers)[":path"]
        if path == "/healthz":
            self.checks += 1
            status = "200" if self.serving else "503"
            await proto.start_response(stream_id, {":status": status}, end_stream=True)
            return
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)


async def healthz(probe: h2pool.Probe) -> bool:
    response = await probe.request("GET", "/healthz")
    return response.status_code == 200


async def test_a_replica_not_serving_gets_no_traffic_until_it_serves_again() -> None:
    first, second = Replica(), Replica()
    async with first.server, second.server:
        check = h2pool.HealthCheck(check=healthz, interval=0.1, timeout=1.0)
        pool = h2pool.Pool(
            "http://svc.test",
            endpoints=[f"127.0.0.1:{first.server.port}", f"127.0.0.1:{second.server.port}"],
            health_check=check,
        )
        async with pool:
            await eventually(lambda: first.checks > 0 and second.checks > 0)
            first.serving = False
            await eventually(lambda: pool.stats().endpoints[0].ejected)
            responses = await asyncio.gather(*(pool.request("GET", "/") for _ in range(50)))
            assert {r.endpoint for r in responses} == {f"127.0.0.1:{second.server.port}"}
            assert pool.stats().endpoints[0].ejections == 1
            assert pool.stats().endpoints[0].ejection_reason == (
                "the health check says it does not serve"
            )
            first.serving = True
            await eventually(lambda: not pool.stats().endpoints[0].ejected)
            responses = await asyncio.gather(*(pool.request("GET", "/") for _ in range(50)))
            assert f"127.0.0.1:{first.server.port}" in {r.endpoint for r in responses}


async def test_the_last_replica_in_rotation_stays_even_when_not_serving() -> None:
    only = Replica()
    only.serving = False
    async with only.server:
        check = h2pool.HealthCheck(check=healthz, interval=0.05)
        async with h2pool.Pool(f"http://127.0.0.1:{only.server.port}", health_check=check) as pool:
            await eventually(lambda: only.checks >= 3)
            assert not pool.stats().endpoints[0].ejected
            assert (await pool.request("GET", "/")).status_code == 200


async def test_a_check_that_raises_gives_no_verdict() -> None:
    calls: list[str] = []

    async def broken(probe: h2pool.Probe) -> bool:
        calls.append(probe.address)
        raise ValueError("a bug in the check")

    first, second = Replica(), Replica()
    async with first.server, second.server:
        pool = h2pool.Pool(
            "http://svc.test",
            endpoints=[f"127.0.0.1:{first.server.port}", f"127.0.0.1:{second.server.port}"],
            health_check=h2pool.HealthCheck(check=broken, interval=0.05),
        )
        async with pool:
            await pool.request("GET", "/")
            await eventually(lambda: len(calls) > 6)
            assert not any(ep.ejected for ep in pool.stats().endpoints)


def test_health_check_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="interval"):
        h2pool.HealthCheck(check=healthz, interval=0)
    with pytest.raises(TypeError, match="check"):
        h2pool.HealthCheck(check=None)  # type: ignore[arg-type]


@given(
    serving=st.none() | st.booleans(),
    held=st.booleans(),
    endpoints=st.integers(1, 10),
    ejected=st.integers(0, 10),
    percent=st.integers(0, 100),
)
def test_verdicts(
    serving: bool | None, held: bool, endpoints: int, ejected: int, percent: int
) -> None:
    ejected = min(ejected, endpoints)
    policy = EjectionPolicy(max_ejected_percent=percent)
    verdict = health_verdict(
        serving, held=held, endpoints=endpoints, ejected=ejected, policy=policy
    )
    if serving is None:
        assert verdict is Verdict.KEEP  # no answer changes nothing
    elif serving:
        assert verdict is (Verdict.RESTORE if held else Verdict.KEEP)
    elif held:
        assert verdict is Verdict.REMOVE  # renewed while it does not serve
    else:
        assert (verdict is Verdict.REMOVE) == may_eject(policy, endpoints, ejected)
        if verdict is Verdict.REMOVE:
            assert ejected + 1 < endpoints  # never the last one in rotation
