"""The pool over TLS against real peers: verification, SNI, mTLS and ALPN fallback to HTTP/1.1.

Peers: nghttpd (TLS, ALPN h2), nginx speaking only HTTP/1.1 (TLS and cleartext), and h2pool's
own server for mutual TLS and for observing the server name (SNI) the client sends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import h2pool
from tests.peers import INDEX_HTML, Certificates, Nghttpd, Nginx
from tests.servers import Server, hello
from tests.waiting import eventually

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]


def trusting(certificates: Certificates) -> ssl.SSLContext:
    """A client context that trusts the test CA (the pool sets its ALPN protocols)."""
    return h2pool.client_ssl_context(cafile=str(certificates.ca_pem))


async def timed_get(
    pool: h2pool.Pool, path: str, timeout: float | None = 10
) -> tuple[float, h2pool.Response | h2pool.H2PoolError]:
    """Send a GET; return how long it took, and its response or the h2pool error it raised."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome: h2pool.Response | h2pool.H2PoolError
    try:
        outcome = await pool.request("GET", path, timeout=timeout)
    except h2pool.H2PoolError as exc:
        outcome = exc
    return loop.time() - started, outcome


def field(response: h2pool.Response, name: str) -> str | None:
    """The first value of header ``name``, whatever the case of its name on the wire.

    Compared by hand, lower-cased, so that it holds whatever ``Headers`` does with case
    (see ``test_header_lookup_of_http1_responses``).
    """
    return next((v for n, v in response.headers.multi_items() if n.lower() == name), None)


