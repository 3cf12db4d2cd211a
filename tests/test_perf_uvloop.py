"""h2pool on uvloop's event loop (the optional ``h2pool[uvloop]`` extra).

uvloop's transports have asyncio.Transport's methods without deriving from
it: the core must not insist on the class. Skipped where uvloop is not
installed.
"""

from __future__ import annotations

import asyncio

import pytest

import h2pool
from tests.peers import INDEX_HTML, Nghttpd, Nginx
from tests.servers import Server, echo

uvloop = pytest.importorskip("uvloop")


def _run_on_uvloop(main: object) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)  # type: ignore[arg-type]


def test_pool_request_on_uvloop(nghttpd_h2c: Nghttpd) -> None:
    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with h2pool.Pool(f"http://127.0.0.1:{nghttpd_h2c.port}", timeout=10) as pool:
            responses = await asyncio.gather(
                *(pool.request("GET", "/index.html") for _ in range(150))
            )
            assert [r.content for r in responses] == [INDEX_HTML] * 150
            async with pool.stream("GET", "/index.html") as response:
                assert await response.aread() == INDEX_HTML
            assert pool.stats().endpoints[0].open_streams == 0

    _run_on_uvloop(main())


def test_core_client_and_server_on_uvloop() -> None:
    async def main() -> None:
        async with Server(echo) as server:
            client = await h2pool.open_connection("127.0.0.1", server.port, functional_timeout=5)
            try:
                stream_id = await client.start_request({":method": "POST", ":path": "/"})
                await client.send_data(stream_id, b"over uvloop", end_stream=True)
                assert dict(await client.recv_response(stream_id))[":status"] == "200"
                assert await client.read_stream(stream_id, -1) == b"over uvloop"
                assert await client.recv_trailers(stream_id) == []
                assert await client.wait_functional() >= 0
            finally:
                await client.shutdown(timeout=5)

    _run_on_uvloop(main())


def test_http1_pool_request_on_uvloop(nginx_http1: Nginx) -> None:
    # HTTP/1.1 connections (through httpcore) have their own asyncio protocol.
    async def main() -> None:
        url = f"http://127.0.0.1:{nginx_http1.port}"
        async with h2pool.Pool(url, http1=True, timeout=10) as pool:
            responses = await asyncio.gather(
                *(pool.request("GET", "/index.html") for _ in range(20))
            )
            assert [r.content for r in responses] == [INDEX_HTML] * 20
            assert {r.http_version for r in responses} == {"HTTP/1.1"}

    _run_on_uvloop(main())
