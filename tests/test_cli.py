"""The ``h2pool`` command, run as a subprocess (``python -m h2pool``) against real servers.

Every error case is met for real (a refused port, a plain-HTTP server on
https, a server that never answers): one ``h2pool: error:`` line, its exit
code, no traceback.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import h2pool
from h2pool._cli.arguments import parse, parse_header, split_list, split_url
from h2pool._cli.failures import CommandError, Exit, classify, describe
from h2pool._rpc.errors import RpcError
from h2pool._rpc.status import StatusCode
from tests.peers import GrpcEchoServer, Nghttpd
from tests.peers.documents import INDEX_HTML, SMALL_TXT
from tests.servers import Server, echo, hold, mute_listener

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Ran:
    """A finished command."""

    code: int
    stdout: bytes
    stderr: str


async def run(*args: str, stdin: bytes = b"", timeout: float = 30.0) -> Ran:
    """``python -m h2pool *args`` from the worktree's root, bounded by ``timeout``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "h2pool",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, out, err.decode())


def assert_one_error(ran: Ran, code: int, *words: str) -> None:
    """``ran`` failed with ``code`` and one ``h2pool: error:`` line naming ``words``."""
    assert ran.code == code, ran
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("h2pool: error: ")
    for word in words:
        assert word in lines[0]
    assert ran.stdout == b""


def refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- Pure: the arguments and the mapping of failures --------------------------------------------


def test_header_syntax() -> None:
    assert parse_header("X-A:  b c ") == ("X-A", "b c")
    assert parse_header("x:") == ("x", "")
    for bad in ("no colon", ": value", "two words: v"):
        with pytest.raises(CommandError, match="bad header"):
            parse_header(bad)


def test_url_split_for_the_pool() -> None:
    assert split_url("http://h:81/a/b?q=1") == ("http://h:81", "/a/b?q=1")
    assert split_url("https://u:p@h") == ("https://u:p@h", "/")
    for bad in ("ftp://h/", "h:80/x", "http://:80/", "http://h:99999/"):
        with pytest.raises(CommandError) as caught:
            split_url(bad)
        assert caught.value.exit_code is Exit.BAD_URL


def test_endpoint_list_and_options() -> None:
    assert split_list(" a:1, ,b:2 ") == ["a:1", "b:2"]
    args = parse(["get", "http://h/", "-H", "a: b", "-H", "c: d", "--endpoints", "x:1,y:2"])
    assert (args.headers, args.endpoints, args.timeout) == (["a: b", "c: d"], ["x:1", "y:2"], 30.0)
    for bad in (
        ["get"],
        ["get", "http://h/", "-d", "x", "--json", "1"],
        ["get", "u", "--timeout", "0"],
    ):
        with pytest.raises(CommandError):
            parse(bad)


def test_failures_classified() -> None:
    unresolved = h2pool.ConnectError("cannot resolve")
    unresolved.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert classify(unresolved) == Exit.UNRESOLVED
    assert classify(h2pool.ConnectError("refused")) == Exit.CONNECT
    assert classify(h2pool.CertificateVerifyError("bad certificate")) == Exit.TLS
    assert classify(h2pool.RequestTimeout("too slow")) == Exit.TIMEOUT
    assert classify(RpcError(StatusCode.NOT_FOUND, "no")) == 64 + 5
    assert classify(h2pool.StreamReset("reset")) == Exit.FAILED
    assert describe(OSError("a\nb")) == "OSError: a b"


# --- get: against h2pool's own server and nghttpd ---------------------------------------------


async def test_get_body_only_on_stdout() -> None:
    async with Server(echo) as server:
        url = f"http://127.0.0.1:{server.port}/x"
        quiet = await run("get", url, "-d", "payload\u00e9")
        verbose = await run("get", url, "-d", "@-", "-H", "x-who: me", "-v", stdin=b"\xff\x00")
    assert (quiet.code, quiet.stdout, quiet.stderr) == (0, "payload\u00e9".encode(), "")
    assert (verbose.code, verbose.stdout) == (0, b"\xff\x00")
    lines = verbose.stderr.splitlines()
    assert f"* POST {url}" in lines
    assert "> x-who: me" in lines
    assert "< HTTP/2 200" in lines
    assert "< x-echo: 1" in lines
    assert "< x-who: me" in lines  # echo's trailers
    assert lines[-1].startswith(f"* endpoint 127.0.0.1:{server.port}, ")


async def test_get_json_and_trailers() -> None:
    async with Server(echo) as server:
        ran = await run(
            "get", f"http://127.0.0.1:{server.port}/", "--json", '{"a": [1, 2]}', "--trailers"
        )
    assert (ran.code, ran.stdout) == (0, b'{"a":[1,2]}')
    assert "< content-type: application/json" in ran.stderr.splitlines()
    assert "< te: trailers" in ran.stderr.splitlines()


