"""Self-tests of ``tests.peers``, using only third-party clients (curl, h2load, nghttp, grpcio)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest
from hyperframe.frame import SettingsFrame

from tests.peers import (
    BIG_BIN_SIZE,
    HOST,
    INDEX_HTML,
    SMALL_TXT,
    Certificates,
    GrpcEchoServer,
    H2loadResult,
    Nghttpd,
    Nginx,
    PeerExitedError,
    client_ssl_context,
    free_port,
    run_command,
    run_curl,
    run_h2load,
    server_ssl_context,
    wait_for_port,
)

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

# curl: print the negotiated HTTP version on stderr, keeping stdout for the body.
CURL_VERSION_ON_STDERR = ["-sS", "-w", "%{stderr}%{http_version}"]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def test_docroot_contents(docroot: Path, big_bin_sha256: str) -> None:
    assert (docroot / "index.html").read_bytes() == INDEX_HTML
    assert (docroot / "small.txt").read_bytes() == SMALL_TXT
    assert len(SMALL_TXT) == 100
    big = (docroot / "big.bin").read_bytes()
    assert len(big) == BIG_BIN_SIZE
    assert hashlib.sha256(big).hexdigest() == big_bin_sha256


async def test_curl_h2c_prior_knowledge(nghttpd_h2c: Nghttpd) -> None:
    args = [*CURL_VERSION_ON_STDERR, "--http2-prior-knowledge", nghttpd_h2c.url("/index.html")]
    returncode, stdout, stderr = await run_curl(args, timeout=10)
    assert (returncode, stdout, stderr) == (0, INDEX_HTML, b"2")


async def test_curl_tls_verifies_certificate(
    nghttpd_tls: Nghttpd, certificates: Certificates
) -> None:
    for host in ("127.0.0.1", "localhost"):
        url = f"https://{host}:{nghttpd_tls.port}/small.txt"
        args = [*CURL_VERSION_ON_STDERR, "--cacert", str(certificates.ca_pem), url]
        returncode, stdout, stderr = await run_curl(args, timeout=10)
        assert (returncode, stdout, stderr) == (0, SMALL_TXT, b"2"), host
    # Without the CA, verification fails: the certificate really is checked.
    returncode, _, _ = await run_curl(["-sS", nghttpd_tls.url("/small.txt")], timeout=10)
    assert returncode == 60  # CURLE_PEER_FAILED_VERIFICATION


async def test_curl_big_file_with_small_windows(
    docroot: Path, big_bin_sha256: str, tmp_path: Path
) -> None:
    # Small windows force many WINDOW_UPDATE round trips through a 16 MiB body.
    extra = ["--window-bits=14", "--connection-window-bits=16"]
    with Nghttpd(docroot, extra_args=extra, log_dir=tmp_path) as server:
        args = ["-sS", "--http2-prior-knowledge", server.url("/big.bin")]
        returncode, stdout, stderr = await run_curl(args, timeout=20)
    assert returncode == 0, stderr
    assert hashlib.sha256(stdout).hexdigest() == big_bin_sha256


async def test_nghttpd_extra_args_reach_settings(docroot: Path, tmp_path: Path) -> None:
    extra = ["-m", "7", "--window-bits=18"]
    with Nghttpd(docroot, extra_args=extra, log_dir=tmp_path) as server:
        returncode, stdout, _ = await run_command(
            ["nghttp", "-nv", server.url("/index.html")], timeout=10
        )
    assert returncode == 0
    assert b"[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7]" in stdout
    assert b"[SETTINGS_INITIAL_WINDOW_SIZE(0x04):262143]" in stdout


async def test_h2load_h2c(nghttpd_h2c: Nghttpd) -> None:
    result = await run_h2load(
        nghttpd_h2c.url("/index.html"), requests=2000, clients=4, streams=10, timeout=20
    )
    assert (result.succeeded, result.failed, result.errored, result.timeout) == (2000, 0, 0, 0)
    assert result.status_2xx == 2000
    assert "Application protocol: h2c" in result.output


async def test_h2load_tls(nghttpd_tls: Nghttpd) -> None:
    result = await run_h2load(
        nghttpd_tls.url("/small.txt"), requests=200, clients=2, streams=10, timeout=20
    )
    assert (result.succeeded, result.failed, result.status_2xx) == (200, 0, 200)
    assert "Application protocol: h2\n" in result.output


async def test_h2load_counts_404_as_failed_not_errored(nghttpd_h2c: Nghttpd) -> None:
    result = await run_h2load(
        nghttpd_h2c.url("/missing"), requests=10, clients=1, streams=1, timeout=20
    )
    assert (result.succeeded, result.failed, result.errored, result.status_4xx) == (0, 10, 0, 10)
    assert result.returncode == 0  # h2load does not report failures in its exit status


async def test_h2load_connection_refused_counts_as_errored() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    result = await run_h2load(url, requests=10, clients=1, streams=1, timeout=20)
    assert (result.started, result.failed, result.errored) == (0, 10, 10)


def test_h2load_parse_rejects_output_without_summary() -> None:
    with pytest.raises(ValueError, match="no h2load summary"):
        H2loadResult.parse(1, "", "h2load: invalid option")


async def test_run_curl_kills_a_hung_curl() -> None:
    # A listener that never accepts: curl connects (backlog) and then waits forever.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.5 s"):
            await run_curl(["-sS", "--http2-prior-knowledge", url], timeout=0.5)
        assert time.monotonic() - started < 5


async def negotiated_alpn(port: int, context: ssl.SSLContext) -> str | None:
    """The protocol ALPN selects in a TLS handshake with the server on ``port``."""
    _, writer = await asyncio.open_connection(
        HOST, port, ssl=context, server_hostname="localhost", ssl_handshake_timeout=5
    )
    try:
        protocol: str | None = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        return protocol
    finally:
        # Abort rather than close: nghttpd's SETTINGS arriving after our close_notify would
        # make the TLS shutdown fail with APPLICATION_DATA_AFTER_CLOSE_NOTIFY.
        writer.transport.abort()
        async with asyncio.timeout(5):
            await writer.wait_closed()


async def test_ssl_contexts_negotiate_h2(certificates: Certificates, nghttpd_tls: Nghttpd) -> None:
    client = client_ssl_context(certificates)

    async def alpn_of(port: int) -> str | None:
        return await negotiated_alpn(port, client)

    # Our client context against nghttpd.
    assert await alpn_of(nghttpd_tls.port) == "h2"

    # Our server context against our client context.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=server_ssl_context(certificates), ssl_handshake_timeout=5
    )
    async with server:
        assert await alpn_of(server.sockets[0].getsockname()[1]) == "h2"


def test_wait_for_port_reports_a_crashed_server_at_once(docroot: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(PeerExitedError, match="unrecognized option") as caught:
        Nghttpd(docroot, extra_args=["--no-such-flag"], log_dir=tmp_path).start()
    assert caught.value.returncode == 1
    assert time.monotonic() - started < 5


def test_wait_for_port_times_out() -> None:
    with pytest.raises(TimeoutError, match="nothing accepted connections"):
        wait_for_port(free_port(), timeout=0.2)


def test_grpc_unary_echo(grpc_echo_server: GrpcEchoServer) -> None:
    with grpc.insecure_channel(grpc_echo_server.target) as channel:
        unary = channel.unary_unary(
            "/test.Echo/Unary", request_serializer=None, response_deserializer=None
        )
        assert unary(b"\x00ping\xff", timeout=10) == b"\x00ping\xff"


def test_grpc_graceful_stop_lets_a_call_in_flight_finish(
    grpc_echo_server: GrpcEchoServer,
) -> None:
    with grpc.insecure_channel(grpc_echo_server.target) as channel:
        slow = channel.unary_unary(
            "/test.Echo/Slow", request_serializer=None, response_deserializer=None
        )
        call = slow.future(b"", timeout=10)  # empty: wait until released
        grpc_echo_server.wait_for_slow_calls(1)
        stopped = grpc_echo_server.stop(grace=10)
        grpc_echo_server.release()
        assert call.result(timeout=10) == b""
        assert stopped.wait(10)


def test_grpc_stop_cancels_calls_when_grace_expires(grpc_echo_server: GrpcEchoServer) -> None:
    with grpc.insecure_channel(grpc_echo_server.target) as channel:
        slow = channel.unary_unary(
            "/test.Echo/Slow", request_serializer=None, response_deserializer=None
        )
        call = slow.future(b"", timeout=10)
        grpc_echo_server.wait_for_slow_calls(1)
        assert grpc_echo_server.stop(grace=0.2).wait(10)
        with pytest.raises(grpc.RpcError) as caught:
            call.result(timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_slow_waits_for_the_requested_time(grpc_echo_server: GrpcEchoServer) -> None:
    with grpc.insecure_channel(grpc_echo_server.target) as channel:
        slow = channel.unary_unary(
            "/test.Echo/Slow", request_serializer=None, response_deserializer=None
        )
        started = time.monotonic()
        assert slow(b"0.2", timeout=10) == b"0.2"
        assert 0.2 <= time.monotonic() - started < 5


def test_stopped_nghttpd_is_reaped(docroot: Path, tmp_path: Path) -> None:
    with Nghttpd(docroot, log_dir=tmp_path) as server:
        pid = server.pid
    assert pid is not None
    # Waited for, not just signalled: no zombie is left behind.
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not Path(f"/proc/{pid}").exists()


# --- nginx (HTTP/1.1 only) -----------------------------------------------------------------------


async def test_nginx_tls_answers_curl_http2_in_http1(
    nginx_http1_tls: Nginx, certificates: Certificates
) -> None:
    assert nginx_http1_tls.scheme == "https"
    for host in ("127.0.0.1", "localhost"):
        url = f"https://{host}:{nginx_http1_tls.port}/"
        args = [*CURL_VERSION_ON_STDERR, "--http2", "--cacert", str(certificates.ca_pem), url]
        returncode, stdout, stderr = await run_curl(args, timeout=10)
        assert (returncode, stdout, stderr) == (0, INDEX_HTML, b"1.1"), host
    # Without the CA, verification fails: the certificate really is checked.
    returncode, _, _ = await run_curl(["-sS", nginx_http1_tls.url("/")], timeout=10)
    assert returncode == 60  # CURLE_PEER_FAILED_VERIFICATION
    assert '"GET / HTTP/1.1" 200 12 ' in nginx_http1_tls.access_log_path.read_text()


async def test_nginx_tls_alpn_selects_http1_and_refuses_h2_only(
    nginx_http1_tls: Nginx, certificates: Certificates
) -> None:
    async def alpn_of(context: ssl.SSLContext) -> str | None:
        return await negotiated_alpn(nginx_http1_tls.port, context)

    both = ssl.create_default_context(cafile=str(certificates.ca_pem))
    both.set_alpn_protocols(["h2", "http/1.1"])
    assert await alpn_of(both) == "http/1.1"
    # Offered only h2, nginx (>= 1.21.4) aborts the handshake instead of going without ALPN.
    with pytest.raises(ssl.SSLError, match="alert no application protocol"):
        await alpn_of(client_ssl_context(certificates))


async def test_nginx_cleartext_serves_http1_and_ignores_h2c(nginx_http1: Nginx) -> None:
    assert nginx_http1.scheme == "http"
    for extra in ([], ["--http2"]):  # --http2 asks for the h2c upgrade, which nginx ignores
        args = [*CURL_VERSION_ON_STDERR, *extra, nginx_http1.url("/index.html")]
        assert await run_curl(args, timeout=10) == (0, INDEX_HTML, b"1.1"), extra
    # An h2c client with prior knowledge gets an HTTP/1.1 error, then EOF.
    reader, writer = await asyncio.open_connection(HOST, nginx_http1.port)
    try:
        writer.write(H2_PREFACE + SettingsFrame(0).serialize())
        async with asyncio.timeout(5):
            response = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(5):
                await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n"), response[:100]
    assert b"\r\nConnection: close\r\n" in response


@pytest.mark.parametrize("tls", [False, True], ids=["cleartext", "tls"])
async def test_nginx_big_file(
    docroot: Path, certificates: Certificates, big_bin_sha256: str, tmp_path: Path, tls: bool
) -> None:
    with Nginx(docroot, certificates=certificates if tls else None, log_dir=tmp_path) as server:
        args = ["-sS", "--cacert", str(certificates.ca_pem), server.url("/big.bin")]
        returncode, stdout, stderr = await run_curl(args, timeout=20)
    assert returncode == 0, stderr
    assert len(stdout) == BIG_BIN_SIZE
    assert hashlib.sha256(stdout).hexdigest() == big_bin_sha256


async def test_nginx_keeps_connections_alive_and_takes_server_directives(
    docroot: Path, tmp_path: Path
) -> None:
    status = 'location = /status { return 200 "ok\\n"; }'
    with Nginx(docroot, server_directives=status, log_dir=tmp_path) as server:
        args = ["-sS", "-v", server.url("/small.txt"), server.url("/status")]
        returncode, stdout, stderr = await run_curl(args, timeout=10)
    assert (returncode, stdout) == (0, SMALL_TXT + b"ok\n"), stderr
    assert b"Re-using existing connection" in stderr  # keep-alive: one connection, two requests


def test_nginx_reports_a_bad_configuration_at_once(docroot: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(PeerExitedError, match='unknown directive "no_such_directive"'):
        Nginx(docroot, server_directives="no_such_directive on;", log_dir=tmp_path).start()
    assert time.monotonic() - started < 5


def nginx_processes_using(config: Path) -> list[int]:
    """The pids of live (not zombie) processes whose command line names ``config``."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):  # not a process, or it exited while we looked
            if not proc.name.isdigit() or (proc / "stat").read_text().rsplit(") ", 1)[1][0] == "Z":
                continue
            if str(config.resolve()).encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


