"""Calls a server never processed are retried transparently, whatever the method and call kind.

GOAWAY with a last_stream_id below the call's stream, REFUSED_STREAM, and a connection that
fails before the request left: the pool sends the call again, streaming requests included
(their messages are kept in the call's replay buffer, the Outbox, until the call is committed).
A call whose replay buffer overflowed is not sent again: it fails with UNAVAILABLE saying
whether the server may have processed it. grpcio cannot be made to refuse a stream on cue, so
h2pool's own server plays the refusing replica here.
"""

from __future__ import annotations

import asyncio
import enum
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from h2.errors import ErrorCodes

import h2pool
from h2pool import rpc
from h2pool._rpc.outbox import REPLAY_LIMIT
from tests.faultproxy import FaultProxy
from tests.peers import frame_message
from tests.servers import Server
from tests.waiting import eventually

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]


class Fault(enum.Enum):
    """What the server does to the next stream, once it has read its first request bytes."""

    GOAWAY = "goaway"  #: GOAWAY(NO_ERROR) with a last_stream_id below the stream
    REFUSE = "refuse"  #: RST_STREAM(REFUSED_STREAM)
    #: What grpcio's stop(grace) does to a call that reaches it once stopping: GOAWAY
    #: (2^31-1), then a Trailers-Only CANCELLED and RST_STREAM(NO_ERROR), the call not run.
    STOP = "stop"
    CANCEL = "cancel"  #: the same answer without GOAWAY: a call the server cancelled


NEVER_PROCESSED = [Fault.GOAWAY, Fault.REFUSE, Fault.STOP]
CANCELLED = [
    (":status", "200"),
    ("content-type", "application/grpc"),
    ("grpc-status", "1"),
    ("grpc-message", "CANCELLED"),
]


def unframe(body: bytes) -> list[bytes]:
    """The messages of a gRPC body."""
    messages = []
    while body:
        _, length = struct.unpack(">BI", body[:5])
        messages.append(body[5 : 5 + length])
        body = body[5 + length :]
    return messages


@dataclass
class GrpcResponder:
    """A gRPC server on h2pool's own server that refuses streams on cue.

    Every method answers with the messages it received: a unary response carries their
    concatenation, a streaming response one message per request message. ``faults`` are
    applied to the next streams, one each, after the stream's first request bytes arrived (so
    a streaming request has started). ``bodies`` records what each answered stream received.
    """

    faults: deque[Fault] = field(default_factory=deque)
    bodies: list[bytes] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    faulted: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, proto: h2pool.H2Protocol, stream_id: int, headers: object) -> None:
        path = dict(headers)[":path"]  # type: ignore[call-overload]
        if self.faults:
            fault = self.faults.popleft()
            await proto.read_stream(stream_id)  # the first bytes: the request has started
            self.refused.append(stream_id)
            if fault is Fault.GOAWAY:
                proto.send_goaway(last_stream_id=stream_id - 2)
            elif fault is Fault.REFUSE:
                proto.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            else:
                if fault is Fault.STOP:
                    proto.send_goaway(last_stream_id=2**31 - 1)
                await proto.start_response(stream_id, CANCELLED, end_stream=True)
                proto.reset_stream(stream_id, ErrorCodes.NO_ERROR)
            self.faulted.set()
            return
        body = await proto.read_stream(stream_id, -1)
        self.bodies.append(body)
        messages = unframe(body)
        if path in ("/t.S/ServerStream", "/t.S/Bidi"):
            reply = b"".join(frame_message(message) for message in messages)
        else:
            reply = frame_message(b"".join(messages))
        await proto.start_response(
            stream_id, [(":status", "200"), ("content-type", "application/grpc")]
        )
        await proto.send_data(stream_id, reply)
        await proto.send_trailers(stream_id, [("grpc-status", "0")])


@pytest.fixture
async def responder() -> AsyncIterator[tuple[GrpcResponder, Server]]:
    state = GrpcResponder()
    async with Server(state.handle) as server:
        yield state, server


def channel_to(server: Server, **kwargs: object) -> rpc.Channel:
    return rpc.Channel(
        "http://grpc.test",
        endpoints=[f"127.0.0.1:{server.port}"],
        **kwargs,  # type: ignore[arg-type]
    )


MESSAGES = [b"first", b"second", b"third"]


async def run_kind(channel: rpc.Channel, kind: str, faulted: asyncio.Event) -> list[bytes]:
    """One call of ``kind`` whose request stream (if any) has started before the fault.

    The first message is written, then the server refuses the stream on reading it; the rest
    are written after, while the call is retried. Returns the response messages.
    """
    if kind == "unary_unary":
        return [await channel.unary_unary("/t.S/Unary")(b"".join(MESSAGES), timeout=5)]
    if kind == "unary_stream":
        call = channel.unary_stream("/t.S/ServerStream")(b"".join(MESSAGES), timeout=5)
        return [message async for message in call]
    method = "/t.S/ClientStream" if kind == "stream_unary" else "/t.S/Bidi"
    multicallable = getattr(channel, kind)(method)
    call = multicallable(timeout=5)
    await call.write(MESSAGES[0])
    await faulted.wait()  # refused after its first message, before the others were written
    for message in MESSAGES[1:]:
        await call.write(message)
    await call.done_writing()
    if kind == "stream_unary":
        return [await call]
    return [message async for message in call]


