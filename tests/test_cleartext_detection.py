"""Cleartext origins without configuration: h2c or HTTP/1.1 found out, scheme mix-ups named."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest

import h2pool
from h2pool._pool.connect import FirstBytes, _probe_timeout, classify_first_bytes
from tests.http1_server import http1_server
from tests.peers import INDEX_HTML, Certificates, Nghttpd, Nginx
from tests.peers.hypercorn import HypercornFactory
from tests.servers import Server, hello

# A SETTINGS frame header (RFC 9113 section 3.4): length 6, type 4, no flags, stream 0.
SETTINGS_HEADER = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("data", "closed", "verdict"),
    [
        (b"", False, FirstBytes.UNDECIDED),
        (b"", True, FirstBytes.NOTHING),  # closed or reset
        (SETTINGS_HEADER, False, FirstBytes.HTTP2),
        (SETTINGS_HEADER[:3], False, FirstBytes.UNDECIDED),
        (SETTINGS_HEADER[:3], True, FirstBytes.OTHER),
        (b"\x00\x00\x08\x06", False, FirstBytes.OTHER),  # a PING first: not a preface
        (b"HTTP/1.1 400 Bad Request\r\n", False, FirstBytes.OTHER),
        (b"H", False, FirstBytes.OTHER),
        (b"<!DOCTYPE HTML>", False, FirstBytes.OTHER),  # http.server's answer to the preface
        (b"\x15\x03\x03\x00\x02\x02\x46", False, FirstBytes.TLS),  # alert
        (b"\x16\x03\x03", False, FirstBytes.TLS),  # handshake
    ],
)
def test_classify_first_bytes(data: bytes, closed: bool, verdict: FirstBytes) -> None:
    assert classify_first_bytes(data, closed) is verdict


def pool(url: str, **options: object) -> h2pool.Pool:
    return h2pool.Pool(url, wait_for_ready=False, timeout=20, **options)  # type: ignore[arg-type]


pytestmark = pytest.mark.peer


class TestFallbackToHttp11:
    async def test_http_server_is_spoken_to_in_http11_and_remembered(self) -> None:
        with http1_server() as server:
            async with pool(server.url) as client:
                # The first request is a POST: it was never sent on the HTTP/2 attempt.
                posted = await client.request("POST", "/", content=b"payload")
                assert (posted.status_code, posted.http_version) == (200, "HTTP/1.1")
                assert posted.content == b"payload"
                responses = await asyncio.gather(*(client.request("GET", "/") for _ in range(5)))
                assert {(r.http_version, r.content) for r in responses} == {("HTTP/1.1", b"hello")}
            prefaces = [line for line in server.request_lines if line.startswith("PRI ")]
            assert prefaces == ["PRI * HTTP/2.0"]  # tried once, then remembered
            assert server.request_lines.count("POST / HTTP/1.1") == 1

    async def test_nginx_cleartext_is_spoken_to_in_http11(self, nginx_http1: Nginx) -> None:
        async with pool(f"http://{nginx_http1.target}") as client:
            response = await client.request("GET", "/index.html")
            assert (response.http_version, response.content) == ("HTTP/1.1", INDEX_HTML)

    async def test_http2_only_refuses_an_http11_server(self) -> None:
        with http1_server() as server:
            async with pool(server.url, http1="never") as client:
                with pytest.raises(h2pool.ConnectError, match="does not speak HTTP/2") as caught:
                    await client.request("GET", "/")
            assert f"127.0.0.1:{server.port}" in str(caught.value)

    def test_http1_takes_never_and_no_other_string(self) -> None:
        with pytest.raises(ValueError, match="http1 must be"):
            h2pool.Pool("http://127.0.0.1:1", http1="always")


@contextlib.asynccontextmanager
async def closing_on_the_preface(reset: bool) -> AsyncIterator[int]:
    """A server closing a connection that starts with HTTP/2's preface without a byte.

    Cleanly (a FIN once it read everything) or, with ``reset``, as most
    servers do (the rest of what the client sent unread: an RST). It answers
    anything else with an HTTP/1.1 200. Yields its port.
    """

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if (await reader.readexactly(1)) == b"\x16":
                return  # a TLS ClientHello: closed, as HTTP/1.1 servers do with garbage
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"RI * HTTP/2.0"):  # "P" read above
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
            elif reset:  # SO_LINGER with a zero timeout: close() sends an RST
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                writer.write_eof()
                await reader.read()  # until the client closes too
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_a_server_closing_at_once_is_spoken_to_in_http11(reset: bool) -> None:
    async with closing_on_the_preface(reset) as port, pool(f"http://127.0.0.1:{port}") as client:
        response = await client.request("GET", "/")
    assert (response.http_version, response.content) == ("HTTP/1.1", b"ok")


class TestHttp2StaysHttp2:
    async def test_hypercorn_speaks_h2c_and_http11_on_one_port(
        self, hypercorn_factory: HypercornFactory
    ) -> None:
        server = hypercorn_factory()
        async with pool(f"http://127.0.0.1:{server.port}") as client:
            responses = await asyncio.gather(*(client.request("GET", "/x") for _ in range(3)))
            assert {(r.http_version, r.content) for r in responses} == {("HTTP/2", b"hello /x")}

    async def test_nghttpd(self, nghttpd_h2c: Nghttpd) -> None:
        async with pool(f"http://{nghttpd_h2c.target}") as client:
            response = await client.request("GET", "/index.html")
            assert (response.http_version, response.content) == ("HTTP/2", INDEX_HTML)

    async def test_h2pool_server(self) -> None:
        async with Server(hello) as server, pool(f"http://127.0.0.1:{server.port}") as client:
            response = await client.request("GET", "/")
            assert response.http_version == "HTTP/2"


class TestSchemeMixUps:
    """The wrong scheme fails at once with a ConnectError saying which to use.

    The connect timeout is long: a ConnectError (not a ConnectTimeout) shows
    that nothing waited for it.
    """

    async def test_https_to_a_cleartext_http11_server(self) -> None:
        with http1_server() as server:
            url = f"https://127.0.0.1:{server.port}"
            async with pool(url, ssl=False, connect_timeout=30) as client:
                with pytest.raises(h2pool.ConnectError, match="use an http:// URL") as caught:
                    await client.request("GET", "/")
            assert f"127.0.0.1:{server.port}" in str(caught.value)

    async def test_https_to_an_h2c_server(self, nghttpd_h2c: Nghttpd) -> None:
        url = f"https://127.0.0.1:{nghttpd_h2c.port}"
        async with pool(url, ssl=False, connect_timeout=30) as client:
            with pytest.raises(h2pool.ConnectError, match="use an http:// URL"):
                await client.request("GET", "/")

    async def test_http_to_a_tls_server(self, nghttpd_tls: Nghttpd) -> None:
        url = f"http://127.0.0.1:{nghttpd_tls.port}"
        async with pool(url, connect_timeout=30) as client:
            with pytest.raises(h2pool.ConnectError, match="use an https:// URL") as caught:
                await client.request("GET", "/")
        assert f"127.0.0.1:{nghttpd_tls.port}" in str(caught.value)

    async def test_http_to_an_h2pool_tls_server(self, certificates: Certificates) -> None:
        context = h2pool.server_ssl_context(str(certificates.cert_pem), str(certificates.key_pem))
        async with Server(hello, ssl=context) as server:
            client = pool(f"http://127.0.0.1:{server.port}", connect_timeout=30)
            async with client:
                with pytest.raises(h2pool.ConnectError, match="use an https:// URL"):
                    await client.request("GET", "/")


def test_the_tls_probe_is_bounded_by_the_functional_timeout() -> None:
    assert _probe_timeout(5.0, 1.0) == 1.0
    assert _probe_timeout(0.5, 1.0) == 0.5
    assert _probe_timeout(None, 1.0) == 1.0
