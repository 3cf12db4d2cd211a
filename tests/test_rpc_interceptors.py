"""Client interceptors on h2pool.rpc channels: h2pool's classes and grpc.aio's own.

Interceptors subclassing ``grpc.aio.*ClientInterceptor`` are written as a grpc.aio user writes
them and run on both channels; the results must be the same. h2pool's own classes run on
h2pool channels.
"""

# grpc.aio has no type hints: its interceptor classes are Any to mypy.
# mypy: disable-error-code="misc"

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

import h2pool
import h2pool.rpc
from tests.peers import GeneratedModules, GreeterServer, GrpcTestServer, Rpc
from tests.rpc_support import outcome, start_one

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]

ERRORS = (grpc.RpcError, h2pool.rpc.RpcError)
EOFS = (grpc.aio.EOF, h2pool.rpc.EOF)


def _channel(library: str, target: str, interceptors: list[Any]) -> Any:
    if library == "grpc":
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    return h2pool.rpc.insecure_channel(target, interceptors=interceptors)


def _code_name(code: Any) -> str:
    return str(code.name)


# --- grpc.aio's interceptor classes, as their users write them ----------------------------------


class _Adding:
    """Adds ``x-echo-<name>`` to every call, the way grpc's async examples do."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def _details(self, details: Any) -> Any:
        # Tracing interceptors (OpenTelemetry, ddtrace) decode the method: grpc.aio gives bytes.
        self.log.append(f"{self.name}:{details.method.decode()}")
        metadata = list(details.metadata or ())
        metadata.append((f"x-echo-{self.name}", self.name))
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class AioUnaryUnaryAdder(_Adding, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class AioUnaryStreamAdder(_Adding, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class AioStreamUnaryAdder(_Adding, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class AioStreamStreamAdder(_Adding, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def adders(name: str, log: list[str]) -> list[Any]:
    """One grpc.aio interceptor per kind (grpc.aio files an interceptor under one kind only)."""
    kinds = (AioUnaryUnaryAdder, AioUnaryStreamAdder, AioStreamUnaryAdder, AioStreamStreamAdder)
    return [kind(name, log) for kind in kinds]


class AioMetadataMutator(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds to the call's metadata in place: grpc.aio always hands interceptors a Metadata."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details.metadata.add("x-echo-mutated", "yes")
        return await continuation(details, request)


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
@pytest.mark.parametrize("method", list(Rpc))
async def test_aio_interceptors_chain_in_order_on_each_kind(
    grpc_server: GrpcTestServer, library: str, method: Rpc
) -> None:
    log: list[str] = []
    interceptors = [*adders("first", log), *adders("second", log)]
    async with _channel(library, grpc_server.target, interceptors) as channel:
        call = start_one(channel, method, metadata=(("x-echo-caller", "c"),))
        assert await outcome(call, method) == [b"ping"]
        initial = await call.initial_metadata()
        assert _code_name(await call.code()) == "OK"
        assert call.done()
    assert log == [f"first:{method}", f"second:{method}"]
    # The server got the caller's metadata, then each interceptor's, in chain order.
    echoed = [(key, value) for key, value in initial if key.startswith("x-echo-")]
    assert echoed == [
        ("x-echo-caller", "c"),
        ("x-echo-first", "first"),
        ("x-echo-second", "second"),
    ]


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
async def test_aio_interceptor_mutating_metadata_in_place(
    grpc_server: GrpcTestServer, library: str
) -> None:
    async with _channel(library, grpc_server.target, [AioMetadataMutator()]) as channel:
        for metadata in (None, (("x-echo-caller", "c"),)):
            call = channel.unary_unary(Rpc.UNARY)(b"ping", metadata=metadata)
            assert await call == b"ping"
            assert (await call.initial_metadata())["x-echo-mutated"] == "yes"


# --- h2pool's own classes -----------------------------------------------------------------------


class Replacing(
    h2pool.rpc.UnaryUnaryClientInterceptor,
    h2pool.rpc.UnaryStreamClientInterceptor,
    h2pool.rpc.StreamUnaryClientInterceptor,
    h2pool.rpc.StreamStreamClientInterceptor,
):
    """Changes details with ``_replace``: metadata added, timeout set."""

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self.seen: list[h2pool.rpc.ClientCallDetails] = []

    def _details(self, details: h2pool.rpc.ClientCallDetails) -> h2pool.rpc.ClientCallDetails:
        self.seen.append(details)
        metadata = [*(details.metadata or ()), ("x-echo-ours", "1")]
        replaced = details._replace(metadata=metadata)
        if self.timeout is not None:
            replaced = replaced._replace(timeout=self.timeout)
        return replaced

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


@pytest.mark.parametrize("method", list(Rpc))
async def test_own_interceptor_replaces_metadata(grpc_server: GrpcTestServer, method: Rpc) -> None:
    interceptor = Replacing()
    async with h2pool.rpc.insecure_channel(grpc_server.target, interceptors=[interceptor]) as ch:
        call = start_one(ch, method, timeout=7, wait_for_ready=True)
        assert await outcome(call, method) == [b"ping"]
        assert (await call.initial_metadata())["x-echo-ours"] == "1"
        assert (await call.trailing_metadata())["x-trailer-ours"] == "1"
    (details,) = interceptor.seen
    assert isinstance(details, h2pool.rpc.ClientCallDetails)
    assert details._fields == ("method", "timeout", "metadata", "credentials", "wait_for_ready")
    assert details.timeout == 7
    assert details.wait_for_ready is True
    assert details.credentials is None


@pytest.mark.parametrize("method", list(Rpc))
async def test_own_interceptor_sets_the_timeout(grpc_server: GrpcTestServer, method: Rpc) -> None:
    interceptor = Replacing(timeout=0.3)
    async with h2pool.rpc.insecure_channel(grpc_server.target, interceptors=[interceptor]) as ch:
        call = start_one(ch, method, metadata=(("x-never", "1"),), timeout=30)
        with pytest.raises(h2pool.rpc.RpcError) as caught:
            await outcome(call, method)
        assert caught.value.code() is h2pool.rpc.StatusCode.DEADLINE_EXCEEDED
        assert await call.code() is h2pool.rpc.StatusCode.DEADLINE_EXCEEDED
        remaining = call.time_remaining()
        assert remaining is not None
        assert remaining <= 0.3
    await asyncio.to_thread(grpc_server.wait_for_cancelled, 1)


def test_interceptor_of_no_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="not a client interceptor"):
        h2pool.rpc.Channel("http://127.0.0.1:1", interceptors=[object()])


# --- What an interceptor may do with the call ---------------------------------------------------


class AioAnswering(grpc.aio.UnaryUnaryClientInterceptor):
    """Awaits the call and returns the response, not the call."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        response = await call
        return response + b"!"


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
async def test_interceptor_returning_the_response(
    grpc_server: GrpcTestServer, library: str
) -> None:
    async with _channel(library, grpc_server.target, [AioAnswering()]) as channel:
        call = start_one(channel, Rpc.UNARY)
        assert await call == b"ping!"
        assert _code_name(await call.code()) == "OK"
        assert await call.details() in ("", None)
        assert call.done()
        assert not call.cancelled()
        called = asyncio.Event()
        call.add_done_callback(lambda _: called.set())
        await asyncio.wait_for(called.wait(), 5)