async def test_get_nghttpd_files_and_fail(nghttpd_h2c: Nghttpd) -> None:
    index = await run("get", nghttpd_h2c.url("/index.html"))
    small = await run("get", nghttpd_h2c.url("/small.txt"), "--endpoints", nghttpd_h2c.target)
    missing = await run("get", nghttpd_h2c.url("/missing"))
    failed = await run("get", nghttpd_h2c.url("/missing"), "--fail")
    assert (index.code, index.stdout, index.stderr) == (0, INDEX_HTML, "")
    assert (small.code, small.stdout) == (0, SMALL_TXT)
    assert missing.code == 0
    assert failed.code == Exit.HTTP_ERROR
    assert "Traceback" not in failed.stderr


# --- get: user errors met for real ----------------------------------------------------------


async def test_refused_connection() -> None:
    port = refused_port()
    assert_one_error(await run("get", f"http://127.0.0.1:{port}/"), Exit.CONNECT, f":{port}")


async def test_unresolvable_host() -> None:
    ran = await run("get", "http://no-such-host.invalid/")
    assert_one_error(ran, Exit.UNRESOLVED, "no-such-host.invalid")


async def test_bad_url_and_header() -> None:
    assert_one_error(await run("get", "ftp://example/"), Exit.BAD_URL, "ftp://example/")
    ran = await run("get", "http://127.0.0.1:1/", "-H", "no-colon")
    assert_one_error(ran, Exit.USAGE, "no-colon")
    assert_one_error(await run("get"), Exit.USAGE, "url")


async def test_tls_to_a_plain_http_server() -> None:
    async with Server(echo) as server:
        ran = await run("get", f"https://127.0.0.1:{server.port}/", "--timeout", "5")
    assert_one_error(ran, Exit.TLS, f"127.0.0.1:{server.port}")


async def test_server_that_never_answers() -> None:
    async with mute_listener() as port:
        ran = await run("get", f"http://127.0.0.1:{port}/", "--timeout", "0.5")
    assert_one_error(ran, Exit.TIMEOUT, f"127.0.0.1:{port}")


async def test_http2_server_that_never_answers_the_request() -> None:
    async with Server(hold(asyncio.Event())) as server:
        ran = await run("get", f"http://127.0.0.1:{server.port}/slow", "--timeout", "0.5")
    assert_one_error(ran, Exit.TIMEOUT, f"http://127.0.0.1:{server.port}/slow", "timed out")


async def test_unreadable_body_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    ran = await run("get", "http://127.0.0.1:1/", "-d", f"@{missing}")
    assert_one_error(ran, Exit.USAGE, str(missing))


async def test_reader_leaving_early_is_no_error() -> None:
    """``h2pool get URL | head -c 10``: no traceback, no "Exception ignored" at exit."""
    reader, writer = os.pipe()
    async with Server(echo) as server:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "h2pool",
                "get",
                f"http://127.0.0.1:{server.port}/",
                "-d",
                "@-",
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=writer,
                stderr=asyncio.subprocess.PIPE,
            )
        finally:
            os.close(writer)
        try:
            assert process.stdin is not None
            process.stdin.write(b"x" * 1_000_000)  # more than a pipe holds
            process.stdin.close()
            assert await asyncio.to_thread(os.read, reader, 10) == b"x" * 10
        finally:
            os.close(reader)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert (process.returncode, err) == (0, b"")


# --- rpc: against grpcio -------------------------------------------------------------------


async def test_rpc_bytes_in_bytes_out(grpc_echo_server: GrpcEchoServer) -> None:
    url = f"http://{grpc_echo_server.target}"
    ran = await run("rpc", url, "/test.Echo/Unary", "--data-hex", "00ff10", "-v")
    from_stdin = await run("rpc", url, "/test.Echo/Unary", "--data-file", "-", stdin=b"abc")
    assert (ran.code, ran.stdout) == (0, b"\x00\xff\x10")
    assert "* status OK: " in ran.stderr.splitlines()
    assert (from_stdin.code, from_stdin.stdout, from_stdin.stderr) == (0, b"abc", "")


async def test_rpc_status_not_ok(grpc_echo_server: GrpcEchoServer) -> None:
    url = f"http://{grpc_echo_server.target}"
    ran = await run("rpc", url, "/test.Echo/Missing")
    assert_one_error(ran, 64 + StatusCode.UNIMPLEMENTED, "UNIMPLEMENTED")
    slow = await run("rpc", url, "/test.Echo/Slow", "--data-hex", b"5".hex(), "--timeout", "0.3")
    assert_one_error(slow, 64 + StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
    not_hex = await run("rpc", url, "/test.Echo/Unary", "--data-hex", "zz")
    assert_one_error(not_hex, Exit.USAGE, "--data-hex")
    bad = await run("rpc", url, "test.Echo/Unary")
    assert_one_error(bad, Exit.USAGE, "/package.Service/Method")
    refused = await run("rpc", f"http://127.0.0.1:{refused_port()}", "/test.Echo/Unary")
    assert_one_error(refused, 64 + StatusCode.UNAVAILABLE, "UNAVAILABLE")
