"""SyncHTTPTransport: h2pool behind httpx.Client, against nghttpd and h2pool's own server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import h2pool
from tests.peers import BIG_BIN_SIZE, INDEX_HTML, Nghttpd
from tests.servers import echo, hello
from tests.threaded_server import ThreadedServer

THREADS = 16


def pool_threads() -> list[threading.Thread]:
    """The threads of sync transports (and of their loops' executors) alive now."""
    return [t for t in threading.enumerate() if t.name.startswith(("h2pool", "asyncio"))]


@pytest.fixture
def echo_server() -> Iterator[ThreadedServer]:
    with ThreadedServer(echo) as server:
        yield server


@pytest.mark.peer
def test_get_and_streamed_download_from_nghttpd(nghttpd_h2c: Nghttpd, big_bin_sha256: str) -> None:
    before = pool_threads()
    with httpx.Client(transport=h2pool.SyncHTTPTransport()) as client:
        response = client.get(nghttpd_h2c.url("/index.html"))
        assert (response.status_code, response.http_version) == (200, "HTTP/2")
        assert response.content == INDEX_HTML
        with client.stream("GET", nghttpd_h2c.url("/big.bin")) as streamed:
            digest, size, chunks = hashlib.sha256(), 0, 0
            for chunk in streamed.iter_bytes():
                digest.update(chunk)
                size += len(chunk)
                chunks += 1
        assert (size, digest.hexdigest()) == (BIG_BIN_SIZE, big_bin_sha256)
        assert chunks > 1
    assert pool_threads() == before


def test_post_bytes_and_a_generator(echo_server: ThreadedServer) -> None:
    iterated_in: set[threading.Thread] = set()

    def chunks() -> Iterator[bytes]:
        for part in (b"a" * 5000, b"b" * 5000):
            iterated_in.add(threading.current_thread())
            yield part

    with httpx.Client(transport=h2pool.SyncHTTPTransport()) as client:
        response = client.post(echo_server.url("/echo"), content=b"payload")
        assert (response.status_code, response.content) == (200, b"payload")
        assert response.headers["x-echo"] == "1"
        response = client.post(echo_server.url("/echo"), content=chunks())
        assert response.content == b"a" * 5000 + b"b" * 5000
        assert iterated_in == {threading.current_thread()}
        response = client.post(echo_server.url("/echo"), json={"k": [1, 2]})
        assert response.json() == {"k": [1, 2]}


def test_leaving_a_stream_unread_releases_it(echo_server: ThreadedServer) -> None:
    transport = h2pool.SyncHTTPTransport()
    with httpx.Client(transport=transport) as client:
        with client.stream("POST", echo_server.url("/"), content=b"x" * 100_000) as response:
            assert response.status_code == 200
            assert len(next(response.iter_bytes())) > 0
        (stats,) = transport.stats().values()
        assert stats.active == 0


def test_sixteen_threads_share_one_client() -> None:
    start = threading.Barrier(THREADS)
    transport = h2pool.SyncHTTPTransport(max_connections=1)
    with ThreadedServer(hello) as server, httpx.Client(transport=transport) as client:

        def work(index: int) -> list[bytes]:
            start.wait(timeout=10)
            return [client.get(server.url(f"/{index}/{n}")).content for n in range(10)]

        with concurrent.futures.ThreadPoolExecutor(THREADS) as threads:
            results = list(threads.map(work, range(THREADS)))
        assert results == [
            [f"hello /{index}/{n}".encode() for n in range(10)] for index in range(THREADS)
        ]
        (stats,) = transport.stats().values()
        (endpoint,) = stats.endpoints
        assert endpoint.connections == 1
        assert len(server.server.protocols) == 1


def test_errors_are_httpx_classes() -> None:
    release = asyncio.Event()

    async def held(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await release.wait()
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused = unused.getsockname()[1]  # bound, never listening: refused
        with (
            ThreadedServer(held) as server,
            httpx.Client(transport=h2pool.SyncHTTPTransport()) as client,
        ):
            with pytest.raises(httpx.ReadTimeout) as caught:
                client.get(server.url("/"), timeout=httpx.Timeout(5, read=0.2))
            assert isinstance(caught.value.__cause__, h2pool.ReadTimeout)
            with pytest.raises(httpx.ConnectError):
                client.get(f"http://127.0.0.1:{refused}/", timeout=5)
            server.call_soon(release.set)


def test_refused_from_a_running_event_loop(echo_server: ThreadedServer) -> None:
    async def inside(client: httpx.Client) -> None:
        with pytest.raises(RuntimeError, match=r"h2pool\.Pool"):
            client.get(echo_server.url("/"))  # noqa: ASYNC212 - refused there

    with httpx.Client(transport=h2pool.SyncHTTPTransport()) as client:
        asyncio.run(inside(client))
        assert client.get(echo_server.url("/")).status_code == 200


def test_a_sync_trace_callback_gets_the_events(echo_server: ThreadedServer) -> None:
    events: list[str] = []

    def trace(name: str, info: dict[str, Any]) -> None:
        events.append(name)

    with httpx.Client(transport=h2pool.SyncHTTPTransport()) as client:
        response = client.get(echo_server.url("/"), extensions={"trace": trace})
        assert response.status_code == 200
    # The async transport's events, each called in the loop thread through the sync callback.
    assert events == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "http2.send_connection_init.started",
        "http2.send_connection_init.complete",
        "http2.send_request_headers.started",
        "http2.send_request_headers.complete",
        "http2.send_request_body.started",
        "http2.send_request_body.complete",
        "http2.receive_response_headers.started",
        "http2.receive_response_headers.complete",
        "http2.receive_response_body.started",
        "http2.receive_response_body.complete",
        "http2.response_closed.started",
        "http2.response_closed.complete",
    ]