class AioRetrying(grpc.aio.UnaryUnaryClientInterceptor):
    """Retries UNAVAILABLE; each attempt tells the server which attempt it is."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.made = 0

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        for attempt in range(self.attempts):
            self.made += 1
            # The test's server fails while x-status says so: the last attempt succeeds.
            status = "OK" if attempt == self.attempts - 1 else "UNAVAILABLE"
            metadata = [*(details.metadata or ()), ("x-status", status)]
            call = await continuation(details._replace(metadata=metadata), request)
            code = await call.code()
            if code != grpc.StatusCode.UNAVAILABLE and code != h2pool.rpc.StatusCode.UNAVAILABLE:
                return call
        return call


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
async def test_interceptor_that_retries(grpc_server: GrpcTestServer, library: str) -> None:
    interceptor = AioRetrying(3)
    async with _channel(library, grpc_server.target, [interceptor]) as channel:
        call = start_one(channel, Rpc.UNARY)
        assert await call == b"ping"
        assert _code_name(await call.code()) == "OK"
    assert interceptor.made == 3
    assert grpc_server.calls_started(Rpc.UNARY) == 3


class Broken(Exception):
    pass


class AioRaisingUnary(grpc.aio.UnaryUnaryClientInterceptor):
    """Raises before making the call."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        raise Broken("no")


