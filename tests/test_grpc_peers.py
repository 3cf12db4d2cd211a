"""The gRPC test peers, proven with grpcio's own client (grpc.aio) and a raw h2 probe.

``h2pool.rpc`` is tested against these servers; here they are shown to do what their
docstrings say before any h2pool code is involved.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.peers import (
    Certificates,
    GeneratedModules,
    GreeterServer,
    GrpcProcessFactory,
    GrpcServerProcess,
    GrpcTestServer,
    PeerExitedError,
    Rpc,
    generate,
    parse_plan,
    raw_grpc_call,
)
from tests.peers.grpc_service import PlanError
from tests.rpc_support import Md, multicallable, outcome, start

pytestmark = pytest.mark.peer

MiB = 1024 * 1024
# Compressible and larger than gzip's overhead: grpcio sends shorter messages uncompressed.
_BIG = b"compressible " * 1000

# --- Pure: the metadata parsing ---------------------------------------------------------------


def test_plan_reads_metadata() -> None:
    plan = parse_plan(
        [
            ("x-status", "NOT_FOUND"),
            ("x-after", "2"),
            ("x-sleep", "0.5"),
            ("x-echo-a", "1"),
            ("x-echo-b-bin", b"\x00\xff"),
            ("x-compress", "0"),
            ("x-compression", "deflate"),
            ("other", "ignored"),
        ]
    )
    assert plan.status is grpc.StatusCode.NOT_FOUND
    assert (plan.after, plan.sleep, plan.compress) == (2, 0.5, False)
    assert plan.compression is grpc.Compression.Deflate
    assert plan.initial_metadata == (("x-echo-a", "1"), ("x-echo-b-bin", b"\x00\xff"))
    assert plan.trailing_metadata == (("x-trailer-a", "1"), ("x-trailer-b-bin", b"\x00\xff"))
    assert parse_plan([("x-status", "5")]).status is grpc.StatusCode.NOT_FOUND
    assert parse_plan([("x-status", "0")]).status is None
    assert parse_plan([("x-details-bin", "é".encode())]).details == "é"


@pytest.mark.parametrize(
    "metadata",
    [
        ("x-status", "bogus"),
        ("x-status", "99"),
        ("x-after", "-1"),
        ("x-sleep", "soon"),
        ("x-compression", "brotli"),
        ("x-fail-first", "1"),  # without an x-id
    ],
)
def test_plan_refuses_bad_values(metadata: tuple[str, str]) -> None:
    with pytest.raises(PlanError):
        parse_plan([metadata])


# --- The four call kinds -------------------------------------------------------------------


async def test_four_call_kinds(grpc_server: GrpcTestServer) -> None:
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        assert await multicallable(channel, Rpc.UNARY)(b"hello") == b"hello"
        stream = multicallable(channel, Rpc.SERVER_STREAM)(
            b"", metadata=(("x-count", "4"), ("x-size", "1000"))
        )
        assert [message async for message in stream] == [bytes([i]) * 1000 for i in range(4)]
        repeated = multicallable(channel, Rpc.SERVER_STREAM)(b"ab")
        assert [message async for message in repeated] == [b"ab"] * 3
        upload = multicallable(channel, Rpc.CLIENT_STREAM)
        assert await upload(iter([b"ab", b"", b"cd"])) == b"abcd"
        summary = upload(iter([b"ab", b"cde"]), metadata=(("x-reply", "summary"),))
        assert await summary == b"2 5"
        bidi = multicallable(channel, Rpc.BIDI)()
        for message in (b"one", b"two", b"three"):
            await bidi.write(message)
            assert await bidi.read() == message  # each echo comes before the next write
        await bidi.done_writing()
        assert await bidi.read() is grpc.aio.EOF
        assert await bidi.code() is grpc.StatusCode.OK
    for method in Rpc:
        assert grpc_server.calls_started(method) >= 1
    assert grpc_server.calls_cancelled() == 0


async def test_fail_first_calls_of_an_id(grpc_server: GrpcTestServer) -> None:
    metadata = (("x-status", "UNAVAILABLE"), ("x-id", "a"), ("x-fail-first", "2"))
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        unary = multicallable(channel, Rpc.UNARY)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await unary(b"x", metadata=metadata)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert await unary(b"x", metadata=metadata) == b"x"  # the third call of "a"
        with pytest.raises(grpc.aio.AioRpcError):  # another id counts on its own
            await unary(b"x", metadata=(*metadata[:1], ("x-id", "b"), metadata[2]))
        assert await unary(b"x", metadata=metadata) == b"x"
    assert grpc_server.log.calls_with_id("a") == 4
    assert grpc_server.log.calls_with_id("b") == 1
    assert parse_plan(metadata).fail_first == 2


async def test_pushback_trailer(grpc_server: GrpcTestServer) -> None:
    metadata = (("x-status", "UNAVAILABLE"), ("x-pushback-ms", "-1"))
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await multicallable(channel, Rpc.UNARY)(b"x", metadata=metadata)
    assert ("grpc-retry-pushback-ms", "-1") in tuple(caught.value.trailing_metadata())


async def test_tls(grpc_tls_server: GrpcTestServer, certificates: Certificates) -> None:
    credentials = grpc.ssl_channel_credentials(certificates.ca_pem.read_bytes())
    # The certificate names localhost and 127.0.0.1; grpc checks the name it connects to.
    async with grpc.aio.secure_channel(grpc_tls_server.target, credentials) as channel:
        assert await multicallable(channel, Rpc.UNARY)(b"secret") == b"secret"


# --- Statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(Rpc))
async def test_status_before_any_message(grpc_server: GrpcTestServer, method: Rpc) -> None:
    metadata: Md = (("x-status", "NOT_FOUND"), ("x-details", "no such thing"))
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await outcome(start(channel, method, metadata))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such thing"
    assert grpc_server.calls_cancelled() == 0  # a status is an answer, not a cancellation


def test_trailers_only_on_the_wire(grpc_server: GrpcTestServer) -> None:
    error = [("x-status", "5"), ("x-details", "gone"), ("x-echo-a", "1")]
    for method in Rpc:
        response = raw_grpc_call(grpc_server.port, method, [b"x"], metadata=error)
        assert response.trailers_only, method
        assert response.trailers["grpc-status"] == "5"
        assert response.trailers["grpc-message"] == "gone"
        assert response.trailers["x-trailer-a"] == "1"
        assert response.messages == ()
    # Headers sent first: the same status comes in trailers after a separate header block.
    response = raw_grpc_call(
        grpc_server.port, Rpc.UNARY, [b"x"], metadata=[*error, ("x-headers-first", "1")]
    )
    assert not response.trailers_only
    assert len(response.header_blocks) == 2
    assert response.headers["x-echo-a"] == "1"
    assert response.trailers["grpc-status"] == "5"
    # A stream with no message and OK: Trailers-Only too.
    empty = raw_grpc_call(grpc_server.port, Rpc.SERVER_STREAM, [b"x"], metadata=[("x-count", "0")])
    assert empty.trailers_only
    assert empty.trailers["grpc-status"] == "0"


def test_message_then_error_on_the_wire(grpc_server: GrpcTestServer) -> None:
    for method in (Rpc.UNARY, Rpc.CLIENT_STREAM):
        response = raw_grpc_call(
            grpc_server.port, method, [b"x"], metadata=[("x-status", "9"), ("x-after", "1")]
        )
        assert [m.payload for m in response.messages] == [b"x"], method
        assert response.trailers["grpc-status"] == "9"


async def test_status_after_some_messages(grpc_server: GrpcTestServer) -> None:
    metadata: Md = (("x-count", "5"), ("x-after", "2"), ("x-status", "ABORTED"))
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        call = start(channel, Rpc.SERVER_STREAM, metadata)
        assert await call.read() == b"ping"
        assert await call.read() == b"ping"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() is grpc.StatusCode.ABORTED
        # Bidi: the status after one echo, without waiting for more requests.
        bidi = multicallable(channel, Rpc.BIDI)(
            metadata=(("x-after", "1"), ("x-status", "RESOURCE_EXHAUSTED"))
        )
        await bidi.write(b"a")
        assert await bidi.read() == b"a"
        assert await bidi.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_non_ascii_details(grpc_server: GrpcTestServer) -> None:
    details = "caf\u00e9 \u2603 100%"
    metadata: Md = (("x-status", "INTERNAL"), ("x-details-bin", details.encode()))
    wire = raw_grpc_call(
        grpc_server.port, Rpc.UNARY, [b""], metadata=[("x-status", "13"), ("x-details", "a b%")]
    )
    assert wire.trailers["grpc-message"] == "a b%25"  # percent-encoded on the wire
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await start(channel, Rpc.UNARY, metadata)
    assert caught.value.details() == details


# --- Metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(Rpc))
async def test_metadata_echo(grpc_server: GrpcTestServer, method: Rpc) -> None:
    binary = bytes(range(256))
    metadata: Md = (("x-echo-name", "value"), ("x-echo-blob-bin", binary), ("x-plain", "p"))
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        call = start(channel, method, metadata)
        assert await outcome(call) == [b"ping"] * (3 if method is Rpc.SERVER_STREAM else 1)
        initial = tuple(await call.initial_metadata())
        trailing = tuple(await call.trailing_metadata())
    assert ("x-echo-name", "value") in initial
    assert ("x-echo-blob-bin", binary) in initial
    assert ("x-trailer-name", "value") in trailing
    assert ("x-trailer-blob-bin", binary) in trailing
    assert not any(key == "x-plain" for key, _ in initial + trailing)
    assert ("x-echo-blob-bin", binary) in grpc_server.last_metadata(method)


# --- Delays, never, cancellation -----------------------------------------------------------


async def test_sleep_past_the_deadline_is_cancelled(grpc_server: GrpcTestServer) -> None:
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await start(channel, Rpc.UNARY, (("x-sleep", "30"),), timeout=0.3)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1, 10.0, Rpc.UNARY)
        # A short sleep answers.
        assert await start(channel, Rpc.UNARY, (("x-sleep", "0.05"),)) == b"ping"


@pytest.mark.parametrize("method", list(Rpc))
async def test_never_answers_until_cancelled(grpc_server: GrpcTestServer, method: Rpc) -> None:
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        call = start(channel, method, (("x-never", "1"), ("x-headers-first", "1")))
        if method is not Rpc.UNARY:  # grpc.aio gives a unary call's headers with its end
            await call.initial_metadata()  # the headers came first, the answer never does
        await asyncio.to_thread(grpc_server.wait_for_calls, method, 1)
        assert grpc_server.calls_cancelled() == 0
        assert call.cancel()
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1, 10.0, method)
    assert grpc_server.messages_sent(method) == 0


async def test_cancel_mid_stream(grpc_server: GrpcTestServer) -> None:
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        call = start(channel, Rpc.SERVER_STREAM, (("x-count", "100"), ("x-interval", "0.05")))
        assert await call.read() == b"ping"
        call.cancel()
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1, 10.0, Rpc.SERVER_STREAM)
    assert grpc_server.messages_sent(Rpc.SERVER_STREAM) < 100


async def test_slow_reader_of_64_mib(grpc_server: GrpcTestServer) -> None:
    metadata: Md = (("x-count", "64"), ("x-size", str(MiB)))
    async with grpc.aio.insecure_channel(grpc_server.target) as channel:
        call = start(channel, Rpc.SERVER_STREAM, metadata)
        assert await call.read() == bytes([0]) * MiB
        await asyncio.sleep(0.3)  # a slow reader: flow control holds the server back
        assert grpc_server.messages_sent(Rpc.SERVER_STREAM) < 64
        for index in range(1, 64):
            assert await call.read() == bytes([index]) * MiB
        assert await call.read() is grpc.aio.EOF
    assert grpc_server.messages_sent(Rpc.SERVER_STREAM) == 64


# --- Compression ---------------------------------------------------------------------------


def test_compression_on_the_wire() -> None:
    with GrpcTestServer(compression=grpc.Compression.Gzip) as server:
        response = raw_grpc_call(server.port, Rpc.UNARY, [_BIG])
        assert response.headers["grpc-encoding"] == "gzip"
        assert [(m.compressed, m.payload) for m in response.messages] == [(True, _BIG)]
        plain = raw_grpc_call(server.port, Rpc.UNARY, [_BIG], metadata=[("x-compress", "0")])
        assert [(m.compressed, m.payload) for m in plain.messages] == [(False, _BIG)]
        request = raw_grpc_call(server.port, Rpc.UNARY, [_BIG], compress=True)
        assert [m.payload for m in request.messages] == [_BIG]  # the server decompressed it
    with GrpcTestServer() as server:
        assert not raw_grpc_call(server.port, Rpc.UNARY, [_BIG]).messages[0].compressed
        deflate = raw_grpc_call(
            server.port, Rpc.UNARY, [_BIG], metadata=[("x-compression", "deflate")]
        )
        assert deflate.headers["grpc-encoding"] == "deflate"
        assert [(m.compressed, m.payload) for m in deflate.messages] == [(True, _BIG)]


async def test_compression_with_grpc_aio() -> None:
    with GrpcTestServer(compression=grpc.Compression.Gzip) as server:
        async with grpc.aio.insecure_channel(
            server.target, compression=grpc.Compression.Gzip
        ) as channel:
            assert await multicallable(channel, Rpc.UNARY)(_BIG) == _BIG
            upload = multicallable(channel, Rpc.CLIENT_STREAM)
            assert await upload(iter([_BIG, _BIG]), compression=grpc.Compression.Deflate) == (
                _BIG * 2
            )


# --- Health --------------------------------------------------------------------------------


async def _health(target: str, service: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        status: int = response.status
        return status


async def test_health(grpc_server: GrpcTestServer) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _health(grpc_server.target, "") == serving
    grpc_server.set_health("test.Rpc", "NOT_SERVING")
    assert await _health(grpc_server.target, "test.Rpc") == not_serving
    grpc_server.set_health("", "NOT_SERVING")
    assert await _health(grpc_server.target, "") == not_serving
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _health(grpc_server.target, "no.such.Service")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


# --- The server in a child process ---------------------------------------------------------


async def test_process_killed(grpc_process_factory: GrpcProcessFactory) -> None:
    server = grpc_process_factory()
    async with grpc.aio.insecure_channel(server.target) as channel:
        assert await start(channel, Rpc.UNARY, ()) == b"ping"
        call = start(channel, Rpc.UNARY, (("x-never", "1"),))
        await asyncio.to_thread(server.wait_for_calls, Rpc.UNARY, 2)
        assert server.stats()["started"] == {Rpc.UNARY: 2}
        server.kill()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert server.returncode == -9
    server.start()  # back on the same port
    async with grpc.aio.insecure_channel(server.target) as channel:
        assert await start(channel, Rpc.UNARY, ()) == b"ping"


async def test_process_graceful_stop(grpc_process_factory: GrpcProcessFactory) -> None:
    server = grpc_process_factory()
    server.set_health("test.Rpc", "SERVING")
    assert await _health(server.target, "test.Rpc") == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(server.target) as channel:
        in_flight = start(channel, Rpc.UNARY, (("x-sleep", "0.5"),))
        await asyncio.to_thread(server.wait_for_calls, Rpc.UNARY, 1)
        server.stop(grace=5.0)
        assert await in_flight == b"ping"  # finished within the grace period
        assert await asyncio.to_thread(server.wait, 10.0) == 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await start(channel, Rpc.UNARY, (), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_process_options(grpc_process_factory: GrpcProcessFactory) -> None:
    server = grpc_process_factory(
        options=(("grpc.max_receive_message_length", 10),), compression=grpc.Compression.Gzip
    )
    too_big = raw_grpc_call(server.port, Rpc.UNARY, [b"x" * 100])
    assert too_big.trailers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert raw_grpc_call(server.port, Rpc.UNARY, [_BIG[:5]]).messages[0].payload == _BIG[:5]
    with pytest.raises(subprocess.TimeoutExpired):
        server.wait(0.05)  # still running
    with pytest.raises(TimeoutError, match="0 of 1 calls"):
        server.wait_for_calls(Rpc.BIDI, 1, timeout=0.05)


def test_process_failed_start(tmp_path: Path) -> None:
    missing = Certificates(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    with pytest.raises(PeerExitedError, match="No such file"):
        GrpcServerProcess(certificates=missing).start()


# --- Generated code ------------------------------------------------------------------------


async def test_generated_stubs(greeter_server: GreeterServer, greeter_modules: Any) -> None:
    pb2, pb2_grpc = greeter_modules.pb2, greeter_modules.pb2_grpc
    request: Callable[..., Any] = pb2.HelloRequest
    async with grpc.aio.insecure_channel(greeter_server.target) as channel:
        stub = pb2_grpc.GreeterStub(channel)
        assert (await stub.SayHello(request(name="Ada"))).message == "Hello, Ada!"
        replies = [reply.message async for reply in stub.SayHelloStream(request(name="B", count=2))]
        assert replies == ["Hello, B #0!", "Hello, B #1!"]
        collected = await stub.CollectHellos(iter([request(name="C"), request(name="D")]))
        assert collected.message == "Hello, C, D!"
        chat = stub.Chat()
        await chat.write(request(name="E"))
        assert (await chat.read()).message == "Hello, E!"
        await chat.done_writing()
        assert await chat.read() is grpc.aio.EOF
    assert await _health(greeter_server.target, "") == health_pb2.HealthCheckResponse.SERVING


def test_generation_leaves_sys_modules_alone(tmp_path_factory: pytest.TempPathFactory) -> None:
    first: GeneratedModules = generate(tmp_path_factory.mktemp("one"))
    second = generate(tmp_path_factory.mktemp("two"))  # the same .proto again
    assert "demo_pb2" not in sys.modules
    assert "demo_pb2_grpc" not in sys.modules
    assert first.pb2 is not second.pb2
    assert second.pb2.HelloRequest(name="x").SerializeToString() == b"\n\x01x"
