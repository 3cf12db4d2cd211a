"""Helpers shared by the ``h2pool.rpc`` protocol tests against ``test.Rpc`` (tests/peers)."""

from __future__ import annotations

from typing import Any

from h2pool import rpc
from tests.peers import Rpc
from tests.waiting import eventually

Md = tuple[tuple[str, str | bytes], ...]

STREAMING_RESPONSE = (Rpc.SERVER_STREAM, Rpc.BIDI)


def multicallable(channel: rpc.Channel, method: Rpc, **kwargs: Any) -> Any:
    """The multi-callable of ``method`` (raw bytes unless serializers are given)."""
    kind = {
        Rpc.UNARY: channel.unary_unary,
        Rpc.SERVER_STREAM: channel.unary_stream,
        Rpc.CLIENT_STREAM: channel.stream_unary,
        Rpc.BIDI: channel.stream_stream,
    }[method]
    return kind(method, **kwargs)


def start(
    channel: rpc.Channel,
    method: Rpc,
    metadata: Md = (),
    *,
    message: bytes = b"ping",
    **kwargs: Any,
) -> Any:
    """Start a call of ``method`` with one request message (an iterator for stream requests)."""
    request: Any = message if method in (Rpc.UNARY, Rpc.SERVER_STREAM) else iter([message])
    return multicallable(channel, method)(request, metadata=metadata, **kwargs)


async def outcome(call: Any) -> list[Any]:
    """Drive a call to its end: its response messages (raises ``rpc.RpcError``)."""
    if isinstance(call, rpc.UnaryStreamCall | rpc.StreamStreamCall):
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