class AioRaisingStream(grpc.aio.UnaryStreamClientInterceptor):
    """Raises before making the call."""

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        raise Broken("no")


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
@pytest.mark.parametrize("method", [Rpc.UNARY, Rpc.SERVER_STREAM])
async def test_interceptor_that_raises(
    grpc_server: GrpcTestServer, library: str, method: Rpc
) -> None:
    interceptors = [AioRaisingUnary(), AioRaisingStream()]
    async with _channel(library, grpc_server.target, interceptors) as channel:
        call = start_one(channel, method)
        with pytest.raises(Broken):
            await outcome(call, method)
        with pytest.raises(Broken):  # as grpc.aio: the interceptor's exception, again
            await call.code()
        assert call.done()
    assert grpc_server.calls_started() == 0


class AioRaisingRpcError(grpc.aio.UnaryUnaryClientInterceptor):
    """Lets the call's error through (``await call`` inside the interceptor raises it)."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        return await call


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
async def test_interceptor_awaiting_a_failed_call(
    grpc_server: GrpcTestServer, library: str
) -> None:
    metadata = (("x-status", "NOT_FOUND"), ("x-details", "gone"), ("x-echo-k", "v"))
    async with _channel(library, grpc_server.target, [AioRaisingRpcError()]) as channel:
        call = start_one(channel, Rpc.UNARY, metadata=metadata)
        with pytest.raises(ERRORS) as caught:
            await call
        error: Any = caught.value
        assert _code_name(error.code()) == "NOT_FOUND"
        assert error.details() == "gone"
        assert _code_name(await call.code()) == "NOT_FOUND"
        assert await call.details() == "gone"
        assert (await call.trailing_metadata())["x-trailer-k"] == "v"
        assert call.done()


# --- The intercepted call's methods --------------------------------------------------------------


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
async def test_intercepted_bidi_reads_writes_and_metadata(
    grpc_server: GrpcTestServer, library: str
) -> None:
    async with _channel(library, grpc_server.target, adders("a", [])) as channel:
        call = channel.stream_stream(Rpc.BIDI)(metadata=(("x-headers-first", "1"),))
        assert (await call.initial_metadata())["x-echo-a"] == "a"
        for message in (b"one", b"two"):
            await call.write(message)
            assert await call.read() == message
        await call.done_writing()
        assert await call.read() in EOFS
        assert _code_name(await call.code()) == "OK"
        assert (await call.trailing_metadata())["x-trailer-a"] == "a"
        assert call.done()
        assert not call.cancelled()


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
async def test_intercepted_client_stream_writes(grpc_server: GrpcTestServer, library: str) -> None:
    async with _channel(library, grpc_server.target, adders("a", [])) as channel:
        call = channel.stream_unary(Rpc.CLIENT_STREAM)()
        for message in (b"one", b"two"):
            await call.write(message)
        await call.done_writing()
        assert await call == b"onetwo"
        assert _code_name(await call.code()) == "OK"


@pytest.mark.parametrize("library", ["grpc", "h2pool"])
@pytest.mark.parametrize("method", list(Rpc))
async def test_intercepted_call_cancelled(
    grpc_server: GrpcTestServer, library: str, method: Rpc
) -> None:
    async with _channel(library, grpc_server.target, adders("a", [])) as channel:
        call = start_one(channel, method, metadata=(("x-never", "1"), ("x-headers-first", "1")))
        await asyncio.to_thread(grpc_server.wait_for_calls, method, 1)
        ended = asyncio.Event()
        call.add_done_callback(lambda _: ended.set())
        assert not call.done()
        assert call.cancel()
        await asyncio.wait_for(ended.wait(), 5)
        assert call.cancelled()
        assert call.done()
        assert _code_name(await call.code()) == "CANCELLED"
        with pytest.raises((asyncio.CancelledError, *ERRORS)):
            await outcome(call, method)
        assert not call.cancel()  # already ended
    if library == "h2pool":  # grpc.aio's RST_STREAM sometimes misses a stream request's end
        await asyncio.to_thread(grpc_server.wait_for_cancelled, 1)


async def test_intercepted_call_cancelled_while_interceptors_run(
    grpc_server: GrpcTestServer,
) -> None:
    started = asyncio.Event()

    class Slow(h2pool.rpc.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            started.set()
            await asyncio.Event().wait()  # until cancelled

    async with h2pool.rpc.insecure_channel(grpc_server.target, interceptors=[Slow()]) as channel:
        call = start_one(channel, Rpc.UNARY)
        ended = asyncio.Event()
        call.add_done_callback(lambda _: ended.set())
        await started.wait()
        assert call.cancel()
        await asyncio.wait_for(ended.wait(), 5)
        assert call.cancelled()
        assert call.done()
        assert await call.code() is h2pool.rpc.StatusCode.CANCELLED
        with pytest.raises(asyncio.CancelledError):
            await call
    assert grpc_server.calls_started() == 0


async def test_interceptor_returning_an_iterator_for_a_stream(grpc_server: GrpcTestServer) -> None:
    class Doubling(h2pool.rpc.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(
            self, continuation: Any, details: Any, request: Any
        ) -> Any:
            call = await continuation(details, request)

            async def doubled() -> AsyncIterator[bytes]:
                async for message in call:
                    yield message * 2

            return doubled()

    async with h2pool.rpc.insecure_channel(grpc_server.target, interceptors=[Doubling()]) as ch:
        call = start_one(ch, Rpc.SERVER_STREAM, metadata=(("x-count", "2"),))
        assert await call.read() == b"pingping"
        assert [message async for message in call] == [b"pingping"]


async def test_generated_stubs_through_interceptors(
    greeter_server: GreeterServer, greeter_modules: GeneratedModules
) -> None:
    log: list[str] = []
    pb2, pb2_grpc = greeter_modules.pb2, greeter_modules.pb2_grpc
    channel = h2pool.rpc.insecure_channel(
        greeter_server.target, interceptors=[*adders("gen", log), Replacing()]
    )
    async with channel:
        stub = pb2_grpc.GreeterStub(channel)
        assert (await stub.SayHello(pb2.HelloRequest(name="A"))).message == "Hello, A!"
        replies = stub.SayHelloStream(pb2.HelloRequest(name="B", count=2))
        assert [reply.message async for reply in replies] == ["Hello, B #0!", "Hello, B #1!"]
        collected = await stub.CollectHellos(iter([pb2.HelloRequest(name="C")]))
        assert collected.message == "Hello, C!"
        chat = stub.Chat(iter([pb2.HelloRequest(name="D")]))
        assert [reply.message async for reply in chat] == ["Hello, D!"]
    assert log == [
        "gen:/demo.Greeter/SayHello",
        "gen:/demo.Greeter/SayHelloStream",
        "gen:/demo.Greeter/CollectHellos",
        "gen:/demo.Greeter/Chat",
    ]


def test_h2pool_error_root() -> None:
    assert issubclass(h2pool.rpc.RpcError, h2pool.H2PoolError)
