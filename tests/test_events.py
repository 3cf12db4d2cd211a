"""Events (``h2pool.events``) and logging, end to end against h2pool's own server.

Each event type is produced by a real exchange; a listener that raises is
removed without breaking the pool; log records name their endpoint in the
message and in ``extra`` fields; with no logging configured nothing reaches
stderr.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from typing import TypeVar

import pytest

import h2pool
from h2pool import events, rpc
from h2pool._pool import pool as pool_module
from tests.peers.replica import Replica
from tests.servers import Handler, Server, hello
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(60)

E = TypeVar("E", bound=events.Event)

RETRY_503 = h2pool.RetryPolicy(
    max_attempts=3, statuses=frozenset({503}), backoff_initial=0.001, backoff_max=0.002
)


def answering(status: int, delay: float = 0.0) -> Handler:
    async def handler(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
        await proto.read_stream(stream_id, -1)
        await asyncio.sleep(delay)
        await proto.start_response(stream_id, {":status": str(status), "content-length": "0"})
        await proto.end_stream(stream_id)

    return handler


def of(kind: type[E], told: list[events.Event]) -> list[E]:
    return [event for event in told if isinstance(event, kind)]


async def test_a_connection_is_opened_then_ended_and_each_request_finishes() -> None:
    told: list[events.Event] = []
    async with Server(hello) as server:
        address = f"127.0.0.1:{server.port}"
        async with h2pool.Pool(f"http://{address}", on_event=told.append) as pool:
            response = await pool.get("/a")
            assert response.status_code == 200
            await pool.get("/b")
    opened = of(events.ConnectionOpened, told)
    ended = of(events.ConnectionEnded, told)
    assert len(opened) == 1, told
    assert len(ended) == 1, told
    assert told.index(opened[0]) < told.index(ended[0])
    assert opened[0].endpoint == ended[0].endpoint == address
    assert opened[0].connection == ended[0].connection
    assert opened[0].http_version == "HTTP/2"
    finished = of(events.RequestFinished, told)
    assert [(e.method, e.path, e.status, e.error, e.attempts) for e in finished] == [
        ("GET", "/a", 200, None, 1),
        ("GET", "/b", 200, None, 1),
    ]
    assert all(e.endpoint == address and e.duration > 0 for e in finished)


async def test_a_goaway_tells_the_connection_draining_and_a_new_one_opens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told: list[events.Event] = []
    async with (
        Server(hello) as server,
        h2pool.Pool(f"http://127.0.0.1:{server.port}", on_event=told.append) as pool,
    ):
        await pool.get("/")
        with caplog.at_level(logging.DEBUG, logger="h2pool"):
            server.protocols[0].send_goaway()  # graceful, as a server's idle close
            await eventually(lambda: bool(of(events.ConnectionDraining, told)))
            await pool.get("/")  # on a new connection
    assert [r for r in caplog.records if "draining" in r.getMessage()]
    routine = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert routine == []  # a graceful GOAWAY is routine: DEBUG only
    first = of(events.ConnectionOpened, told)[0]
    draining = of(events.ConnectionDraining, told)
    # The first: the server's GOAWAY; any other: the pool's own as it closed.
    assert draining[0].connection == first.connection
    assert len(of(events.ConnectionOpened, told)) >= 2


async def test_retries_and_the_failure_that_ends_a_request_are_told() -> None:
    told: list[events.Event] = []
    async with Server(answering(503)) as server:
        address = f"127.0.0.1:{server.port}"
        async with h2pool.Pool(
            f"http://{address}", retry=RETRY_503, retry_budget=None, on_event=told.append
        ) as pool:
            response = await pool.get("/x")
    assert response.status_code == 503
    retried = of(events.RequestRetried, told)
    assert [(e.endpoint, e.method, e.path, e.outcome) for e in retried] == [
        (address, "GET", "/x", 503)
    ] * 2
    assert all(e.reason and e.delay >= 0 for e in retried)
    [finished] = of(events.RequestFinished, told)
    assert (finished.status, finished.attempts) == (503, 3)


async def test_a_refused_connection_finishes_the_request_with_its_error_kind() -> None:
    told: list[events.Event] = []
    async with Server(hello) as server:
        port = server.port
    async with h2pool.Pool(f"http://127.0.0.1:{port}", on_event=told.append) as pool:
        with pytest.raises(h2pool.ConnectError):
            await pool.get("/")
    [finished] = of(events.RequestFinished, told)
    assert (finished.status, finished.error, finished.attempts) == (None, "ConnectError", 0)
    assert not of(events.ConnectionOpened, told)


async def test_the_budget_refusing_a_retry_is_told() -> None:
    told: list[events.Event] = []
    budget = h2pool.RetryBudget(ratio=0.0, min_per_second=0.0)
    async with Server(answering(503)) as server:
        address = f"127.0.0.1:{server.port}"
        async with h2pool.Pool(
            f"http://{address}", retry=RETRY_503, retry_budget=budget, on_event=told.append
        ) as pool:
            assert (await pool.get("/")).status_code == 503
    [refused] = of(events.RetryBudgetExhausted, told)
    assert (refused.endpoint, refused.outcome) == (address, 503)
    assert not of(events.RequestRetried, told)


async def test_an_endpoint_ejected_for_gateway_errors_is_told_with_the_reason() -> None:
    told: list[events.Event] = []
    ejection = h2pool.EjectionPolicy(consecutive_gateway_failures=2)
    async with Server(answering(503)) as bad, Server(hello) as good:
        bad_address = f"127.0.0.1:{bad.port}"
        async with h2pool.Pool(
            "http://svc",
            endpoints=[bad_address, f"127.0.0.1:{good.port}"],
            ejection=ejection,
            balancer="round_robin",
            on_event=told.append,
        ) as pool:
            for _ in range(6):
                await pool.get("/")
    [ejected] = of(events.EndpointEjected, told)
    assert ejected.endpoint == bad_address
    assert ejected.duration > 0
    assert "503" in ejected.reason


async def test_a_hedged_copy_is_told() -> None:
    told: list[events.Event] = []
    async with (
        Server(answering(200, delay=0.3)) as slow,
        Server(hello) as fast,
        h2pool.Pool(
            "http://svc",
            endpoints=[f"127.0.0.1:{slow.port}", f"127.0.0.1:{fast.port}"],
            hedge=h2pool.HedgePolicy(delay=0.02),
            on_event=told.append,
        ) as pool,
    ):
        await pool.start()
        await eventually(lambda: len(of(events.ConnectionOpened, told)) == 2)
        for _ in range(4):
            await pool.get("/")
    hedged = of(events.RequestHedged, told)
    assert hedged, told
    assert all(e.copies == 2 and e.method == "GET" for e in hedged)
    finished = of(events.RequestFinished, told)
    assert len(finished) == 4
    assert all(e.status == 200 for e in finished)
    assert sum(e.attempts for e in finished) == 4 + len(hedged)


async def test_a_listener_that_raises_is_logged_once_and_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told: list[events.Event] = []
    calls = 0

    def broken(event: events.Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("listener bug")

    async with (
        Server(hello) as server,
        h2pool.Pool(f"http://127.0.0.1:{server.port}", on_event=broken) as pool,
    ):
        pool.add_listener(told.append)
        with caplog.at_level(logging.ERROR, logger="h2pool"):
            assert (await pool.get("/")).status_code == 200
            assert (await pool.get("/")).status_code == 200
    assert calls == 1
    records = [r for r in caplog.records if "listener raised" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert "listener bug" in str(records[0].exc_info[1])
    assert len(of(events.RequestFinished, told)) == 2  # the others still told


async def test_a_removed_listener_is_no_longer_told() -> None:
    told: list[events.Event] = []
    async with Server(hello) as server, h2pool.Pool(f"http://127.0.0.1:{server.port}") as pool:
        pool.add_listener(told.append)
        await pool.get("/")
        pool.remove_listener(told.append)
        pool.remove_listener(told.append)  # twice: nothing
        count = len(told)
        await pool.get("/")
    assert len(told) == count
    with pytest.raises(TypeError, match="callable"):
        pool.add_listener("not callable")  # type: ignore[arg-type]


async def test_without_a_listener_no_event_is_even_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def built(*args: object) -> None:
        raise AssertionError("an event built with no listener")

    monkeypatch.setattr(pool_module, "request_finished", built)
    async with Server(hello) as server, h2pool.Pool(f"http://127.0.0.1:{server.port}") as pool:
        assert (await pool.get("/")).status_code == 200
        assert pool._events.listening == []


def test_events_are_frozen() -> None:
    event = events.EndpointEjected(endpoint="a:1", duration=1.0, reason="r")
    with pytest.raises(AttributeError):
        event.endpoint = "b:2"  # type: ignore[misc]


async def test_log_records_name_the_endpoint_and_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Server(answering(503)) as server:
        address = f"127.0.0.1:{server.port}"
        with caplog.at_level(logging.DEBUG, logger="h2pool"):
            async with h2pool.Pool(f"http://{address}", retry=RETRY_503) as pool:
                await pool.get("/x")
    opened = [r for r in caplog.records if "open with" in r.getMessage()]
    assert opened
    assert opened[0].levelno == logging.DEBUG
    assert opened[0].h2pool_endpoint == address  # type: ignore[attr-defined]
    assert isinstance(opened[0].h2pool_connection, int)  # type: ignore[attr-defined]
    assert address in opened[0].getMessage()
    retried = [r for r in caplog.records if "retried" in r.getMessage()]
    assert retried
    assert all(r.levelno == logging.INFO for r in retried)
    assert retried[0].h2pool_endpoint == address  # type: ignore[attr-defined]
    assert retried[0].h2pool_request == "GET /x"  # type: ignore[attr-defined]
    closed = [r for r in caplog.records if "closed" in r.getMessage() and r.name == "h2pool.pool"]
    assert closed
    assert all(r.levelno == logging.DEBUG for r in closed)


def test_nothing_reaches_stderr_without_logging_configured() -> None:
    """Failures log warnings; with no handler configured, logging's lastResort stays silent."""
    script = textwrap.dedent(
        """
        import asyncio, socket, h2pool

        async def main():
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()  # nothing listens there: connecting fails (a WARNING)
            policy = h2pool.EjectionPolicy(consecutive_failures=1)
            async with h2pool.Pool(f"http://127.0.0.1:{port}", ejection=policy) as pool:
                try:
                    await pool.get("/")
                except h2pool.ConnectError:
                    print("failed as expected")

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "failed as expected"
    assert done.stderr == ""


async def _grpc_ok(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
    """A gRPC unary method answering an empty message with status OK."""
    await proto.read_stream(stream_id, -1)
    await proto.start_response(stream_id, {":status": "200", "content-type": "application/grpc"})
    await proto.send_data(stream_id, b"\x00\x00\x00\x00\x00")
    await proto.send_trailers(stream_id, {"grpc-status": "0"})


async def test_the_rpc_channel_passes_on_event_to_its_pool() -> None:
    told: list[events.Event] = []
    async with Server(_grpc_ok) as server:
        address = f"127.0.0.1:{server.port}"
        async with rpc.insecure_channel(address, on_event=told.append) as channel:
            assert await channel.unary_unary("/pkg.Service/Method")(b"") == b""
    [finished] = of(events.RequestFinished, told)
    assert (finished.endpoint, finished.method, finished.path) == (
        address,
        "POST",
        "/pkg.Service/Method",
    )
    assert finished.status == 200


async def test_an_endpoint_back_after_failing_is_told_restored() -> None:
    told: list[events.Event] = []
    backoff = h2pool.ConnectionBackoff(initial=0.05, max=0.1)
    with Replica() as replica:
        async with h2pool.Pool(
            f"http://{replica.address}", backoff=backoff, on_event=told.append
        ) as pool:
            await pool.get("/")
            replica.kill()
            await eventually(lambda: bool(of(events.ConnectionEnded, told)), timeout=10)
            replica.start()
            await eventually(lambda: bool(of(events.EndpointRestored, told)), timeout=10)
            assert (await pool.get("/")).status_code == 200
    [restored] = of(events.EndpointRestored, told)
    assert restored.endpoint == replica.address
    assert restored.failure
    # Told as the connection that proves it back opens, just before its ConnectionOpened.
    following = told[told.index(restored) + 1]
    assert isinstance(following, events.ConnectionOpened)
    assert following.endpoint == replica.address
