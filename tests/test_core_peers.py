"""The core module against third-party peers: nghttpd, curl, h2load and grpcio."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

import h2pool
from tests.peers import (
    BIG_BIN_SIZE,
    INDEX_HTML,
    Certificates,
    GrpcEchoServer,
    Nghttpd,
    frame_message,
    run_curl,
    run_h2load,
)
from tests.servers import Server, hello
from tests.waiting import eventually

pytestmark = pytest.mark.peer


def get(path: str) -> dict[str, str]:
    return {":method": "GET", ":path": path}


async def fetch(client: h2pool.H2Protocol, path: str) -> tuple[str, bytes]:
    stream_id = await client.start_request(get(path), end_stream=True)
    headers = await client.recv_response(stream_id)
    return dict(headers)[":status"], await client.read_stream(stream_id, -1)


async def test_nghttpd_h2c_small_and_16_mib_files(
    nghttpd_h2c: Nghttpd, big_bin_sha256: str
) -> None:
    client = await h2pool.open_connection("127.0.0.1", nghttpd_h2c.port, functional_timeout=2.0)
    assert await fetch(client, "/index.html") == ("200", INDEX_HTML)
    status, big = await fetch(client, "/big.bin")
    assert status == "200"
    assert len(big) == BIG_BIN_SIZE
    assert hashlib.sha256(big).hexdigest() == big_bin_sha256
    assert (await fetch(client, "/missing"))[0] == "404"
    await client.shutdown(timeout=5)


async def test_nghttpd_many_concurrent_streams_under_its_limit(nghttpd_h2c: Nghttpd) -> None:
    client = await h2pool.open_connection("127.0.0.1", nghttpd_h2c.port)
    await client.wait_functional()
    assert client.max_streams == 100  # nghttpd's MAX_CONCURRENT_STREAMS
    results = await asyncio.gather(*(fetch(client, "/index.html") for _ in range(500)))
    assert results == [("200", INDEX_HTML)] * 500
    assert client.open_streams == 0
    await client.shutdown(timeout=5)


async def test_nghttpd_tls_with_alpn(
    nghttpd_tls: Nghttpd, certificates: Certificates, big_bin_sha256: str
) -> None:
    context = h2pool.client_ssl_context(cafile=str(certificates.ca_pem))
    client = await h2pool.open_connection("localhost", nghttpd_tls.port, ssl=context)
    assert await fetch(client, "/index.html") == ("200", INDEX_HTML)
    _status, big = await fetch(client, "/big.bin")
    assert hashlib.sha256(big).hexdigest() == big_bin_sha256
    client.close_connection()
    with pytest.raises(h2pool.ConnectError, match="certificate verif"):
        await h2pool.open_connection("localhost", nghttpd_tls.port, ssl=True)


@pytest.fixture
async def hello_server() -> AsyncIterator[Server]:
    async with Server(hello) as server:
        yield server


async def test_curl_drives_h2pool_server(hello_server: Server) -> None:
    url = f"http://127.0.0.1:{hello_server.port}/curl"
    code, out, err = await run_curl(
        ["-sS", "--http2-prior-knowledge", "-w", "%{stderr}%{http_version}", url], timeout=20
    )
    assert (code, out, err) == (0, b"hello /curl", b"2")
    code, out, _ = await run_curl(
        ["-sS", "--http2-prior-knowledge", "--data-binary", "posted body", url], timeout=20
    )
    assert (code, out) == (0, b"posted body")


async def test_h2load_drives_h2pool_server_without_errors(hello_server: Server) -> None:
    result = await run_h2load(
        f"http://127.0.0.1:{hello_server.port}/load",
        requests=20_000,
        clients=4,
        streams=50,
        timeout=120,
    )
    assert result.succeeded == 20_000, result.output
    assert (result.failed, result.errored, result.timeout) == (0, 0, 0)
    assert result.status_2xx == 20_000


async def test_grpcio_graceful_stop_lets_the_call_in_flight_finish(
    grpc_echo_server: GrpcEchoServer,
) -> None:
    client = await h2pool.open_connection(
        "127.0.0.1", grpc_echo_server.port, functional_timeout=2.0
    )
    headers = {
        ":method": "POST",
        ":path": "/test.Echo/Slow",
        "content-type": "application/grpc",
        "te": "trailers",
    }
    stream_id = await client.start_request(headers)
    await client.send_data(stream_id, frame_message(b"30"), end_stream=True)
    await asyncio.to_thread(grpc_echo_server.wait_for_slow_calls, 1, 10.0)

    stopped = grpc_echo_server.stop(grace=10)  # GOAWAY(2^31-1) + PING, then the real GOAWAY
    await eventually(lambda: client.goaway_received)
    with pytest.raises(h2pool.ConnectionClosed) as refused:
        await client.start_request(headers)
    assert refused.value.never_processed
    # The PING and the second GOAWAY (the real last id) come after the first
    # GOAWAY: a plain h2 client would fail here with ProtocolError.
    await eventually(lambda: client.goaway_last_stream_id == stream_id)
    assert client.functional

    grpc_echo_server.release()
    response = await client.recv_response(stream_id)
    assert dict(response)[":status"] == "200"
    assert await client.read_stream(stream_id, -1) == frame_message(b"30")
    assert dict(await client.recv_trailers(stream_id))["grpc-status"] == "0"
    async with asyncio.timeout(10):
        await client.wait_closed()
        await asyncio.to_thread(stopped.wait, 10)