KINDS = ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]


def expected(kind: str) -> list[bytes]:
    if kind in ("unary_stream", "unary_unary", "stream_unary"):
        return [b"".join(MESSAGES)]
    return MESSAGES


@pytest.mark.parametrize("fault", NEVER_PROCESSED)
@pytest.mark.parametrize("kind", KINDS)
async def test_refused_call_is_sent_again(
    responder: tuple[GrpcResponder, Server], kind: str, fault: Fault
) -> None:
    state, server = responder
    state.faults.append(fault)
    async with channel_to(server) as channel:
        replies = await run_kind(channel, kind, state.faulted)
    assert replies == expected(kind)
    assert len(state.refused) == 1  # the first attempt was refused...
    # ...and the second one carried the whole request, from the first message.
    (body,) = state.bodies
    request = [b"".join(MESSAGES)] if kind in ("unary_unary", "unary_stream") else MESSAGES
    assert unframe(body) == request


@pytest.mark.parametrize("kind", KINDS)
async def test_a_call_the_server_cancelled_is_not_sent_again(
    responder: tuple[GrpcResponder, Server], kind: str
) -> None:
    # Trailers-Only CANCELLED on a connection that is not draining: the server may have run
    # the call (its application cancelled it), so it is the caller's status.
    state, server = responder
    state.faults.append(Fault.CANCEL)
    async with channel_to(server) as channel:
        with pytest.raises(rpc.RpcError) as caught:
            await run_kind(channel, kind, state.faulted)
    assert caught.value.code() is rpc.StatusCode.CANCELLED
    assert not caught.value.never_processed
    assert state.bodies == []
    assert len(state.refused) == 1


async def test_a_stopping_server_cancelling_the_call_again_ends_it(
    responder: tuple[GrpcResponder, Server],
) -> None:
    # One transparent retry (as for a refused stream, gRFC A6): a second stopping replica
    # answering the same way ends the call: UNAVAILABLE (this side cancelled nothing), never
    # processed.
    state, server = responder
    state.faults.extend([Fault.STOP, Fault.STOP])
    async with channel_to(server) as channel:
        with pytest.raises(rpc.RpcError) as caught:
            await channel.unary_unary("/t.S/Unary")(b"x", timeout=5)
    assert caught.value.code() is rpc.StatusCode.UNAVAILABLE
    assert "stopping" in caught.value.details()
    assert caught.value.never_processed
    assert len(state.refused) == 2


@pytest.mark.parametrize("fault", NEVER_PROCESSED)
@pytest.mark.parametrize("kind", ["stream_unary", "stream_stream"])
async def test_call_past_its_replay_buffer_is_not_sent_again(
    responder: tuple[GrpcResponder, Server], kind: str, fault: Fault
) -> None:
    state, server = responder
    state.faults.append(fault)
    big = b"x" * (REPLAY_LIMIT + 1)  # more than the call keeps for a replay
    async with channel_to(server) as channel:
        call = getattr(channel, kind)("/t.S/Bidi")(timeout=5)

        async def send_and_read() -> None:
            await call.write(big)
            await state.faulted.wait()
            await call.done_writing()
            await (call.read() if kind == "stream_stream" else call)

        with pytest.raises(rpc.RpcError) as caught:
            await send_and_read()
        assert await call.code() is rpc.StatusCode.UNAVAILABLE
    error = caught.value
    assert error.code() is rpc.StatusCode.UNAVAILABLE
    assert error.never_processed  # refused: the server says it never ran it
    assert "(never processed)" in str(error)
    assert state.bodies == []  # not sent again
    assert len(state.refused) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_call_routed_to_a_connection_found_dead_goes_elsewhere(kind: str) -> None:
    # Two replicas; one goes silent (blackholed) while the pool's connections are idle, so
    # they count as stale: a call routed there waits for the PING before sending anything,
    # the connection is declared dead, and the call goes to the other replica.
    silent, other = GrpcResponder(), GrpcResponder()
    functional_timeout = 0.2
    async with (
        Server(silent.handle) as silent_server,
        Server(other.handle) as other_server,
        FaultProxy(silent_server.port) as proxy,
        rpc.Channel(
            "http://grpc.test",
            endpoints=[proxy.address, f"127.0.0.1:{other_server.port}"],
            functional_timeout=functional_timeout,
        ) as channel,
    ):
        await channel.channel_ready()
        await eventually(lambda: all(ep.connections for ep in channel.pool.stats().endpoints))
        await asyncio.sleep(functional_timeout * 1.5)  # idle: both connections stale
        proxy.blackhole()
        never = asyncio.Event()  # no fault planned: the streams write all at once
        never.set()
        replies = await asyncio.gather(*(run_kind(channel, kind, never) for _ in range(4)))
        stats = {ep.address: ep for ep in channel.pool.stats().endpoints}
    assert replies == [expected(kind)] * 4
    assert silent.bodies == []
    assert len(other.bodies) == 4
    # The silent replica's connection was pinged by a call routed to it, and found dead.
    assert "dead" in (stats[proxy.address].last_error or ""), stats[proxy.address]