def test_stopped_nginx_leaves_no_process(docroot: Path, tmp_path: Path) -> None:
    with Nginx(docroot, log_dir=tmp_path) as server:
        pid = server.pid
        assert pid is not None
        assert server.pid_path.read_text().strip() == str(pid)
        # One process (master_process off): nothing else runs from our configuration.
        assert nginx_processes_using(server.config_path) == [pid]
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert (server.running, server.returncode) == (False, 0)  # exited on SIGTERM, not killed
    # Waited for, not just signalled: no zombie is left behind, and no other process either.
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not Path(f"/proc/{pid}").exists()
    assert nginx_processes_using(server.config_path) == []
    assert not server.pid_path.exists()  # nginx removed it: a clean exit
    assert "exiting" in server.error_log_path.read_text()


# nghttpd and nginx share their lifecycle (_ServerProcess): each check runs on both.
SERVER_KINDS = [
    pytest.param(Nghttpd, ["--http2-prior-knowledge"], -signal.SIGTERM, id="nghttpd"),
    pytest.param(Nginx, [], 0, id="nginx"),  # nginx retries bind() for 2.5 s before it moves on
]


@pytest.mark.parametrize(("kind", "curl_args", "stopped_returncode"), SERVER_KINDS)
def test_server_retries_when_its_port_is_taken(
    kind: type[Nghttpd | Nginx],
    curl_args: list[str],
    stopped_returncode: int,
    docroot: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another listener holds the first port handed out; the connect to it must not fool us.
    with socket.create_server((HOST, 0)) as squatter:
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = free_port
        monkeypatch.setattr(
            "tests.peers.process.free_port", lambda: next(ports, None) or real_free_port()
        )
        with kind(docroot, log_dir=tmp_path) as server:
            assert server.port != taken
            assert server.running


@pytest.mark.parametrize(("kind", "curl_args", "stopped_returncode"), SERVER_KINDS)
async def test_server_comes_back_on_the_same_port(
    kind: type[Nghttpd | Nginx], curl_args: list[str], stopped_returncode: int, docroot: Path
) -> None:
    server = kind(docroot)  # no log_dir: a temporary one, removed by stop()
    args = ["-sS", *curl_args, "-o", "/dev/null"]
    with server:
        port = server.port
        server.restart()
        assert server.port == port
        server.kill()
        assert (server.running, server.returncode) == (False, -signal.SIGKILL)
        returncode, _, _ = await run_curl([*args, server.url("/index.html")], timeout=10)
        assert returncode == 7  # CURLE_COULDNT_CONNECT
        server.start()
        assert server.port == port
        returncode, _, _ = await run_curl([*args, server.url("/index.html")], timeout=10)
        assert returncode == 0
        log_dir = server.log_dir
    assert (server.running, server.returncode) == (False, stopped_returncode)
    assert not log_dir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=1).close()