def verification_error(error: BaseException) -> ssl.SSLCertVerificationError:
    """The ``ssl.SSLCertVerificationError`` behind ``error``, following ``__cause__``."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__
    raise AssertionError(f"no SSLCertVerificationError behind {error!r}")


# --- nghttpd over TLS ----------------------------------------------------------------------------


async def test_nghttpd_tls_with_the_test_ca(
    nghttpd_tls: Nghttpd, certificates: Certificates, big_bin_sha256: str
) -> None:
    # The certificate is valid for 127.0.0.1 too, so the address itself can be the target.
    target = f"https://127.0.0.1:{nghttpd_tls.port}"
    async with h2pool.Pool(target, ssl=trusting(certificates), timeout=20) as pool:
        response = await pool.request("GET", "/index.html")
        assert response.status_code == 200
        assert response.content == INDEX_HTML
        assert response.http_version == "HTTP/2"
        assert response.endpoint == f"127.0.0.1:{nghttpd_tls.port}"

        big = await pool.request("GET", "/big.bin")
        assert big.status_code == 200
        assert big.http_version == "HTTP/2"
        assert hashlib.sha256(big.content).hexdigest() == big_bin_sha256

        (endpoint,) = pool.stats().endpoints
        assert endpoint.state is h2pool.ConnectivityState.READY
        assert endpoint.connections == 1
        assert endpoint.rtt is not None  # an HTTP/2 connection, proven alive by PING


async def test_certificate_name_is_the_targets_host_not_the_endpoint(
    nghttpd_tls: Nghttpd, certificates: Certificates
) -> None:
    port = nghttpd_tls.port
    endpoints = [f"127.0.0.1:{port}"]
    pool = h2pool.Pool(f"https://localhost:{port}", endpoints=endpoints, ssl=trusting(certificates))
    async with pool:
        response = await pool.request("GET", "/index.html", timeout=10)
    assert (response.status_code, response.content) == (200, INDEX_HTML)
    assert response.http_version == "HTTP/2"
    assert response.endpoint == f"127.0.0.1:{port}"

    # The same address under a name the certificate does not carry: refused, saying why.
    pool = h2pool.Pool(
        f"https://wrong.example:{port}", endpoints=endpoints, ssl=trusting(certificates)
    )
    async with pool:
        took, outcome = await timed_get(pool, "/index.html")
    assert isinstance(outcome, h2pool.CertificateVerifyError), outcome
    assert "Hostname mismatch, certificate is not valid for 'wrong.example'" in str(outcome)
    assert took < 1.0


async def test_sni_is_the_targets_host(certificates: Certificates) -> None:
    # nghttpd does not report the server name it received; h2pool's server with an SNI
    # callback does.
    server_names: list[str | None] = []
    server_context = h2pool.server_ssl_context(
        str(certificates.cert_pem), str(certificates.key_pem)
    )

    def record(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        server_names.append(name)

    server_context.sni_callback = record
    async with Server(hello, ssl=server_context) as server:
        pool = h2pool.Pool(
            f"https://localhost:{server.port}",
            endpoints=[f"127.0.0.1:{server.port}"],
            ssl=trusting(certificates),
        )
        async with pool:
            response = await pool.request("GET", "/sni", timeout=10)
    assert response.content == b"hello /sni"
    assert server_names == ["localhost"]  # not "127.0.0.1", the address connected to


# --- verification refused by default -------------------------------------------------------------


async def test_test_ca_is_refused_by_default_at_once_and_ssl_false_accepts_it(
    nghttpd_tls: Nghttpd,
) -> None:
    port = nghttpd_tls.port
    target, endpoints = f"https://localhost:{port}", [f"127.0.0.1:{port}"]
    # ssl=None verifies with certifi's CAs, which do not include the trustme CA. wait_for_ready
    # is on and the timeout long: a certificate failure must not wait for it.
    async with h2pool.Pool(target, endpoints=endpoints, timeout=10, wait_for_ready=True) as pool:
        took, outcome = await timed_get(pool, "/index.html")
        assert isinstance(outcome, h2pool.CertificateVerifyError), outcome
        assert isinstance(outcome, h2pool.ConnectError)
        assert took < 1.0  # measured: a few milliseconds, against a 10 s timeout
        reason = verification_error(outcome).verify_message
        assert reason  # OpenSSL's reason, e.g. "self-signed certificate in certificate chain"
        failed = f"TLS certificate verification failed for 127.0.0.1:{port}: {reason}"
        assert outcome.reason == failed
        assert str(outcome) == (
            f"GET {target}/index.html to 127.0.0.1:{port}: {failed} (never processed)"
        )
        # While the endpoint backs off after the failure, later requests fail at once too.
        took, again = await timed_get(pool, "/index.html")
        assert isinstance(again, h2pool.CertificateVerifyError), again
        assert took < 0.5
        (endpoint,) = pool.stats().endpoints
        assert endpoint.state is h2pool.ConnectivityState.TRANSIENT_FAILURE
        assert endpoint.last_error == f"CertificateVerifyError: {failed}"

    # ssl=False checks neither the chain nor the name: the same server works.
    async with h2pool.Pool(target, endpoints=endpoints, ssl=False, timeout=10) as pool:
        response = await pool.request("GET", "/index.html")
    assert (response.status_code, response.content) == (200, INDEX_HTML)
    assert response.http_version == "HTTP/2"  # ALPN still offers h2


async def test_http1_option_does_not_override_alpn_over_tls(
    nghttpd_tls: Nghttpd, certificates: Certificates
) -> None:
    # Over TLS, ALPN decides: the pool still offers h2, and nghttpd selects it.
    pool = h2pool.Pool(
        f"https://127.0.0.1:{nghttpd_tls.port}", ssl=trusting(certificates), http1=True
    )
    async with pool:
        response = await pool.request("GET", "/index.html", timeout=10)
    assert response.http_version == "HTTP/2"


# --- mutual TLS ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MutualTLS:
    """PEM files: a CA, a server and a client certificate from it, and a stranger's client cert.

    Each certificate file holds the private key and the chain.
    """

    ca_pem: Path
    server_pem: Path
    client_pem: Path
    stranger_pem: Path  # a client certificate issued by another CA


@pytest.fixture(scope="module")
def mutual_tls(tmp_path_factory: pytest.TempPathFactory) -> MutualTLS:
    # Our own CA: the session's ``certificates`` fixture has no CA key to issue client certs.
    directory = tmp_path_factory.mktemp("mtls")
    ca, other = trustme.CA(), trustme.CA()
    files = MutualTLS(
        ca_pem=directory / "ca.pem",
        server_pem=directory / "server.pem",
        client_pem=directory / "client.pem",
        stranger_pem=directory / "stranger.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca_pem))
    issued = [
        (ca.issue_cert("localhost", "127.0.0.1"), files.server_pem),
        (ca.issue_cert("client.example"), files.client_pem),
        (other.issue_cert("client.example"), files.stranger_pem),
    ]
    for cert, path in issued:
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return files


class Counting:
    """The ``hello`` handler, recording the paths of the requests that reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(
        self, proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
    ) -> None:
        self.paths.append(dict(headers)[":path"])
        await hello(proto, stream_id, headers)


