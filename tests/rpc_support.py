"""Helpers shared by the gRPC tests against ``test.Rpc`` (tests/peers).

``multicallable``, ``start`` and ``outcome`` take an ``h2pool.rpc`` channel or a ``grpc.aio``
one alike, so that a test can run the same call on either.
"""

from __future__ import annotations

from typing import Any

import grpc.aio

from h2pool import rpc
from tests.peers import Rpc
from tests.waiting import eventually

Md = tuple[tuple[str, str | bytes], ...]

STREAMING_RESPONSE = (Rpc.SERVER_STREAM, Rpc.BIDI)

KINDS = {
    Rpc.UNARY: "unary_unary",
    Rpc.SERVER_STREAM: "unary_stream",
    Rpc.CLIENT_STREAM: "stream_unary",
    Rpc.BIDI: "stream_stream",
}
"""The channel method that makes the multi-callable of each ``test.Rpc`` method."""

ONE_MESSAGE: Md = (("x-count", "1"),)
"""Metadata making a server stream answer one message, as the other kinds do."""


def multicallable(channel: Any, method: Rpc, **kwargs: Any) -> Any:
    """The multi-callable of ``method`` (raw bytes unless serializers are given)."""
    return getattr(channel, KINDS[method])(method, **kwargs)


def start(
    channel: Any,
    method: Rpc,
    metadata: Md = (),
    *,
    message: bytes = b"ping",
    **kwargs: Any,
) -> Any:
    """Start a call of ``method`` with one request message (an iterator for stream requests)."""
    request: Any = message if method in (Rpc.UNARY, Rpc.SERVER_STREAM) else iter([message])
    return multicallable(channel, method)(request, metadata=metadata, **kwargs)


STREAMING_CALLS = (
    rpc.UnaryStreamCall,
    rpc.StreamStreamCall,
    grpc.aio.UnaryStreamCall,
    grpc.aio.StreamStreamCall,
)


async def outcome(call: Any, method: Rpc | None = None) -> list[Any]:
    """Drive a call to its end: its response messages (raises the library's RpcError).

    Args:
        call: A call of either library.
        method: The call's method, where its type does not tell whether the response is a
            stream (an intercepted call is both awaitable and iterable).
    """
    streaming = (
        isinstance(call, STREAMING_CALLS) if method is None else method in STREAMING_RESPONSE
    )
    if streaming:
        return [message async for message in call]
    return [await call]


def open_streams(channel: rpc.Channel) -> int:
    """Streams open over every connection of the channel's pool."""
    return sum(endpoint.open_streams for endpoint in channel.pool.stats().endpoints)


async def streams_freed(channel: rpc.Channel) -> None:
    """Wait (1 s at most) until no stream of the channel is open.

    A call that ends early resets its stream from a task it spawns, a few loop iterations
    later: no wait for the server is involved, so the bound is short.
    """
    await eventually(lambda: open_streams(channel) == 0, timeout=1.0)


def start_one(channel: Any, method: Rpc, metadata: Md = (), **kwargs: Any) -> Any:
    """``start`` with ``ONE_MESSAGE``: every kind answers the one message ``b"ping"``."""
    return start(channel, method, (*ONE_MESSAGE, *metadata), **kwargs)
