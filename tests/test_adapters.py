"""h2pool behind httpx (AsyncHTTPTransport) and httpcore (AsyncConnectionPool)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpcore
import httpx
import pytest

import h2pool
from tests.peers import BIG_BIN_SIZE, INDEX_HTML, Certificates, Nghttpd, Nginx
from tests.servers import Server, hold, mute_listener
from tests.waiting import eventually

pytestmark = pytest.mark.peer


@pytest.fixture
def nghttpd_wide(docroot: Path) -> Iterator[Nghttpd]:
    """nghttpd allowing 200 concurrent streams per connection."""
    with Nghttpd(docroot, extra_args=["--max-concurrent-streams=200"]) as server:
        yield server


def busy(server: Server) -> bool:
    return any(proto.open_streams for proto in server.protocols)


async def never(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def client(**options: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = h2pool.AsyncHTTPTransport(**options)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport) as http:
        yield http


class TestHttpx:
    async def test_200_concurrent_requests_on_one_multiplexed_connection(
        self, nghttpd_wide: Nghttpd
    ) -> None:
        transport = h2pool.AsyncHTTPTransport(max_connections=1)
        async with httpx.AsyncClient(transport=transport) as http:
            url = nghttpd_wide.url("/index.html")
            responses = await asyncio.gather(*(http.get(url) for _ in range(200)))
            assert {(r.status_code, r.http_version, r.content) for r in responses} == {
                (200, "HTTP/2", INDEX_HTML)
            }
            (stats,) = transport.stats().values()
            (endpoint,) = stats.endpoints
            assert endpoint.connections == 1

    async def test_streaming_both_ways(self, nghttpd_h2c: Nghttpd, big_bin_sha256: str) -> None:
        async with client() as http:
            async with http.stream("GET", nghttpd_h2c.url("/big.bin")) as response:
                digest, size = hashlib.sha256(), 0
                async for chunk in response.aiter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
            assert (size, digest.hexdigest()) == (BIG_BIN_SIZE, big_bin_sha256)

            async def upload() -> AsyncIterator[bytes]:
                for part in (b"a" * 1000, b"b" * 1000):
                    yield part

            response = await http.post(nghttpd_h2c.url("/index.html"), content=upload())
            assert response.status_code == 200  # nghttpd serves the file for any method

    async def test_tls_and_verification(
        self, nghttpd_tls: Nghttpd, certificates: Certificates
    ) -> None:
        url = f"https://localhost:{nghttpd_tls.port}/index.html"
        trusted = h2pool.client_ssl_context(cafile=str(certificates.ca_pem))
        async with client(verify=trusted) as http:
            response = await http.get(url)
            assert (response.http_version, response.content) == ("HTTP/2", INDEX_HTML)
        async with client() as http:  # certifi's CAs do not know the test CA
            with pytest.raises(httpx.ConnectError, match="certificate verification failed"):
                await http.get(url)

    async def test_http11_fallback_through_alpn(
        self, nginx_http1_tls: Nginx, certificates: Certificates
    ) -> None:
        trusted = h2pool.client_ssl_context(cafile=str(certificates.ca_pem))
        async with client(verify=trusted) as http:
            url = f"https://localhost:{nginx_http1_tls.port}/index.html"
            responses = await asyncio.gather(*(http.get(url) for _ in range(20)))
            assert {(r.http_version, r.content) for r in responses} == {("HTTP/1.1", INDEX_HTML)}

    async def test_timeouts_map_to_httpx_classes(self) -> None:
        async with Server(never) as server, client() as http:
            url = f"http://127.0.0.1:{server.port}/"
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url, timeout=httpx.Timeout(5, read=0.2))
        release = asyncio.Event()
        async with (
            Server(hold(release), concurrency=1) as server,
            client(max_connections=1) as http,
        ):
            url = f"http://127.0.0.1:{server.port}/"
            first = asyncio.ensure_future(http.get(url))
            await eventually(lambda: busy(server))  # the one stream is taken
            with pytest.raises(httpx.PoolTimeout):
                await http.get(url, timeout=httpx.Timeout(5, pool=0.2))
            release.set()
            assert (await first).status_code == 200

    async def test_connect_errors_map_to_httpx_classes(self) -> None:
        async with client() as http:
            with pytest.raises(httpx.ConnectError) as refused:
                await http.get("http://127.0.0.1:1/")
            assert refused.value.request.url == "http://127.0.0.1:1/"
            with pytest.raises(httpx.UnsupportedProtocol):
                await http.get("ftp://127.0.0.1/")

    async def test_stream_reset_is_a_remote_protocol_error(self) -> None:
        async def reset(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
            proto.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)

        async with Server(reset) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="INTERNAL_ERROR"):
                await http.post(f"http://127.0.0.1:{server.port}/", content=b"x")

    def test_importing_h2pool_without_httpx_works(self) -> None:
        code = (
            "import sys; sys.modules['httpx'] = None\n"
            "import h2pool\n"
            "assert h2pool.Pool and h2pool.AsyncConnectionPool\n"
            "try:\n"
            "    h2pool.AsyncHTTPTransport\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
        )
        assert "needs httpx: pip install httpx" in result.stdout


class TestHttpcore:
    async def test_request_and_stream(self, nghttpd_h2c: Nghttpd) -> None:
        async with h2pool.AsyncConnectionPool() as pool:
            url = nghttpd_h2c.url("/index.html")
            response = await pool.request("GET", url)
            assert (response.status, response.content) == (200, INDEX_HTML)
            assert response.extensions["http_version"] == b"HTTP/2"
            async with pool.stream("GET", url) as streamed:
                assert [chunk async for chunk in streamed.aiter_stream()] == [INDEX_HTML]
            request = httpcore.Request("GET", url)
            handled = await pool.handle_async_request(request)
            assert await handled.aread() == INDEX_HTML
            await handled.aclose()
            assert len(pool.stats()) == 1

    async def test_http11_fallback(
        self, nginx_http1_tls: Nginx, certificates: Certificates
    ) -> None:
        trusted = h2pool.client_ssl_context(cafile=str(certificates.ca_pem))
        async with h2pool.AsyncConnectionPool(ssl_context=trusted) as pool:
            response = await pool.request(
                "GET", f"https://localhost:{nginx_http1_tls.port}/index.html"
            )
            assert response.extensions["http_version"] == b"HTTP/1.1"
            assert response.content == INDEX_HTML

    async def test_timeout_extensions_are_honoured(self) -> None:
        async with Server(never) as server, h2pool.AsyncConnectionPool() as pool:
            url = f"http://127.0.0.1:{server.port}/"
            with pytest.raises(httpcore.ReadTimeout):
                await pool.request("GET", url, extensions={"timeout": {"read": 0.2}})
        release = asyncio.Event()
        async with (
            Server(hold(release), concurrency=1) as server,
            h2pool.AsyncConnectionPool(max_connections=1) as pool,
        ):
            url = f"http://127.0.0.1:{server.port}/"
            first = asyncio.ensure_future(pool.request("GET", url))
            await eventually(lambda: busy(server))  # the one stream is taken
            with pytest.raises(httpcore.PoolTimeout):
                await pool.request("GET", url, extensions={"timeout": {"pool": 0.2}})
            release.set()
            assert (await first).status == 200
        async with h2pool.AsyncConnectionPool() as pool:
            with pytest.raises(httpcore.ConnectError):
                await pool.request("GET", "http://127.0.0.1:1/")


SMALL_WINDOWS = h2pool.H2Config(stream_window=65_535, connection_window=65_535)


async def upload(size: int) -> AsyncIterator[bytes]:
    """A streamed body of ``size`` bytes in 16 KiB chunks."""
    for _ in range(size // 16_384):
        yield b"u" * 16_384


class TestConnectAndWriteTimeouts:
    async def test_httpx(self) -> None:
        async with mute_listener() as port, client() as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get(f"https://127.0.0.1:{port}/", timeout=httpx.Timeout(5, connect=0.2))
        async with Server(never, config=SMALL_WINDOWS) as server, client() as http:
            with pytest.raises(httpx.WriteTimeout):
                await http.put(
                    f"http://127.0.0.1:{server.port}/",
                    content=upload(1024 * 1024),
                    timeout=httpx.Timeout(5, write=0.2),
                )

    async def test_httpcore(self) -> None:
        async with mute_listener() as port, h2pool.AsyncConnectionPool() as pool:
            with pytest.raises(httpcore.ConnectTimeout):
                await pool.request(
                    "GET", f"https://127.0.0.1:{port}/", extensions={"timeout": {"connect": 0.2}}
                )
        async with (
            Server(never, config=SMALL_WINDOWS) as server,
            h2pool.AsyncConnectionPool() as pool,
        ):
            with pytest.raises(httpcore.WriteTimeout):
                await pool.request(
                    "PUT",
                    f"http://127.0.0.1:{server.port}/",
                    content=upload(1024 * 1024),
                    extensions={"timeout": {"write": 0.2}},
                )
