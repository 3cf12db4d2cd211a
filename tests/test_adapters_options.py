"""The adapters take httpx's and httpcore's own arguments, refuse what they cannot honour, trace."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import trustme

import h2pool
from h2pool._adapters.options import http1_option, limits_options, merge_options
from tests.http1_server import http1_server
from tests.peers import INDEX_HTML, Certificates, Nghttpd
from tests.servers import Server, hello
from tests.waiting import eventually

# httpcore's events of opening a cleartext connection, for the request that asked for it.
CONNECT_TCP = ["connection.connect_tcp.started", "connection.connect_tcp.complete"]
OPEN_H2C = [
    *CONNECT_TCP,
    "http2.send_connection_init.started",
    "http2.send_connection_init.complete",
]


class TestMappings:
    def test_http1_and_http2_flags(self) -> None:
        assert http1_option(True, True) is False  # HTTP/2 where spoken, else HTTP/1.1
        assert http1_option(True, False) is True
        assert http1_option(False, True) == "never"
        with pytest.raises(ValueError, match="http1 and http2"):
            http1_option(False, False)

    def test_limits(self) -> None:
        assert limits_options(None, None) == {}
        assert limits_options(7, 20) == {"max_connections": 7, "http1_max_connections": 7}
        assert limits_options(None, 0) == {"min_connections": 0}
        with pytest.raises(ValueError, match="max_connections"):
            limits_options(0, None)

    def test_an_option_set_twice_is_refused(self) -> None:
        with pytest.raises(TypeError, match="max_connections is set twice"):
            merge_options({"max_connections": 2}, {"max_connections": 3})


class TestRefusedAtConstruction:
    @pytest.mark.parametrize(
        ("argument", "value"),
        [
            ("proxy", "http://127.0.0.1:3128"),
            ("uds", "/tmp/socket"),
            ("local_address", "0.0.0.0"),
            ("socket_options", []),
        ],
    )
    def test_unsupported_httpx_arguments(self, argument: str, value: Any) -> None:
        with pytest.raises(TypeError, match=f"does not support {argument}="):
            h2pool.AsyncHTTPTransport(**{argument: value})

    def test_unsupported_httpcore_arguments(self) -> None:
        with pytest.raises(TypeError, match="does not support proxy="):
            h2pool.AsyncConnectionPool(proxy=httpcore.Proxy("http://127.0.0.1:3128"))

    def test_wrong_options(self) -> None:
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
            h2pool.AsyncHTTPTransport(bogus=1)
        with pytest.raises(TypeError, match=r"limits must be an httpx\.Limits"):
            h2pool.AsyncHTTPTransport(limits={"max_connections": 1})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="http1 and http2"):
            h2pool.AsyncHTTPTransport(http1=False, http2=False)
        with pytest.raises(ValueError, match="retries"):
            h2pool.AsyncHTTPTransport(retries=-1)
        with pytest.raises(TypeError, match="verify must be"):
            h2pool.AsyncHTTPTransport(verify=3)  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError):
            h2pool.AsyncHTTPTransport(verify="/nonexistent/ca.pem")
        with pytest.raises(ValueError, match="connect_timeout"):
            h2pool.AsyncConnectionPool(connect_timeout=-1)


pytestmark = pytest.mark.peer


@pytest.fixture
def ca_directory(certificates: Certificates, tmp_path: Path) -> Path:
    """A directory holding the test CA as OpenSSL looks CAs up: by subject hash, "<hash>.0"."""
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(certificates.ca_pem)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    (tmp_path / f"{subject_hash}.0").write_bytes(certificates.ca_pem.read_bytes())
    return tmp_path


class TestHttpxTransport:
    async def test_an_http11_only_service(self) -> None:
        with http1_server() as server:
            transport = h2pool.AsyncHTTPTransport()
            async with httpx.AsyncClient(transport=transport) as client:
                responses = await asyncio.gather(*(client.get(server.url) for _ in range(3)))
                posted = await client.post(server.url, content=b"abc")
            assert {(r.status_code, r.http_version, r.text) for r in responses} == {
                (200, "HTTP/1.1", "hello")
            }
            assert posted.content == b"abc"

    async def test_the_wrong_scheme_says_which_to_use(self, nghttpd_tls: Nghttpd) -> None:
        with http1_server() as server:
            async with httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport(verify=False)) as c:
                with pytest.raises(httpx.ConnectError, match="use an http:// URL"):
                    await c.get(f"https://127.0.0.1:{server.port}/")
                with pytest.raises(httpx.ConnectError, match="use an https:// URL"):
                    await c.get(f"http://127.0.0.1:{nghttpd_tls.port}/")

    async def test_limits_cap_http11_connections(self) -> None:
        with http1_server() as server:
            transport = h2pool.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
            async with httpx.AsyncClient(transport=transport) as client:
                responses = await asyncio.gather(*(client.get(server.url) for _ in range(6)))
            assert {r.status_code for r in responses} == {200}
            ports = {
                port
                for line, port in zip(server.request_lines, server.client_ports, strict=True)
                if line.startswith("GET ")
            }
            assert len(ports) == 1

    @pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
    async def test_verify_with_a_ca_file(
        self, nghttpd_tls: Nghttpd, certificates: Certificates, as_path: bool
    ) -> None:
        ca: str | Path = certificates.ca_pem if as_path else str(certificates.ca_pem)
        transport = h2pool.AsyncHTTPTransport(verify=ca)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"https://localhost:{nghttpd_tls.port}/index.html")
        assert (response.http_version, response.content) == ("HTTP/2", INDEX_HTML)

    async def test_verify_with_a_ca_directory(
        self, nghttpd_tls: Nghttpd, ca_directory: Path
    ) -> None:
        transport = h2pool.AsyncHTTPTransport(verify=str(ca_directory))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"https://localhost:{nghttpd_tls.port}/index.html")
        assert response.content == INDEX_HTML

    async def test_client_certificate(self, tmp_path: Path) -> None:
        ca = trustme.CA()
        files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "client")}
        ca.cert_pem.write_to_path(str(files["ca"]))
        server_cert = ca.issue_cert("localhost")
        server_cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
        server_cert.private_key_pem.write_to_path(str(files["key"]))
        client_cert = ca.issue_cert("client.example")
        client_cert.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
        context = h2pool.server_ssl_context(
            str(files["cert"]), str(files["key"]), client_cafile=str(files["ca"])
        )
        server = await h2pool.start_server(serve_hello, "127.0.0.1", 0, ssl=context)
        url = f"https://localhost:{server.sockets[0].getsockname()[1]}/x"
        try:
            transport = h2pool.AsyncHTTPTransport(
                verify=str(files["ca"]), cert=str(files["client"])
            )
            async with httpx.AsyncClient(transport=transport) as client:
                assert (await client.get(url)).text == "hello /x"
            transport = h2pool.AsyncHTTPTransport(verify=str(files["ca"]))  # no certificate
            async with httpx.AsyncClient(transport=transport) as client:
                with pytest.raises(httpx.ConnectError):
                    await client.get(url)
        finally:
            server.close()

    async def test_verify_with_another_ca_file_fails(
        self, nghttpd_tls: Nghttpd, tmp_path: Path
    ) -> None:
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(other)
        transport = h2pool.AsyncHTTPTransport(verify=str(other))
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.ConnectError, match="certificate verification failed"):
                await client.get(f"https://localhost:{nghttpd_tls.port}/index.html")

    async def test_http2_only_and_http11_only(self, nghttpd_h2c: Nghttpd) -> None:
        with http1_server() as server:
            transport = h2pool.AsyncHTTPTransport(http1=False)
            async with httpx.AsyncClient(transport=transport) as client:
                with pytest.raises(httpx.ConnectError, match="does not speak HTTP/2"):
                    await client.get(server.url)
            transport = h2pool.AsyncHTTPTransport(http2=False)
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.get(server.url)
            assert response.http_version == "HTTP/1.1"
            # Only the HTTP/2-only transport sent HTTP/2's preface.
            assert sum(line.startswith("PRI ") for line in server.request_lines) == 1

    async def test_trace_events_in_order(self, nghttpd_h2c: Nghttpd) -> None:
        events: list[tuple[str, dict[str, Any]]] = []

        async def trace(name: str, info: dict[str, Any]) -> None:
            events.append((name, info))

        transport = h2pool.AsyncHTTPTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            url = nghttpd_h2c.url("/index.html")
            response = await client.get(url, extensions={"trace": trace})
            first = list(events)
            events.clear()
            # A request on the open connection sees no connection events, as with httpcore.
            await client.get(url, extensions={"trace": trace})
            again = [name for name, _ in events]
            events = first
        assert response.content == INDEX_HTML
        assert [name for name, _ in events] == [
            *OPEN_H2C,
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
        opening, events = events[:4], events[4:]
        request = events[0][1]["request"]
        assert request.url == url
        # httpcore's arguments: the request and its stream, then the return value.
        assert events[0][1] == {"request": request, "stream_id": 1}
        assert events[1][1] == {"return_value": None}
        assert events[2][1] == {"request": request, "stream_id": 1}
        assert events[4][1] == {"request": request, "stream_id": 1}
        assert events[5][1]["return_value"][0] == 200
        assert events[6][1] == {"request": request, "stream_id": 1}
        assert events[8][1] == {"stream_id": 1}
        # Opening the connection: httpcore's arguments too (no request for TCP).
        assert opening[0][1] == {
            "host": "127.0.0.1",
            "port": nghttpd_h2c.port,
            "local_address": None,
            "timeout": 5.0,
            "socket_options": None,
        }
        assert opening[1][1]["return_value"].get_extra_info("peername")[1] == nghttpd_h2c.port
        assert opening[2][1] == {"request": request}
        assert opening[3][1] == {"return_value": None}
        assert again == [name for name, _ in events]

    async def test_trace_of_a_failure_and_of_http11(self) -> None:
        names: list[str] = []

        async def trace(name: str, info: dict[str, Any]) -> None:
            names.append(name)

        async with httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://127.0.0.1:1/", extensions={"trace": trace})
            assert names == [  # nothing was sent
                "connection.connect_tcp.started",
                "connection.connect_tcp.failed",
                "http2.receive_response_headers.started",
                "http2.receive_response_headers.failed",
            ]
            with http1_server() as server:
                names.clear()
                await client.get(server.url, extensions={"trace": trace})
                await client.get(server.url, extensions={"trace": trace})
        # The first connection offered HTTP/2 (prior knowledge); the server
        # answered as HTTP/1.1, so a second one speaks it.
        assert names[:6] == [*OPEN_H2C, *CONNECT_TCP]
        names = names[6:]
        assert names[:10] == [  # the connection that carried it says which protocol
            "http11.send_request_headers.started",
            "http11.send_request_headers.complete",
            "http11.send_request_body.started",
            "http11.send_request_body.complete",
            "http11.receive_response_headers.started",
            "http11.receive_response_headers.complete",
            "http11.receive_response_body.started",
            "http11.receive_response_body.complete",
            "http11.response_closed.started",
            "http11.response_closed.complete",
        ]
        assert names[10:] == names[:10]

    async def test_trace_of_bodies_sent(self) -> None:
        events: list[tuple[str, dict[str, Any]]] = []

        async def trace(name: str, info: dict[str, Any]) -> None:
            events.append((name, info))

        async def upload() -> AsyncIterator[bytes]:
            yield b"stre"
            yield b"amed"

        sending = [
            "send_request_headers.started",
            "send_request_headers.complete",
            "send_request_body.started",
            "send_request_body.complete",
            "receive_response_headers.started",
            "receive_response_headers.complete",
        ]
        async with (
            Server(hello) as server,
            httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport()) as client,
        ):
            url = f"http://127.0.0.1:{server.port}/"
            for content, stream_id in ((b"in memory", 1), (upload(), 3)):
                events.clear()
                response = await client.post(url, content=content, extensions={"trace": trace})
                assert response.content in (b"in memory", b"streamed")
                if stream_id == 1:  # on a fresh connection
                    assert [name for name, _ in events[:4]] == OPEN_H2C
                    del events[:4]
                assert [name for name, _ in events[:6]] == [f"http2.{n}" for n in sending]
                assert events[2][1] == {"request": response.request, "stream_id": stream_id}
        with http1_server() as http1:
            transport = h2pool.AsyncHTTPTransport(http2=False)  # HTTP/1.1 from the start
            async with httpx.AsyncClient(transport=transport) as client:
                events.clear()
                response = await client.post(http1.url, content=b"x", extensions={"trace": trace})
        assert response.content == b"x"
        assert [name for name, _ in events[:2]] == CONNECT_TCP  # HTTP/1.1: no preface
        del events[:2]
        assert [name for name, _ in events[:6]] == [f"http11.{n}" for n in sending]
        assert events[0][1] == {"request": response.request}  # httpcore's HTTP/1.1 arguments

    async def test_a_retried_attempt_is_traced_again(self) -> None:
        refused = 0

        async def refuse_once(
            proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
        ) -> None:
            nonlocal refused
            if not refused:  # never processed: the pool sends it again
                refused += 1
                proto.reset_stream(stream_id, h2pool.ErrorCode.REFUSED_STREAM)
                return
            await hello(proto, stream_id, headers)

        events: list[tuple[str, dict[str, Any]]] = []

        async def trace(name: str, info: dict[str, Any]) -> None:
            events.append((name, info))

        async with (
            Server(refuse_once) as server,
            httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport()) as client,
        ):
            response = await client.get(
                f"http://127.0.0.1:{server.port}/", extensions={"trace": trace}
            )
        assert (response.status_code, refused) == (200, 1)
        assert [name for name, _ in events[:4]] == OPEN_H2C
        del events[:4]
        assert [name for name, _ in events[:10]] == [
            "http2.send_request_headers.started",
            "http2.send_request_headers.complete",
            "http2.send_request_body.started",
            "http2.send_request_body.complete",
            "http2.receive_response_headers.started",
            "http2.send_request_headers.started",  # the second attempt
            "http2.send_request_headers.complete",
            "http2.send_request_body.started",
            "http2.send_request_body.complete",
            "http2.receive_response_headers.complete",
        ]
        assert events[0][1]["stream_id"] != events[5][1]["stream_id"]


async def serve_hello(proto: h2pool.H2Protocol) -> None:
    while True:
        stream_id, headers = await proto.recv_request()
        await hello(proto, stream_id, headers)


def failed_to_connect(transport: h2pool.AsyncHTTPTransport) -> bool:
    return any(
        endpoint.consecutive_failures
        for stats in transport.stats().values()
        for endpoint in stats.endpoints
    )


class TestConnectRetries:
    @pytest.mark.parametrize("retries", [0, 1])
    async def test_a_retry_waits_for_the_next_connection_attempt(self, retries: int) -> None:
        # Bound but not listening: connections are refused until the server starts on it.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/x"
            # The pool's next attempt after the refusal comes 1 s later.
            backoff = h2pool.ConnectionBackoff(initial=1.0, max=1.0, jitter=0)
            transport = h2pool.AsyncHTTPTransport(retries=retries, backoff=backoff)
            async with httpx.AsyncClient(transport=transport) as client:
                sent = asyncio.ensure_future(client.get(url, timeout=httpx.Timeout(20)))
                if not retries:
                    with pytest.raises(httpx.ConnectError, match="cannot connect"):
                        await sent  # at once, not after the backoff
                    return
                await eventually(lambda: failed_to_connect(transport))
                server = await h2pool.start_server(serve_hello, sock=sock)
                try:
                    assert (await sent).text == "hello /x"
                finally:
                    server.close()


class TestHttpcorePool:
    async def test_an_http11_only_service_and_trace(self) -> None:
        names: list[str] = []

        async def trace(name: str, info: dict[str, Any]) -> None:
            names.append(name)

        with http1_server() as server:
            async with h2pool.AsyncConnectionPool(max_connections=1) as pool:
                response = await pool.request("GET", server.url, extensions={"trace": trace})
            assert (response.status, response.content) == (200, b"hello")
            assert response.extensions["http_version"] == b"HTTP/1.1"
        assert names == [
            *OPEN_H2C,  # offered HTTP/2 first (prior knowledge), answered as HTTP/1.1
            *CONNECT_TCP,
            "http11.send_request_headers.started",
            "http11.send_request_headers.complete",
            "http11.send_request_body.started",
            "http11.send_request_body.complete",
            "http11.receive_response_headers.started",
            "http11.receive_response_headers.complete",
            "http11.receive_response_body.started",
            "http11.receive_response_body.complete",
            "http11.response_closed.started",
            "http11.response_closed.complete",
        ]

    async def test_ssl_context(self, nghttpd_tls: Nghttpd, certificates: Certificates) -> None:
        context = ssl.create_default_context(cafile=str(certificates.ca_pem))
        async with h2pool.AsyncConnectionPool(ssl_context=context, http1=False) as pool:
            response = await pool.request("GET", f"https://localhost:{nghttpd_tls.port}/")
        assert response.extensions["http_version"] == b"HTTP/2"
