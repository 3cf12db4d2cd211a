"""``h2pool.rpc`` calls against grpcio's server: call kinds, statuses, metadata, deadlines,
compression and message limits (gRPC over HTTP/2 as PROTOCOL-HTTP2.md defines it).

The server is ``GrpcTestServer`` (``test.Rpc``, raw bytes): each call picks its behaviour with
its metadata (the table in tests/peers/grpc_service.py) and the server counts what it saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

import h2pool
from h2pool import rpc
from tests.peers import GrpcTestServer, Rpc
from tests.peers.grpc_server import ThreadedGrpcServer
from tests.rpc_support import STREAMING_RESPONSE, Md, multicallable, outcome, start, streams_freed

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

# Compressible and larger than gzip's overhead (grpcio sends shorter messages uncompressed).
BIG = b"compressible " * 1000
# Every status a server may end a call with, but OK.
ERRORS = [code for code in rpc.StatusCode if code is not rpc.StatusCode.OK]
# A deadline is met when the call ends before it plus this (a bound on lateness, not speed).
LATENESS = 1.0


def channel_to(server: ThreadedGrpcServer, **kwargs: Any) -> rpc.Channel:
    return rpc.insecure_channel(server.target, **kwargs)


# --- The four call kinds -----------------------------------------------------------------------


async def test_unary_unary(grpc_server: GrpcTestServer) -> None:
    async with channel_to(grpc_server) as channel:
        echo = channel.unary_unary(Rpc.UNARY)
        assert await echo(b"hello") == b"hello"
        assert await echo(b"") == b""
        assert await echo(BIG) == BIG
        assert await echo(bytes(range(256)) * 4096) == bytes(range(256)) * 4096  # 1 MiB


async def test_unary_stream(grpc_server: GrpcTestServer) -> None:
    async with channel_to(grpc_server) as channel:
        stream = channel.unary_stream(Rpc.SERVER_STREAM)
        sized = stream(b"", metadata=(("x-count", "4"), ("x-size", "1000")))
        assert [message async for message in sized] == [bytes([i]) * 1000 for i in range(4)]
        read = stream(b"ab")
        assert [await read.read() for _ in range(3)] == [b"ab"] * 3
        assert await read.read() is rpc.EOF
        assert await read.read() is rpc.EOF  # and again: the stream stays ended
        assert await read.code() is rpc.StatusCode.OK
        empty = stream(b"x", metadata=(("x-count", "0"),))  # Trailers-Only with OK
        assert [message async for message in empty] == []
        assert await empty.code() is rpc.StatusCode.OK


async def test_stream_unary(grpc_server: GrpcTestServer) -> None:
    async def produce() -> AsyncIterator[bytes]:
        for part in (b"a", b"", b"bc"):
            await asyncio.sleep(0)
            yield part

    async with channel_to(grpc_server) as channel:
        upload = channel.stream_unary(Rpc.CLIENT_STREAM)
        assert await upload(iter([b"ab", b"", b"cd"])) == b"abcd"  # a sync iterable
        assert await upload([b"x", b"y"]) == b"xy"
        assert await upload(produce()) == b"abc"  # an async iterable
        assert await upload(iter([])) == b""
        written = upload()
        for part in (b"1", b"22", b"333"):
            await written.write(part)
        await written.done_writing()
        assert await written == b"122333"
        assert await written.code() is rpc.StatusCode.OK


async def test_stream_stream(grpc_server: GrpcTestServer) -> None:
    async with channel_to(grpc_server) as channel:
        bidi = channel.stream_stream(Rpc.BIDI)
        call = bidi()
        for message in (b"one", b"two", b"three"):
            await call.write(message)
            assert await call.read() == message  # each echo comes before the next write
        await call.done_writing()
        assert await call.read() is rpc.EOF
        assert await call.code() is rpc.StatusCode.OK
        iterated = bidi(iter([b"a", b"b"]))
        assert [message async for message in iterated] == [b"a", b"b"]


async def test_serializers(grpc_server: GrpcTestServer) -> None:
    codec: dict[str, Any] = {
        "request_serializer": str.encode,
        "response_deserializer": bytes.decode,
    }
    async with channel_to(grpc_server) as channel:
        assert await multicallable(channel, Rpc.UNARY, **codec)("h\u00e9") == "h\u00e9"
        stream = multicallable(channel, Rpc.SERVER_STREAM, **codec)(
            "s", metadata=(("x-count", "2"),)
        )
        assert [message async for message in stream] == ["s", "s"]
        assert await multicallable(channel, Rpc.CLIENT_STREAM, **codec)(iter(["a", "b"])) == "ab"
        bidi = multicallable(channel, Rpc.BIDI, **codec)()
        await bidi.write("x")
        assert await bidi.read() == "x"
        await bidi.done_writing()
        assert await bidi.read() is rpc.EOF
        # Stubs pass extra keywords; they are accepted.
        registered = channel.unary_unary(
            Rpc.UNARY, str.encode, bytes.decode, _registered_method=True
        )
        assert await registered("r") == "r"


@pytest.mark.parametrize("method", [Rpc.UNARY, Rpc.SERVER_STREAM])
async def test_serializer_failure_sends_nothing(grpc_server: GrpcTestServer, method: Rpc) -> None:
    def refuse(message: object) -> bytes:
        raise ValueError("not serializable")

    async with channel_to(grpc_server) as channel:
        call = multicallable(channel, method, request_serializer=refuse)(object())
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        assert caught.value.code() is rpc.StatusCode.INTERNAL
        assert "not serializable" in caught.value.details()
        assert await call.code() is rpc.StatusCode.INTERNAL
    assert grpc_server.calls_started() == 0


async def test_deserializer_failure_is_internal(grpc_server: GrpcTestServer) -> None:
    def refuse(data: bytes) -> object:
        raise ValueError("bad response")

    async with channel_to(grpc_server) as channel:
        for method in Rpc:
            call = multicallable(channel, method, response_deserializer=refuse)(
                b"x" if method in (Rpc.UNARY, Rpc.SERVER_STREAM) else iter([b"x"])
            )
            with pytest.raises(rpc.RpcError) as caught:
                await outcome(call)
            assert caught.value.code() is rpc.StatusCode.INTERNAL, method
            assert await call.code() is rpc.StatusCode.INTERNAL, method
        await streams_freed(channel)


# --- Statuses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("headers_first", [False, True], ids=["trailers-only", "headers-first"])
@pytest.mark.parametrize("method", list(Rpc))
async def test_every_error_status(
    grpc_server: GrpcTestServer, method: Rpc, headers_first: bool
) -> None:
    async with channel_to(grpc_server) as channel:
        for code in ERRORS:
            metadata: Md = (
                ("x-status", str(code.value)),
                ("x-details", f"status {code.name}"),
                ("x-echo-tag", code.name.lower()),
                ("x-headers-first", "1" if headers_first else "0"),
            )
            call = start(channel, method, metadata)
            with pytest.raises(rpc.RpcError) as caught:
                await outcome(call)
            error = caught.value
            assert error.code() is code
            assert error.details() == f"status {code.name}"
            assert error.trailing_metadata()["x-trailer-tag"] == code.name.lower()
            assert isinstance(error, rpc.RpcError)
            assert str(code.value) in error.debug_error_string()
            assert await call.code() is code
            assert await call.details() == f"status {code.name}"
            assert (await call.trailing_metadata())["x-trailer-tag"] == code.name.lower()
            initial = await call.initial_metadata()
            # Trailers-Only: no header block but the one with the status (which is trailing).
            assert initial.get("x-echo-tag") == (code.name.lower() if headers_first else None)
            assert call.done()
            assert not call.cancelled()
    assert grpc_server.calls_cancelled() == 0


@pytest.mark.parametrize("method", list(Rpc))
async def test_non_ascii_details(grpc_server: GrpcTestServer, method: Rpc) -> None:
    details = "caf\u00e9 \u2603 100% \U0001f600 done"
    metadata: Md = (("x-status", "INTERNAL"), ("x-details-bin", details.encode()))
    async with channel_to(grpc_server) as channel:
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(start(channel, method, metadata))
    assert caught.value.details() == details  # percent-decoded from grpc-message


@pytest.mark.parametrize("method", list(Rpc))
async def test_error_after_messages(grpc_server: GrpcTestServer, method: Rpc) -> None:
    metadata: Md = (
        ("x-status", "ABORTED"),
        ("x-details", "half way"),
        ("x-after", "1"),
        ("x-count", "5"),
    )
    async with channel_to(grpc_server) as channel:
        call = start(channel, method, metadata)
        if method in STREAMING_RESPONSE:
            assert await call.read() == b"ping"
            with pytest.raises(rpc.RpcError) as caught:
                await call.read()
        else:
            # The message came, then the error status: the call fails (as in grpc.aio).
            with pytest.raises(rpc.RpcError) as caught:
                await call
        assert caught.value.code() is rpc.StatusCode.ABORTED
        assert caught.value.details() == "half way"
        assert await call.code() is rpc.StatusCode.ABORTED


async def test_error_after_many_messages_with_async_for(grpc_server: GrpcTestServer) -> None:
    metadata: Md = (("x-status", "DATA_LOSS"), ("x-after", "3"), ("x-count", "10"))
    received = []

    async def read_all(call: Any) -> None:
        async for message in call:
            received.append(message)

    async with channel_to(grpc_server) as channel:
        call = start(channel, Rpc.SERVER_STREAM, metadata)
        with pytest.raises(rpc.RpcError) as caught:
            await read_all(call)
    assert received == [b"ping"] * 3
    assert caught.value.code() is rpc.StatusCode.DATA_LOSS


# --- What every call offers --------------------------------------------------------------------


@pytest.mark.parametrize("method", list(Rpc))
async def test_call_interface(grpc_server: GrpcTestServer, method: Rpc) -> None:
    binary = bytes(range(256))
    metadata: Md = (("x-echo-name", "value"), ("x-echo-blob-bin", binary), ("x-plain", "p"))
    ended: list[Any] = []
    async with channel_to(grpc_server) as channel:
        call = start(channel, method, metadata, timeout=20.0)
        call.add_done_callback(ended.append)
        remaining = call.time_remaining()
        assert remaining is not None
        assert 0 < remaining <= 20.0
        assert not call.cancelled()
        initial = await call.initial_metadata()
        assert initial["x-echo-name"] == "value"
        assert initial["x-echo-blob-bin"] == binary
        assert "x-plain" not in initial
        count = 3 if method is Rpc.SERVER_STREAM else 1
        assert await outcome(call) == [b"ping"] * count
        assert await call.code() is rpc.StatusCode.OK
        assert ("x-echo-blob-bin", binary) in grpc_server.last_metadata(method)
        assert ("x-plain", "p") in grpc_server.last_metadata(method)
        assert await call.details() == ""
        trailing = await call.trailing_metadata()
        assert trailing["x-trailer-name"] == "value"
        assert trailing["x-trailer-blob-bin"] == binary
        assert call.done()
        assert not call.cancelled()
        assert not call.cancel()  # it has ended
        assert ended == [call]
        late: list[Any] = []
        call.add_done_callback(late.append)  # on an ended call: at once
        assert late == [call]
        untimed = start(channel, method)
        assert untimed.time_remaining() is None
        await outcome(untimed)
        await streams_freed(channel)


async def test_metadata_forms(grpc_server: GrpcTestServer) -> None:
    sent = rpc.Metadata(("x-echo-a", "1"), ("x-echo-a", "2"), ("x-echo-text-bin", "t\u00e9"))
    async with channel_to(grpc_server) as channel:
        call = channel.unary_unary(Rpc.UNARY)(b"m", metadata=sent)
        assert await call == b"m"
        initial = await call.initial_metadata()
    assert initial.get_all("x-echo-a") == ["1", "2"]
    assert initial["x-echo-text-bin"] == "t\u00e9".encode()  # a str -bin value goes as UTF-8
    seen = grpc_server.last_metadata(Rpc.UNARY)
    assert [value for key, value in seen if key == "x-echo-a"] == ["1", "2"]
    user_agent = dict(seen)["user-agent"]
    assert isinstance(user_agent, str)
    assert "h2pool-rpc/" in user_agent


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ((("grpc-timeout", "1S"),), "reserved"),
        ((("grpc-status", "0"),), "reserved"),
        ((("content-type", "text/plain"),), "reserved"),
        ((("te", "gzip"),), "reserved"),
        ((("connection", "close"),), "reserved"),
        (((":path", "/x"),), "characters"),
        ((("user-agent", "me"),), "user-agent"),
        ((("X-Upper", "v"),), "uppercase"),
        ((("bad key", "v"),), "characters"),
        ((("", "v"),), "empty"),
        ((("x-text", "caf\u00e9"),), "ASCII"),
        ((("x-text", "line\nbreak"),), "ASCII"),
        ((("x-text", b"bytes"),), "str"),
        ((("x-blob-bin", 5),), "bytes"),
    ],
)
async def test_invalid_metadata_refused_before_sending(
    grpc_server: GrpcTestServer, metadata: Md, error: str
) -> None:
    async with channel_to(grpc_server) as channel:
        for method in Rpc:
            # Refused when the call is made (h2pool.LocalProtocolError, or TypeError).
            with pytest.raises((h2pool.H2PoolError, TypeError)) as caught:
                start(channel, method, metadata)
            assert error in str(caught.value)
        assert await channel.unary_unary(Rpc.UNARY)(b"ok") == b"ok"  # the channel still works
    assert grpc_server.calls_started() == 1


# --- Deadlines ---------------------------------------------------------------------------------


class DeadlineServer(ThreadedGrpcServer):
    """A grpcio server whose ``/test.Deadline/Remaining`` answers ``context.time_remaining()``."""

    def _add_services(self, server: Any) -> None:
        def remaining(request: bytes, context: Any) -> bytes:
            left = context.time_remaining()
            return b"none" if left is None else repr(left).encode()

        handler = grpc.unary_unary_rpc_method_handler(remaining)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("test.Deadline", {"Remaining": handler})]
        )


async def test_grpc_timeout_reaches_the_server() -> None:
    with DeadlineServer() as server:
        async with channel_to(server) as channel:
            remaining = channel.unary_unary("/test.Deadline/Remaining")
            seconds = float(await remaining(b"", timeout=5.0))
            assert 3.0 < seconds <= 5.0
            seconds = float(await remaining(b"", timeout=3600 * 24))
            assert 3600 * 23 < seconds <= 3600 * 24
            # grpcio reports "no deadline" as a very long time.
            assert float(await remaining(b"")) > 3600 * 24 * 365


@pytest.mark.parametrize("method", list(Rpc))
@pytest.mark.parametrize("plan", ["x-sleep", "x-never"])
async def test_deadline_exceeded_on_time(
    grpc_server: GrpcTestServer, method: Rpc, plan: str
) -> None:
    timeout = 0.4
    metadata: Md = ((plan, "30" if plan == "x-sleep" else "1"),)
    async with channel_to(grpc_server) as channel:
        started = time.monotonic()
        call = start(channel, method, metadata, timeout=timeout)
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        elapsed = time.monotonic() - started
        assert caught.value.code() is rpc.StatusCode.DEADLINE_EXCEEDED
        assert await call.code() is rpc.StatusCode.DEADLINE_EXCEEDED
        assert timeout * 0.9 <= elapsed < timeout + LATENESS
        assert call.time_remaining() == 0.0
        assert not call.cancelled()
        await streams_freed(channel)
        # The server learns of it (the client's RST_STREAM CANCEL), not only its own clock.
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1, 10.0, method)


@pytest.mark.parametrize("method", list(Rpc))
async def test_deadline_exceeded_with_headers_received(
    grpc_server: GrpcTestServer, method: Rpc
) -> None:
    metadata: Md = (("x-never", "1"), ("x-headers-first", "1"), ("x-echo-a", "1"))
    async with channel_to(grpc_server) as channel:
        call = start(channel, method, metadata, timeout=0.5)
        assert (await call.initial_metadata())["x-echo-a"] == "1"
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        assert caught.value.code() is rpc.StatusCode.DEADLINE_EXCEEDED
        await streams_freed(channel)
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1, 10.0, method)


@pytest.mark.parametrize("method", list(Rpc))
@pytest.mark.parametrize("timeout", [0.0, -1.0])
async def test_deadline_already_passed(
    grpc_server: GrpcTestServer, method: Rpc, timeout: float
) -> None:
    async with channel_to(grpc_server) as channel:
        await channel.unary_unary(Rpc.UNARY)(b"warm")  # a ready connection, which is not used
        call = start(channel, method, timeout=timeout)
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        assert caught.value.code() is rpc.StatusCode.DEADLINE_EXCEEDED
        assert await call.code() is rpc.StatusCode.DEADLINE_EXCEEDED
    assert grpc_server.calls_started() == 1


async def test_service_config_timeout(grpc_server: GrpcTestServer) -> None:
    config = {"methodConfig": [{"name": [{"service": "test.Rpc"}], "timeout": "0.3s"}]}
    async with channel_to(grpc_server, service_config=config) as channel:
        call = start(channel, Rpc.UNARY, (("x-never", "1"),), timeout=30)
        remaining = call.time_remaining()
        assert remaining is not None
        assert remaining <= 0.3
        with pytest.raises(rpc.RpcError) as caught:
            await call
        assert caught.value.code() is rpc.StatusCode.DEADLINE_EXCEEDED


# --- Compression -------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [rpc.Compression.Gzip, rpc.Compression.Deflate])
async def test_channel_compression(compression: rpc.Compression) -> None:
    with GrpcTestServer(compression=grpc.Compression.Gzip) as server:
        async with channel_to(server, compression=compression) as channel:
            for method in Rpc:
                messages = await outcome(start(channel, method, message=BIG))
                assert messages == [BIG] * (3 if method is Rpc.SERVER_STREAM else 1)


async def test_call_compression_and_mixed_messages() -> None:
    with GrpcTestServer(compression=grpc.Compression.Gzip) as server:
        async with channel_to(server) as channel:
            upload = channel.stream_unary(Rpc.CLIENT_STREAM)
            both = await upload(iter([BIG, b"", BIG]), compression=rpc.Compression.Deflate)
            assert both == BIG * 2
            plain = await upload(iter([BIG]), compression=rpc.Compression.NoCompression)
            assert plain == BIG
            # The server's default (gzip), a per-call choice (deflate), uncompressed messages.
            for metadata in [(), (("x-compression", "deflate"),), (("x-compress", "0"),)]:
                stream = start(channel, Rpc.SERVER_STREAM, metadata, message=BIG)
                assert [message async for message in stream] == [BIG] * 3
                # Short messages: grpcio sends them uncompressed within a compressed call.
                short = start(channel, Rpc.SERVER_STREAM, metadata, message=b"s")
                assert [message async for message in short] == [b"s"] * 3


async def test_response_compression_without_channel_compression(
    grpc_server: GrpcTestServer,
) -> None:
    metadata: Md = (("x-compression", "gzip"),)
    async with channel_to(grpc_server) as channel:
        for method in Rpc:
            messages = await outcome(start(channel, method, metadata, message=BIG))
            assert messages == [BIG] * (3 if method is Rpc.SERVER_STREAM else 1)


# --- Message size limits -----------------------------------------------------------------------


@pytest.mark.parametrize("method", list(Rpc))
async def test_max_receive_message_length(grpc_server: GrpcTestServer, method: Rpc) -> None:
    options = [("grpc.max_receive_message_length", 100)]
    async with channel_to(grpc_server, options=options) as channel:
        assert await outcome(start(channel, method, (("x-count", "1"),), message=b"x" * 100))
        call = start(channel, method, (("x-count", "1"),), message=b"x" * 101)
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        assert caught.value.code() is rpc.StatusCode.RESOURCE_EXHAUSTED
        assert await call.code() is rpc.StatusCode.RESOURCE_EXHAUSTED
        await streams_freed(channel)


async def test_max_receive_counts_decompressed_bytes() -> None:
    options = [("grpc.max_receive_message_length", 1000)]
    with GrpcTestServer(compression=grpc.Compression.Gzip) as server:
        async with channel_to(server, options=options) as channel:
            with pytest.raises(rpc.RpcError) as caught:
                await channel.unary_unary(Rpc.UNARY)(BIG)  # ~100 bytes gzipped, 13 kB inflated
    assert caught.value.code() is rpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("method", list(Rpc))
async def test_max_send_message_length(grpc_server: GrpcTestServer, method: Rpc) -> None:
    options = [("grpc.max_send_message_length", 100)]
    async with channel_to(grpc_server, options=options) as channel:
        assert await outcome(start(channel, method, message=b"y" * 100))
        call = start(channel, method, message=b"y" * 101)
        with pytest.raises(rpc.RpcError) as caught:
            await outcome(call)
        assert caught.value.code() is rpc.StatusCode.RESOURCE_EXHAUSTED
        await streams_freed(channel)
    if method in (Rpc.UNARY, Rpc.SERVER_STREAM):
        assert grpc_server.calls_started() == 1  # the message was refused before sending


async def test_service_config_message_limits(grpc_server: GrpcTestServer) -> None:
    config = {
        "methodConfig": [
            {
                "name": [{"service": "test.Rpc", "method": "Unary"}],
                "maxRequestMessageBytes": 10,
                "maxResponseMessageBytes": 20,
            }
        ]
    }
    async with channel_to(grpc_server, service_config=config) as channel:
        unary = channel.unary_unary(Rpc.UNARY)
        assert await unary(b"z" * 10) == b"z" * 10
        with pytest.raises(rpc.RpcError) as caught:
            await unary(b"z" * 11)
        assert caught.value.code() is rpc.StatusCode.RESOURCE_EXHAUSTED
        # Other methods are not limited.
        assert await channel.stream_unary(Rpc.CLIENT_STREAM)(iter([b"z" * 30])) == b"z" * 30
    assert grpc_server.calls_started(Rpc.UNARY) == 1


async def test_server_refuses_a_large_request() -> None:
    with GrpcTestServer(options=[("grpc.max_receive_message_length", 10)]) as server:
        async with channel_to(server) as channel:
            for method in Rpc:
                with pytest.raises(rpc.RpcError) as caught:
                    await outcome(start(channel, method, message=b"w" * 11))
                assert caught.value.code() is rpc.StatusCode.RESOURCE_EXHAUSTED, method


# --- Many calls --------------------------------------------------------------------------------


async def test_thousand_concurrent_unary_calls(grpc_server: GrpcTestServer) -> None:
    async with channel_to(grpc_server) as channel:
        echo = channel.unary_unary(Rpc.UNARY)
        calls = [echo(b"%d" % index, timeout=25) for index in range(1000)]
        results = await asyncio.gather(*calls)
        assert results == [b"%d" % index for index in range(1000)]
        assert all([await call.code() is rpc.StatusCode.OK for call in calls])
        assert channel.pool.stats().active == 0
        # Seen once in a few runs: one stream still counted open by the core just after
        # the last call returned (not understood yet); it closes without any further call.
        await streams_freed(channel)
    assert grpc_server.calls_started(Rpc.UNARY) == 1000
