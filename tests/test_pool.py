"""The pool's API and its safety rules, against h2pool's server, nghttpd and the scripted peer."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import h2.events
import h2.settings
import pytest

import h2pool
from tests.peers import INDEX_HTML, Nghttpd
from tests.rawpeer import raw_peer
from tests.servers import Server, echo, hello
from tests.waiting import eventually

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


async def test_request_and_response_api(nghttpd_h2c: Nghttpd) -> None:
    async with h2pool.Pool(url(nghttpd_h2c.port)) as pool:
        response = await pool.request("GET", "/index.html")
        assert response.status_code == 200
        assert response.content == INDEX_HTML
        assert response.http_version == "HTTP/2"
        assert response.endpoint == f"127.0.0.1:{nghttpd_h2c.port}"
        assert ("server", response.header("server")) in response.headers.multi_items()
        assert response.headers["Server"] == response.header("server")
        assert all(not name.startswith(":") for name, _ in response.headers.multi_items())
        assert response.trailers == []
        assert isinstance(response.trailers, h2pool.Headers)
        async with pool.stream("GET", "/index.html") as streamed:
            with pytest.raises(h2pool.ResponseNotRead):
                _ = streamed.content
            assert [chunk async for chunk in streamed.aiter_bytes()] == [INDEX_HTML]
        assert (await pool.request("GET", "/missing")).status_code == 404
        stats = pool.stats()
        assert [ep.state for ep in stats.endpoints] == [h2pool.ConnectivityState.READY]
        assert stats.active == 0
        assert stats.endpoints[0].rtt is not None


async def test_streaming_both_ways_with_trailers() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"part{i};".encode()
            await asyncio.sleep(0)

    async with Server(echo) as server, h2pool.Pool(url(server.port)) as pool:
        async with pool.stream("POST", "/", content=chunks(), headers={"x-t": "1"}) as response:
            assert response.status_code == 200
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        assert body == b"part0;part1;part2;part3;part4;"
        assert response.trailers == [("x-t", "1")]
        for content in (b"bytes", bytearray(b"bytes"), "bytes"):
            response = await pool.request("PUT", "/", content=content)
            assert response.content == b"bytes"
            assert ("content-length", "5") in response.trailers.multi_items()


async def test_timeout_covers_everything_and_is_a_timeout_error() -> None:
    async def never(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await asyncio.Event().wait()

    async with Server(never) as server, h2pool.Pool(url(server.port)) as pool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(h2pool.RequestTimeout) as timed_out:
            await pool.request("GET", "/", timeout=0.3)
        assert 0.3 <= loop.time() - started < 1.0
        assert isinstance(timed_out.value, TimeoutError)
        assert isinstance(timed_out.value, h2pool.H2PoolError)
        assert f"GET {url(server.port)}/: timed out" in str(timed_out.value)
        assert pool.stats().active == 0


async def test_every_endpoint_down_fails_clearly_when_the_timeout_runs_out() -> None:
    async with h2pool.Pool(
        "http://service.test",
        endpoints=["127.0.0.1:1", "127.0.0.1:2"],
        timeout=0.5,
        wait_for_ready=True,
    ) as pool:
        with pytest.raises(h2pool.RequestTimeout) as timed_out:
            await pool.request("GET", "/")
        message = str(timed_out.value)
        assert "127.0.0.1:1 transient_failure" in message
        assert "127.0.0.1:2 transient_failure" in message
        stats = pool.stats()
        assert all(ep.consecutive_failures >= 1 for ep in stats.endpoints)
        assert all("ConnectError" in (ep.last_error or "") for ep in stats.endpoints)


async def test_goaway_below_received_posts_retries_them_and_each_is_processed_once() -> None:
    processed: Counter[bytes] = Counter()
    refused: list[int] = []
    first_connection = True

    async def serve(proto: h2pool.H2Protocol) -> None:
        nonlocal first_connection
        refuse, first_connection = first_connection, False
        batch = [await proto.recv_request() for _ in range(3 if refuse else 1)]
        if refuse:
            # Promise to process only the first stream: the others were received
            # but must be retried elsewhere.
            proto.send_goaway(last_stream_id=batch[0][0])
        while True:
            for stream_id, _ in batch:
                try:
                    body = await proto.read_stream(stream_id, -1)
                except h2pool.StreamRefused:
                    refused.append(stream_id)
                    continue
                processed[body] += 1
                await proto.start_response(stream_id, {":status": "200"})
                await proto.send_data(stream_id, b"done " + body, end_stream=True)
            batch = [await proto.recv_request()]

    server = await h2pool.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with h2pool.Pool(url(port), min_connections=0) as pool:
        bodies = [f"order-{i}".encode() for i in range(3)]
        responses = await asyncio.gather(
            *(pool.request("POST", "/orders", content=body) for body in bodies)
        )
    server.close()
    await server.wait_closed()
    assert [r.content for r in responses] == [b"done " + body for body in bodies]
    assert processed == Counter(bodies)  # every POST exactly once
    assert len(refused) == 2


async def test_retry_statuses_for_idempotent_methods_only() -> None:
    calls: Counter[str] = Counter()

    async def flaky(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
        method = dict(headers)[":method"]
        calls[method] += 1
        await proto.read_stream(stream_id, -1)
        if calls[method] < 3:
            await proto.start_response(
                stream_id, {":status": "503", "retry-after": "0"}, end_stream=True
            )
        else:
            await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

    async with Server(flaky) as server, h2pool.Pool(url(server.port)) as pool:
        assert (await pool.request("GET", "/")).status_code == 200
        assert calls["GET"] == 3
        assert (await pool.request("POST", "/")).status_code == 503
        assert calls["POST"] == 1
    no_retry = h2pool.RetryPolicy(max_attempts=1)
    calls.clear()
    async with Server(flaky) as server, h2pool.Pool(url(server.port), retry=no_retry) as pool:
        assert (await pool.request("GET", "/")).status_code == 503


async def test_possibly_processed_requests_are_retried_only_when_idempotent() -> None:
    seen: Counter[str] = Counter()

    async def drop_first(proto: h2pool.H2Protocol) -> None:
        while True:
            stream_id, headers = await proto.recv_request()
            method = dict(headers)[":method"]
            seen[method] += 1
            if seen[method] == 1:
                proto.close_connection()  # after receiving it: maybe processed
                return
            await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

    server = await h2pool.start_server(drop_first, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with h2pool.Pool(url(port), min_connections=0, max_streams_per_connection=1) as pool:
        assert (await pool.request("GET", "/")).status_code == 200
        assert seen["GET"] == 2
        with pytest.raises(h2pool.H2ConnectionError) as lost:
            await pool.request("POST", "/", content=b"pay")
        assert not lost.value.never_processed
        assert seen["POST"] == 1
    server.close()
    await server.wait_closed()


async def test_pending_requests_are_bounded() -> None:
    release = asyncio.Event()

    async def hold(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
        if dict(headers)[":path"] != "/warm-up":
            await release.wait()
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

    async with Server(hold, concurrency=2) as server:
        pool = h2pool.Pool(url(server.port), max_connections=1, max_pending=3)
        async with pool:
            await pool.request("GET", "/warm-up")  # the connection is up: 2 slots
            tasks = [asyncio.ensure_future(pool.request("GET", "/")) for _ in range(8)]
            done, _ = await asyncio.wait(tasks, timeout=0.2)
            overloaded = [t for t in done if isinstance(t.exception(), h2pool.PoolOverloaded)]
            assert len(overloaded) == 3  # 2 in flight, 3 waiting, 3 turned away
            assert pool.stats().pending == 3
            release.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert sum(isinstance(r, h2pool.Response) for r in results) == 5


async def test_cancelling_thousands_of_requests_leaks_nothing() -> None:
    async def jittery(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await proto.read_stream(stream_id, -1)
        await asyncio.sleep(random.random() * 0.003)
        await proto.start_response(stream_id, {":status": "200"})
        for _chunk in range(3):
            await proto.send_data(stream_id, b"x" * 1000)
            await asyncio.sleep(0)
        await proto.end_stream(stream_id)

    rng = random.Random(7)
    async with Server(jittery) as server, h2pool.Pool(url(server.port), max_connections=2) as pool:
        for _ in range(10):
            tasks = [
                asyncio.ensure_future(pool.request("POST", "/", content=b"y" * 100))
                for _ in range(300)
            ]
            for task in tasks:
                if rng.random() < 0.7:
                    asyncio.get_running_loop().call_later(rng.random() * 0.01, task.cancel)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, h2pool.Response | asyncio.CancelledError) for r in results), {
                type(r) for r in results
            }
        stats = pool.stats()
        assert (stats.active, stats.pending) == (0, 0)
        connections = [conn for ep in pool._maintenance.endpoints for conn in ep.connections]
        assert all(conn.open_streams == 0 for conn in connections)
        # Still serving at full width afterwards.
        responses = await asyncio.gather(*(pool.request("GET", "/") for _ in range(300)))
        assert {r.status_code for r in responses} == {200}


async def test_aclose_lets_requests_in_flight_finish() -> None:
    started = asyncio.Event()

    async def slow(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
        started.set()
        await asyncio.sleep(0.2)
        await hello(proto, stream_id, headers)

    async with Server(slow) as server:
        pool = h2pool.Pool(url(server.port))
        in_flight = asyncio.ensure_future(pool.request("GET", "/slow"))
        await started.wait()
        closing = asyncio.ensure_future(pool.aclose())
        await asyncio.sleep(0)
        with pytest.raises(h2pool.PoolClosed):
            await pool.request("GET", "/late")
        assert (await in_flight).content == b"hello /slow"
        await closing
        assert pool.stats().closed


async def test_stale_connection_is_pinged_before_a_post() -> None:
    async with raw_peer() as peer:
        pool = h2pool.Pool(url(peer.port), functional_timeout=0.1, min_connections=0)
        async with pool:
            first = asyncio.ensure_future(pool.request("GET", "/"))
            conn = await peer.accept()
            request = await conn.next_event(h2.events.RequestReceived)
            conn.respond(request.stream_id, b"ok")
            await first
            await asyncio.sleep(0.25)  # idle beyond the functional timeout: stale
            while not conn.events.empty():
                conn.events.get_nowait()
            post = asyncio.ensure_future(pool.request("POST", "/", content=b"once"))
            first_event = await conn.next_event(h2.events.Event)
            assert isinstance(first_event, h2.events.PingReceived)  # proof of life first
            request = await conn.next_event(h2.events.RequestReceived)
            conn.respond(request.stream_id, b"posted")
            assert (await post).content == b"posted"


async def test_peer_lowering_its_limit_below_open_streams_does_not_deadlock() -> None:
    async with raw_peer() as peer:
        pool = h2pool.Pool(url(peer.port), max_connections=1, min_connections=0)
        async with pool:
            tasks = [asyncio.ensure_future(pool.request("GET", f"/{i}")) for i in range(10)]
            conn = await peer.accept()
            streams = [
                (await conn.next_event(h2.events.RequestReceived)).stream_id for _ in range(10)
            ]
            conn.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
            conn.flush()
            await conn.next_event(h2.events.SettingsAcknowledged)
            more = [asyncio.ensure_future(pool.request("GET", "/more")) for _ in range(3)]
            for stream_id in streams:
                conn.respond(stream_id, b"ok")
            assert {(await t).status_code for t in tasks} == {200}
            for _ in range(3):  # admitted one or two at a time under the new limit
                request = await conn.next_event(h2.events.RequestReceived)
                conn.respond(request.stream_id, b"more")
            assert [(await t).content for t in more] == [b"more"] * 3


async def test_endpoints_from_dns(nghttpd_h2c: Nghttpd) -> None:
    async with h2pool.Pool(f"http://localhost:{nghttpd_h2c.port}", timeout=5) as pool:
        response = await pool.request("GET", "/index.html")
        assert response.content == INDEX_HTML
        addresses = [ep.address for ep in pool.stats().endpoints]
        assert f"127.0.0.1:{nghttpd_h2c.port}" in addresses


async def test_full_connections_make_the_pool_open_more(nghttpd_h2c: Nghttpd) -> None:
    async with h2pool.Pool(url(nghttpd_h2c.port), max_connections=4) as pool:
        responses = await asyncio.gather(*(pool.request("GET", "/index.html") for _ in range(350)))
        assert {r.status_code for r in responses} == {200}
        (endpoint,) = pool.stats().endpoints
        assert endpoint.connections == 4  # nghttpd allows 100 streams per connection


async def test_failing_endpoints_are_ejected_but_never_all() -> None:
    fast = h2pool.ConnectionBackoff(initial=0.02, max=0.05)
    eject = h2pool.EjectionPolicy(consecutive_failures=2, base_time=30, max_ejected_percent=100)
    async with Server(hello) as server:
        live = f"127.0.0.1:{server.port}"
        pool = h2pool.Pool(
            "http://service.test", endpoints=[live, "127.0.0.1:1"], backoff=fast, ejection=eject
        )
        async with pool:
            await eventually(lambda: pool.stats().endpoints[1].ejected)
            stats = pool.stats().endpoints
            assert stats[1].ejections == 1
            assert "ConnectError" in (stats[1].last_error or "")
            assert (stats[1].ejection_reason or "").startswith(
                "2 failures in a row, the last: ConnectError"
            )
            assert not stats[0].ejected
            assert (await pool.request("GET", "/x")).endpoint == live
    dead = h2pool.Pool(
        "http://service.test",
        endpoints=["127.0.0.1:1", "127.0.0.1:2"],
        backoff=fast,
        ejection=eject,
        timeout=0.5,
        wait_for_ready=True,
    )
    async with dead:
        with pytest.raises(h2pool.RequestTimeout):
            await dead.request("GET", "/")
        assert sum(ep.ejected for ep in dead.stats().endpoints) == 1  # one stays in rotation


async def test_endpoints_are_resolved_again_when_they_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The name first resolves to a dead address, later to a live one: a DNS
    # change is simulated, everything else is real.
    async with Server(hello) as server:
        loop = asyncio.get_running_loop()
        answers = [["127.0.0.2"], ["127.0.0.1"]]

        async def getaddrinfo(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
            assert host == "svc.test"
            ips = answers.pop(0) if len(answers) > 1 else answers[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
        pool = h2pool.Pool(
            f"http://svc.test:{server.port}",
            backoff=h2pool.ConnectionBackoff(initial=0.02, max=0.05),
            ejection=h2pool.EjectionPolicy(consecutive_failures=2, max_ejected_percent=100),
            resolve_interval=0,
            wait_for_ready=True,  # the request waits for the name to resolve elsewhere
        )
        async with pool:
            response = await pool.request("GET", "/moved", timeout=5)
            assert response.endpoint == f"127.0.0.1:{server.port}"
            assert [ep.address for ep in pool.stats().endpoints] == [f"127.0.0.1:{server.port}"]


async def test_failover_example_runs_without_a_failed_request() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "pool.py"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)},  # this checkout's h2pool
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[-1] == "failed: 0"
    assert sum(line.endswith(": ready") for line in lines) == 2  # the crashed one is not
    assert all(f"hello from {name}:" in out.decode() for name in "abc")
