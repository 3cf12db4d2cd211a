"""h2pool.rpc on the pool against grpcio replicas: spreading, graceful stops, failover.

Calls spread over endpoints and over several connections per endpoint; a replica's graceful
stop (grpcio's ``server.stop(grace)``: two GOAWAYs) loses no call; ``wait_for_ready`` fails
fast or waits within the deadline; with replicas stopped, killed (SIGKILL, in child processes)
and blackholed during a run, no call fails except those in flight on the replica that died,
and those end with UNAVAILABLE naming it (or succeed under a retryPolicy).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest

import h2pool
from h2pool import rpc
from tests.faultproxy import FaultProxy
from tests.peers import GrpcProcessFactory
from tests.peers.grpc_server import GrpcTestServer
from tests.peers.grpc_service import Rpc
from tests.peers.process import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.peer, pytest.mark.timeout(40)]

# The pool pings connections that are silent while calls are open; grpcio's default policy
# answers frequent pings with GOAWAY too_many_pings, so the replicas here allow them.
PINGS_ALLOWED = [("grpc.http2.max_ping_strikes", 0)]

RETRY_UNAVAILABLE = {
    "methodConfig": [
        {
            "name": [{"service": "test.Rpc"}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


@contextlib.contextmanager
def grpc_servers(count: int) -> Iterator[list[GrpcTestServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(GrpcTestServer(options=PINGS_ALLOWED)) for _ in range(count)]


@dataclass
class Outcome:
    """One call of a run: when it started and ended, where it went, how it failed."""

    started: float
    ended: float = 0.0
    endpoint: str | None = None
    error: rpc.RpcError | None = None


@dataclass
class Run:
    """Unary calls made by concurrent callers, with hooks run at given counts of calls made."""

    channel: rpc.Channel
    total: int
    callers: int
    metadata: tuple[tuple[str, str], ...] = ()
    hooks: dict[int, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)

    async def _caller(self, unary: rpc.UnaryUnaryMultiCallable) -> None:
        loop = asyncio.get_running_loop()
        while len(self.outcomes) < self.total:
            hook = self.hooks.pop(len(self.outcomes), None)
            if hook is not None:
                await hook()
            outcome = Outcome(loop.time())
            self.outcomes.append(outcome)
            payload = f"call-{len(self.outcomes)}".encode()
            call = unary(payload, timeout=10, metadata=self.metadata)
            try:
                reply = await call
                assert reply == payload
            except rpc.RpcError as exc:
                outcome.error = exc
            outcome.ended = loop.time()
            outcome.endpoint = call.endpoint

    async def run(self) -> list[Outcome]:
        unary = self.channel.unary_unary(Rpc.UNARY)
        await asyncio.gather(*(self._caller(unary) for _ in range(self.callers)))
        return self.outcomes

    def failures(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.error is not None]


def committed(outcome: Outcome) -> bool:
    """Whether a failed call had received its response headers (the echoed marker)."""
    error = outcome.error
    return error is not None and "x-echo-committed" in error.initial_metadata()


def channel_to(*targets: str, **kwargs: object) -> rpc.Channel:
    return rpc.Channel("http://grpc.test", endpoints=list(targets), **kwargs)  # type: ignore[arg-type]


# -- spreading -------------------------------------------------------------------------------


async def test_calls_spread_over_endpoints_and_connections() -> None:
    with grpc_servers(2) as servers:
        # Four streams per connection: 32 calls in flight need four connections per replica.
        async with channel_to(
            *(s.target for s in servers), max_streams_per_connection=4
        ) as channel:
            unary = channel.unary_unary(Rpc.UNARY)
            calls = [unary(b"%d" % i, metadata=[("x-sleep", "0.3")]) for i in range(32)]
            await asyncio.to_thread(servers[0].wait_for_calls, None, 16)
            await asyncio.to_thread(servers[1].wait_for_calls, None, 16)
            stats = channel.pool.stats()
            replies = await asyncio.gather(*calls)
    assert replies == [b"%d" % i for i in range(32)]
    assert [s.calls_started() for s in servers] == [16, 16]
    assert stats.active == 32
    for endpoint in stats.endpoints:
        assert endpoint.connections == 4, endpoint
        assert endpoint.open_streams == 16, endpoint


# -- wait_for_ready --------------------------------------------------------------------------


async def test_without_wait_for_ready_a_call_fails_fast_when_no_endpoint_is_ready() -> None:
    refused = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    async with channel_to(*refused) as channel:
        unary = channel.unary_unary(Rpc.UNARY)
        with pytest.raises(rpc.RpcError) as caught:
            await unary(b"x", timeout=20)  # the default: wait_for_ready=False
    # Not the deadline: the call failed as soon as every endpoint had failed.
    assert caught.value.code() is rpc.StatusCode.UNAVAILABLE
    assert "cannot connect" in caught.value.details(), caught.value
    assert caught.value.never_processed


async def test_wait_for_ready_waits_for_a_server_to_come_up() -> None:
    port = free_port()
    backoff = h2pool.ConnectionBackoff(initial=0.05, max=0.2)
    async with channel_to(f"127.0.0.1:{port}", backoff=backoff) as channel:
        unary = channel.unary_unary(Rpc.UNARY)
        call = unary(b"patient", timeout=10, wait_for_ready=True)
        # The endpoint fails first (nothing listens yet), and the call keeps waiting.
        state = h2pool.ConnectivityState.TRANSIENT_FAILURE
        await eventually(lambda: channel.pool.stats().endpoints[0].state is state)
        assert not call.done()
        with GrpcTestServer(options=PINGS_ALLOWED, port=port):
            assert await call == b"patient"


async def test_wait_for_ready_ends_at_the_deadline() -> None:
    backoff = h2pool.ConnectionBackoff(initial=0.05, max=0.2)
    async with channel_to(f"127.0.0.1:{free_port()}", backoff=backoff) as channel:
        unary = channel.unary_unary(Rpc.UNARY)
        with pytest.raises(rpc.RpcError) as caught:
            await unary(b"x", timeout=0.5, wait_for_ready=True)
    assert caught.value.code() is rpc.StatusCode.DEADLINE_EXCEEDED


# -- a graceful stop -------------------------------------------------------------------------


async def test_graceful_stop_of_a_replica_loses_no_call() -> None:
    # grpcio's stop(grace): GOAWAY(2^31-1) and a PING, then about 40 ms after the PING's
    # answer GOAWAY(last id); calls in flight finish. 20 callers keep calls going the whole
    # time, so calls start before, between and after the two GOAWAYs.
    with grpc_servers(2) as (stopping, staying):
        # Round robin: each replica takes half of the calls before the stop (p2c,
        # the default, would favour whichever replica answers faster on this machine).
        async with channel_to(stopping.target, staying.target, balancer="round_robin") as channel:
            stopped = None

            async def stop() -> None:
                nonlocal stopped
                stopped = stopping.stop(grace=5)

            run = Run(channel, total=2000, callers=20, hooks={600: stop})
            outcomes = await run.run()
            assert stopped is not None
            assert await asyncio.to_thread(stopped.wait, 5)
    assert [o.error for o in run.failures()] == []
    assert len(outcomes) == 2000
    assert stopping.calls_started() >= 250  # it served its share until the stop
    assert stopping.calls_started() + staying.calls_started() == 2000


# -- failover ----------------------------------------------------------------------------------


@pytest.mark.parametrize("retry", [False, True], ids=["no_retry_policy", "retry_policy"])
async def test_failover_with_one_replica_stopped_and_one_killed(
    grpc_process_factory: GrpcProcessFactory, retry: bool
) -> None:
    # Three grpcio replicas in child processes; 20 callers make 2,000 calls. After 600, one
    # replica stops gracefully; after 1,200, another is killed (SIGKILL). Each call sleeps
    # 10 ms in its handler, so calls are in flight on every replica at all times.
    options = (("grpc.http2.max_ping_strikes", 0),)
    stopping, killed, staying = (grpc_process_factory(options=options) for _ in range(3))
    config = RETRY_UNAVAILABLE if retry else None
    loop = asyncio.get_running_loop()
    killed_at = 0.0

    async def stop() -> None:
        stopping.stop(grace=5)

    async def kill() -> None:
        nonlocal killed_at
        killed_at = loop.time()
        killed.kill()

    async with channel_to(
        stopping.target, killed.target, staying.target, service_config=config
    ) as channel:
        run = Run(
            channel,
            total=2000,
            callers=20,
            metadata=(("x-sleep", "0.01"), ("x-echo-committed", "1")),
            hooks={600: stop, 1200: kill},
        )
        outcomes = await run.run()
    assert await asyncio.to_thread(stopping.wait) == 0  # its graceful stop completed
    assert len(outcomes) == 2000
    failures = run.failures()
    if retry:
        # gRFC A6: retried unless committed, i.e. the response headers had arrived (grpcio
        # sends them apart, before the message: a kill can fall in between).
        assert [o.error for o in failures if not committed(o)] == []
        assert all(o.error.endpoint == killed.target for o in failures if o.error)
        return
    # Only the calls in flight on the killed replica failed, as soon as it died.
    assert failures, "no call was in flight on the killed replica"
    for outcome in failures:
        error = outcome.error
        assert error is not None
        assert error.code() is rpc.StatusCode.UNAVAILABLE, error
        assert error.endpoint == killed.target, error
        assert killed.target in str(error)
        assert str(error).endswith(" (may have been processed)")
        assert str(error).count("processed)") == 1, error  # said once
    # All were in flight there when the pool learned of the death (the first failure), which
    # is after the kill; a call may have started just after the SIGKILL, before the kernel's
    # reset reached the pool: in flight on a dead replica all the same.
    noticed = min(o.ended for o in failures)
    assert killed_at <= noticed
    for outcome in failures:
        assert outcome.started < noticed
        assert outcome.ended - killed_at < 2.0  # at once, far from the 10 s deadline
    assert len(failures) <= 20


# -- a blackholed replica ---------------------------------------------------------------------

FUNCTIONAL_TIMEOUT = 0.3
#: docs/pool.md: a connection that goes silent while calls receive data is declared dead
#: within 2 x functional_timeout; the slack absorbs the noise of a shared 2-core machine.
DETECTION_BOUND = 2 * FUNCTIONAL_TIMEOUT
SLACK = 0.5


@pytest.mark.parametrize("retry", [False, True], ids=["no_retry_policy", "retry_policy"])
async def test_blackholed_replica_is_detected_within_the_bound(retry: bool) -> None:
    config = RETRY_UNAVAILABLE if retry else None
    loop = asyncio.get_running_loop()
    blackholed_at = 0.0
    with grpc_servers(2) as (silenced, steady):
        async with (
            FaultProxy(silenced.port) as proxy,
            channel_to(
                proxy.address,
                steady.target,
                functional_timeout=FUNCTIONAL_TIMEOUT,
                service_config=config,
            ) as channel,
        ):

            async def blackhole() -> None:
                nonlocal blackholed_at
                blackholed_at = loop.time()
                proxy.blackhole()  # TCP stays up; nothing moves either way

            run = Run(
                channel,
                total=600,
                callers=10,
                metadata=(("x-sleep", "0.02"), ("x-echo-committed", "1")),
                hooks={150: blackhole},
            )
            outcomes = await run.run()
            state = channel.pool.stats().endpoints[0]
    assert state.address == proxy.address
    assert state.state is not h2pool.ConnectivityState.READY
    assert "dead" in (state.last_error or ""), state
    in_flight = [o for o in outcomes if o.started < blackholed_at < o.ended]
    failures = run.failures()
    if retry:
        # As above: only calls committed before the blackhole may fail (gRFC A6).
        assert [o.error for o in failures if not committed(o)] == []
        detected = max(o.ended for o in in_flight)
    else:
        assert failures, "no call was in flight on the blackholed replica"
        for outcome in failures:
            assert outcome.error is not None
            assert outcome.error.code() is rpc.StatusCode.UNAVAILABLE, outcome.error
            assert outcome.endpoint == proxy.address
        detected = max(o.ended for o in failures)
    assert detected - blackholed_at <= DETECTION_BOUND + SLACK
    # Once it was found dead, every call went to the other replica.
    later = [o for o in outcomes if o.started > detected]
    assert len(later) > 100
    assert {o.endpoint for o in later} == {steady.target}
