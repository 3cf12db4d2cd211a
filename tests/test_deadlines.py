"""h2pool.deadline(): the caller's deadline, pure (nesting, the min) and end to end.

End to end: a replica in its own process answering late (Pool, SyncPool, httpx), and a
grpcio server whose handler sees the ``grpc-timeout`` h2pool sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool import rpc
from h2pool._pool.deadlines import Deadline, bound, caller_deadline, earliest
from tests.peers import GrpcTestServer, Rpc
from tests.peers.replica import Replica
from tests.servers import Server

# A deadline well under the replica's delay: the deadline, not the answer, ends the request.
_DELAY = 1.0
_SHORT = 0.2
# What the error says when the caller's deadline, not the request's timeout, ended it.
_ENDED = r"the deadline \(h2pool\.deadline\) passed"

seconds = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


# --- Pure: the decisions ----------------------------------------------------------------------


@given(st.one_of(st.none(), seconds), seconds)
def test_earliest_never_extends(outer: float | None, inner: float) -> None:
    at = earliest(outer, inner)
    assert at <= inner
    if outer is not None:
        assert at <= outer
        assert at in (outer, inner)
    else:
        assert at == inner


@given(st.one_of(st.none(), st.floats(min_value=1e-3, max_value=1e6)), st.floats(-10, 1e6))
def test_bound_is_the_smaller_and_says_which(timeout: float | None, left: float) -> None:
    chosen, by_caller = bound(timeout, left)
    assert chosen == (left if timeout is None else min(timeout, left))
    assert by_caller == (timeout is None or left < timeout)


@given(st.lists(st.floats(min_value=0.0, max_value=1e4), min_size=1, max_size=8))
def test_nested_deadlines_take_the_earliest(nested: list[float]) -> None:
    assert caller_deadline() is None
    entered: list[Deadline] = []
    for secs in nested:
        before = time.monotonic()
        block = h2pool.deadline(secs).__enter__()
        at = block.expires_at
        assert at is not None
        assert caller_deadline() == at
        outer = [b.expires_at for b in entered if b.expires_at is not None]
        # Never later than its own seconds, nor than any enclosing deadline.
        assert at <= time.monotonic() + secs
        assert all(at <= o for o in outer)
        # Exactly its own unless an enclosing one ends first.
        if not outer or before + secs < min(outer):
            assert at >= before + secs
        else:
            assert at == min(outer)
        entered.append(block)
    # Leaving each restores the one around it.
    while entered:
        entered.pop().__exit__(None, None, None)
        assert caller_deadline() == (entered[-1].expires_at if entered else None)


def test_remaining_and_repr() -> None:
    block = h2pool.deadline(5.0)
    assert block.remaining() is None
    assert "not entered" in repr(block)
    with block:
        left = block.remaining()
        assert left is not None
        assert 4.0 < left <= 5.0
        assert "left" in repr(block)
    with h2pool.deadline(0.0) as passed:
        assert passed.remaining() == 0.0


def test_used_once() -> None:
    block = h2pool.deadline(1.0)
    with block:
        pass
    with pytest.raises(RuntimeError, match="used once"):
        block.__enter__()


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bad_seconds(value: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        h2pool.deadline(value)
    with pytest.raises(TypeError, match="seconds"):
        h2pool.deadline("1")  # type: ignore[arg-type]


async def test_async_with_and_tasks_inherit() -> None:
    async with h2pool.deadline(3.0) as block:
        at = block.expires_at

        async def inside() -> float | None:
            return caller_deadline()

        assert await asyncio.create_task(inside()) == at
    assert caller_deadline() is None
    # Another task's deadline is its own.
    other = contextvars.copy_context()
    assert other.run(caller_deadline) is None


def test_threads_do_not_share_it() -> None:
    seen: list[float | None] = []
    with h2pool.deadline(3.0):
        thread = threading.Thread(target=lambda: seen.append(caller_deadline()))
        thread.start()
        thread.join()
    assert seen == [None]


# --- End to end: a late replica ---------------------------------------------------------------


@pytest.fixture(scope="module")
def late() -> Iterator[Replica]:
    with Replica(delay=_DELAY) as replica:
        yield replica


async def test_pool_request_ends_at_the_deadline(late: Replica) -> None:
    async with h2pool.Pool(f"http://{late.address}", timeout=10.0) as pool:
        started = time.monotonic()
        with pytest.raises(h2pool.RequestTimeout, match=_ENDED):
            async with h2pool.deadline(_SHORT):
                await pool.get("/")
        assert time.monotonic() - started < _DELAY
        # The request's own shorter timeout decides, and says so.
        with pytest.raises(h2pool.RequestTimeout) as caught, h2pool.deadline(30.0):
            await pool.get("/", timeout=_SHORT)
        assert "timed out" in str(caught.value)
        assert "h2pool.deadline" not in str(caught.value)


async def test_inner_longer_deadline_does_not_extend(late: Replica) -> None:
    async with h2pool.Pool(f"http://{late.address}", timeout=10.0) as pool:
        started = time.monotonic()
        with (
            pytest.raises(h2pool.RequestTimeout, match=_ENDED),
            h2pool.deadline(_SHORT),
            h2pool.deadline(30.0),
        ):
            await pool.get("/")
        assert time.monotonic() - started < _DELAY


async def test_stream_is_bounded(late: Replica) -> None:
    async with h2pool.Pool(f"http://{late.address}", timeout=None) as pool:

        async def open_stream() -> None:
            async with h2pool.deadline(_SHORT), pool.stream("GET", "/"):
                pass

        with pytest.raises(h2pool.RequestTimeout, match=_ENDED):
            await open_stream()


async def test_stream_body_read_ends_at_the_deadline() -> None:
    async def headers_then_nothing(
        proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
    ) -> None:
        await proto.start_response(stream_id, {":status": "200"})
        await asyncio.Event().wait()  # the body never comes (cancelled when the server closes)

    async with (
        Server(headers_then_nothing) as server,
        h2pool.Pool(f"http://127.0.0.1:{server.port}", timeout=30.0) as pool,
    ):

        async def read_late() -> None:
            async with h2pool.deadline(_SHORT), pool.stream("GET", "/") as response:
                await response.aread()

        with pytest.raises(h2pool.RequestTimeout, match=rf"reading the response body: {_ENDED}"):
            await read_late()


async def test_health_checks_started_inside_do_not_inherit_it() -> None:
    seen: list[float | None] = []
    checked = asyncio.Event()

    async def check(probe: h2pool.Probe) -> bool:
        seen.append(caller_deadline())
        checked.set()
        return True

    health = h2pool.HealthCheck(check=check, interval=0.05)
    with Replica() as replica:
        pool = h2pool.Pool(f"http://{replica.address}", health_check=health)
        try:
            with h2pool.deadline(5.0):  # the first request starts the checks
                assert (await pool.get("/")).status_code == 200
            await asyncio.wait_for(checked.wait(), 10.0)
        finally:
            await pool.aclose()
    assert seen
    assert all(at is None for at in seen)


async def test_passed_deadline_sends_nothing() -> None:
    with Replica() as replica:
        pool = h2pool.Pool(f"http://{replica.address}")
        try:
            with h2pool.deadline(0.0):
                for _ in range(3):
                    with pytest.raises(h2pool.RequestTimeout, match="had passed") as caught:
                        await pool.get("/")
                    assert caught.value.never_processed
                    assert caught.value.request is not None
            # No connection was even opened: the pool was never started.
            assert all(ep.connections == 0 for ep in pool.stats().endpoints)
            assert await replica.count() == 0
            assert (await pool.get("/")).status_code == 200  # outside it: sent
            assert await replica.count() == 1
        finally:
            await pool.aclose()


async def test_httpx_transport_is_bounded(late: Replica) -> None:
    transport = h2pool.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as client:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            async with h2pool.deadline(_SHORT):
                await client.get(f"http://{late.address}/")
        assert time.monotonic() - started < _DELAY


def test_sync_pool_carries_the_callers_deadline(late: Replica) -> None:
    with h2pool.SyncPool(f"http://{late.address}", timeout=10.0) as pool:
        started = time.monotonic()
        with pytest.raises(h2pool.RequestTimeout, match=_ENDED), h2pool.deadline(_SHORT):
            pool.get("/")
        assert time.monotonic() - started < _DELAY
        # Another thread's deadline is not this one's: it waits for the answer.
        assert pool.get("/", timeout=10.0).status_code == 200


def test_sync_pool_passed_deadline_sends_nothing() -> None:
    with Replica() as replica, h2pool.SyncPool(f"http://{replica.address}") as pool:
        with h2pool.deadline(0.0), pytest.raises(h2pool.RequestTimeout, match="had passed"):
            pool.get("/")
        assert asyncio.run(replica.count()) == 0


# --- End to end: rpc against grpcio -----------------------------------------------------------


@pytest.mark.peer
async def test_rpc_sends_the_deadline_as_grpc_timeout(grpc_server: GrpcTestServer) -> None:
    async with rpc.insecure_channel(grpc_server.target) as channel:
        echo = channel.unary_unary(Rpc.UNARY.value)
        async with h2pool.deadline(5.0):
            call = echo(b"ping", timeout=60.0)
            left = call.time_remaining()
            assert left is not None
            assert 4.0 < left <= 5.0
            assert await call == b"ping"
        seen = grpc_server.log.last_time_remaining(Rpc.UNARY.value)
        assert seen is not None
        assert 3.0 < seen <= 5.0  # grpcio read it from grpc-timeout
        # The call's own shorter timeout wins.
        with h2pool.deadline(60.0):
            assert await echo(b"ping", timeout=2.0) == b"ping"
        seen = grpc_server.log.last_time_remaining(Rpc.UNARY.value)
        assert seen is not None
        assert 0.5 < seen <= 2.0


@pytest.mark.peer
async def test_rpc_ends_at_the_deadline(grpc_server: GrpcTestServer) -> None:
    async with rpc.insecure_channel(grpc_server.target) as channel:
        echo = channel.unary_unary(Rpc.UNARY.value)
        started = time.monotonic()
        with pytest.raises(rpc.RpcError) as caught:
            async with h2pool.deadline(_SHORT):
                await echo(b"ping", metadata=(("x-sleep", "30"),))
        assert caught.value.code() is rpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5.0


@pytest.mark.peer
async def test_rpc_passed_deadline_sends_nothing(grpc_server: GrpcTestServer) -> None:
    async with rpc.insecure_channel(grpc_server.target) as channel:
        echo = channel.unary_unary(Rpc.UNARY.value)
        with h2pool.deadline(0.0), pytest.raises(rpc.RpcError) as caught:
            await echo(b"ping")
        assert caught.value.code() is rpc.StatusCode.DEADLINE_EXCEEDED
        assert caught.value.never_processed
        assert grpc_server.calls_started() == 0