def mtls_server(files: MutualTLS, handler: Counting) -> Server:
    """h2pool's server requiring a client certificate from the CA of ``files``."""
    server_context = h2pool.server_ssl_context(
        str(files.server_pem), client_cafile=str(files.ca_pem)
    )
    return Server(handler, ssl=server_context)


def mtls_pool(
    port: int, files: MutualTLS, client_pem: Path | None, **kwargs: object
) -> h2pool.Pool:
    client_context = h2pool.client_ssl_context(
        cafile=str(files.ca_pem), certfile=None if client_pem is None else str(client_pem)
    )
    return h2pool.Pool(
        f"https://localhost:{port}",
        endpoints=[f"127.0.0.1:{port}"],
        ssl=client_context,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_mtls_with_a_client_certificate_from_the_ca(mutual_tls: MutualTLS) -> None:
    handler = Counting()
    async with (
        mtls_server(mutual_tls, handler) as server,
        mtls_pool(server.port, mutual_tls, mutual_tls.client_pem) as pool,
    ):
        response = await pool.request("GET", "/mtls", timeout=10)
        assert (response.status_code, response.content) == (200, b"hello /mtls")
        assert response.http_version == "HTTP/2"
        (protocol,) = server.protocols  # one connection, which the server accepted
        assert protocol.functional
    assert handler.paths == ["/mtls"]


@pytest.mark.parametrize("client", ["none", "stranger"])
async def test_mtls_rejection_under_tls13(mutual_tls: MutualTLS, client: str) -> None:
    """A ``ConnectError``, never processed, though TLS 1.3 reports it late.

    In TLS 1.3 the client's side of the handshake is complete before the server checks the
    client certificate, so the client learns of the rejection only when the connection is cut
    (seen as ECONNRESET, as the server closes with our HTTP/2 preface unread). The pool counts
    a connection that fails before proving itself alive as a failed connection attempt. The
    reason ("certificate required" or "unknown ca") is not visible to the client.
    """
    handler = Counting()
    client_pem = None if client == "none" else mutual_tls.stranger_pem
    async with (
        mtls_server(mutual_tls, handler) as server,
        mtls_pool(server.port, mutual_tls, client_pem, wait_for_ready=False) as pool,
    ):
        took, outcome = await timed_get(pool, "/rejected")
    assert type(outcome) is h2pool.ConnectError, repr(outcome)
    assert outcome.never_processed
    assert outcome.reason.startswith(
        f"127.0.0.1:{server.port}: the connection failed while opening"
    )
    assert str(outcome).startswith(f"GET https://localhost:{server.port}/rejected to ")
    assert took < 1.0
    assert handler.paths == []


async def test_mtls_rejection_waits_for_ready_until_the_timeout(mutual_tls: MutualTLS) -> None:
    # Unlike a certificate that fails the client's own verification, a rejection by the
    # server is not recognised as permanent: with wait_for_ready the request waits it out.
    handler = Counting()
    async with (
        mtls_server(mutual_tls, handler) as server,
        mtls_pool(server.port, mutual_tls, None, wait_for_ready=True) as pool,
    ):
        took, outcome = await timed_get(pool, "/rejected", timeout=0.5)
        (endpoint,) = pool.stats().endpoints
    assert type(outcome) is h2pool.RequestTimeout, repr(outcome)
    assert 0.5 <= took < 1.0
    assert endpoint.last_error is not None
    assert endpoint.last_error.startswith("ConnectError: ")
    assert handler.paths == []


async def test_mtls_rejection_under_tls12_is_a_connect_error(mutual_tls: MutualTLS) -> None:
    # In TLS 1.2 the server checks the client certificate inside the handshake, which fails.
    handler = Counting()
    client_context = h2pool.client_ssl_context(cafile=str(mutual_tls.ca_pem))
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with mtls_server(mutual_tls, handler) as server:
        pool = h2pool.Pool(
            f"https://localhost:{server.port}",
            endpoints=[f"127.0.0.1:{server.port}"],
            ssl=client_context,
            wait_for_ready=False,
        )
        async with pool:
            took, outcome = await timed_get(pool, "/rejected")
    assert type(outcome) is h2pool.ConnectError, repr(outcome)
    assert outcome.never_processed
    # asyncio reports the cut handshake as a bare ConnectionResetError(), which has no text:
    # the message names the exception instead of ending with an empty reason.
    assert outcome.reason == f"cannot connect to 127.0.0.1:{server.port}: ConnectionResetError"
    assert outcome.endpoint == f"127.0.0.1:{server.port}"
    assert took < 1.0
    assert handler.paths == []


# --- nginx: HTTP/1.1 only ------------------------------------------------------------------------


def nginx_pool(nginx: Nginx, certificates: Certificates, **kwargs: object) -> h2pool.Pool:
    return h2pool.Pool(
        f"https://localhost:{nginx.port}",
        endpoints=[nginx.target],
        ssl=trusting(certificates),
        timeout=20,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_alpn_falls_back_to_http1_against_nginx(
    nginx_http1_tls: Nginx, certificates: Certificates, big_bin_sha256: str
) -> None:
    async with nginx_pool(nginx_http1_tls, certificates) as pool:
        response = await pool.request("GET", "/index.html")
        assert (response.status_code, response.content) == (200, INDEX_HTML)
        assert response.http_version == "HTTP/1.1"
        assert response.endpoint == nginx_http1_tls.target
        assert (field(response, "server") or "").startswith("nginx/")
        assert response.trailers == []

        big = await pool.request("GET", "/big.bin")
        assert big.http_version == "HTTP/1.1"
        assert field(big, "content-length") == str(len(big.content))
        assert hashlib.sha256(big.content).hexdigest() == big_bin_sha256

        (endpoint,) = pool.stats().endpoints
        assert endpoint.state is h2pool.ConnectivityState.READY
        assert endpoint.rtt is None  # no PING in HTTP/1.1
    log = nginx_http1_tls.access_log_path.read_text()
    assert '"GET /index.html HTTP/1.1" 200 12 ' in log
    assert '"GET /big.bin HTTP/1.1" 200 16777216 ' in log


@pytest.fixture
def nginx_tls_naming_connections(
    docroot: Path, certificates: Certificates, tmp_path: Path
) -> Iterator[Nginx]:
    """nginx over TLS (HTTP/1.1 only) that names the connection of each response.

    ``$connection`` is nginx's serial number of the connection: the header shows, from the
    server's side, how many connections the pool really used.
    """
    directives = "add_header X-Connection $connection always;"
    with Nginx(
        docroot, certificates=certificates, server_directives=directives, log_dir=tmp_path
    ) as server:
        yield server


async def test_concurrent_requests_over_http1_use_several_connections_up_to_the_cap(
    nginx_tls_naming_connections: Nginx, certificates: Certificates
) -> None:
    cap = 4
    async with nginx_pool(
        nginx_tls_naming_connections, certificates, http1_max_connections=cap
    ) as pool:
        responses = await asyncio.gather(*(pool.request("GET", "/index.html") for _ in range(50)))
        assert [(r.status_code, r.content, r.http_version) for r in responses] == [
            (200, INDEX_HTML, "HTTP/1.1")
        ] * 50
        (endpoint,) = pool.stats().endpoints
        assert 1 < endpoint.connections <= cap
        assert endpoint.open_streams == 0
        assert pool.stats().active == 0
        used = {field(r, "x-connection") for r in responses}
        assert None not in used
        assert 1 < len(used) <= cap


async def test_streaming_over_http1(
    nginx_http1_tls: Nginx, certificates: Certificates, big_bin_sha256: str
) -> None:
    async with nginx_pool(nginx_http1_tls, certificates) as pool:
        async with pool.stream("GET", "/big.bin") as response:
            assert response.status_code == 200
            assert response.http_version == "HTTP/1.1"
            digest, chunks = hashlib.sha256(), 0
            async for chunk in response.aiter_bytes():
                digest.update(chunk)
                chunks += 1
        assert digest.hexdigest() == big_bin_sha256
        assert chunks > 1  # delivered as it arrived, not at once

        # A body abandoned after one chunk frees the endpoint for the next request.
        async with pool.stream("GET", "/big.bin") as response:
            assert len(await anext(response.aiter_bytes())) > 0
        assert pool.stats().active == 0
        again = await pool.request("GET", "/index.html")
        assert (again.content, again.http_version) == (INDEX_HTML, "HTTP/1.1")


async def test_post_to_a_static_file_returns_405_once(
    nginx_http1_tls: Nginx, certificates: Certificates
) -> None:
    async with nginx_pool(nginx_http1_tls, certificates) as pool:
        response = await pool.request("POST", "/index.html", content=b"payload")
        assert response.status_code == 405  # returned as a response, not raised
        assert response.http_version == "HTTP/1.1"
        assert b"405 Not Allowed" in response.content
    log = nginx_http1_tls.access_log_path.read_text()
    assert log.count('"POST /index.html HTTP/1.1" 405 ') == 1  # sent once, not retried


async def test_header_lookup_of_http1_responses(
    nginx_http1_tls: Nginx, certificates: Certificates
) -> None:
    async with nginx_pool(nginx_http1_tls, certificates) as pool:
        response = await pool.request("GET", "/index.html")
    assert response.http_version == "HTTP/1.1"
    # Names are lower-cased as over HTTP/2, and header() ignores case anyway.
    assert ("content-length", "12") in response.headers.multi_items()
    assert response.headers["Content-Length"] == "12"
    assert response.header("content-length") == "12"
    assert response.header("Content-Length") == "12"


# --- cleartext HTTP/1.1 --------------------------------------------------------------------------


async def test_cleartext_http1_against_nginx(nginx_http1: Nginx) -> None:
    async with h2pool.Pool(f"http://{nginx_http1.target}", http1=True, timeout=10) as pool:
        response = await pool.request("GET", "/index.html")
        assert (response.status_code, response.content) == (200, INDEX_HTML)
        assert response.http_version == "HTTP/1.1"
        assert response.endpoint == nginx_http1.target
    assert '"GET /index.html HTTP/1.1" 200 12 ' in nginx_http1.access_log_path.read_text()


async def test_http1_for_one_endpoint_of_two(nghttpd_h2c: Nghttpd, nginx_http1: Nginx) -> None:
    h2c, http1 = nghttpd_h2c.target, nginx_http1.target
    pool = h2pool.Pool("http://service.test", endpoints=[h2c, http1], http1=[http1], timeout=10)
    async with pool:
        await eventually(
            lambda: all(ep.state is h2pool.ConnectivityState.READY for ep in pool.stats().endpoints)
        )
        responses = [await pool.request("GET", "/index.html") for _ in range(10)]
    assert all(r.content == INDEX_HTML for r in responses)
    # Each endpoint spoke its own protocol, and ties rotate, so both served.
    assert {(r.endpoint, r.http_version) for r in responses} == {
        (h2c, "HTTP/2"),
        (http1, "HTTP/1.1"),
    }


async def test_cancelled_shutdown_of_an_http1_connection_still_closes_it() -> None:
    # An HTTP/1.1 server that reads the request and never answers.
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client closes
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = h2pool.Pool(f"http://127.0.0.1:{port}", http1=True, timeout=10)
    try:
        # A POST: not retried on another connection once it may have been processed.
        request = asyncio.ensure_future(pool.request("POST", "/", content=b"x"))
        await eventually(lambda: pool.stats().active == 1)
        (connection,) = pool._maintenance.endpoints[0].connections
        closing = asyncio.ensure_future(connection.shutdown(timeout=None))  # waits for the request
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        async with asyncio.timeout(5):
            await closed.wait()  # the socket was closed all the same
        with pytest.raises(h2pool.H2PoolError):
            await request
    finally:
        await pool.aclose()
        server.close()
        await server.wait_closed()
