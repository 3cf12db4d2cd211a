"""One gRPC client's unary calls per second, in a process of its own (``benchmarks.rpc``).

``python -m benchmarks.rpc_client NAME PORT --concurrency N --requests N --seconds S`` opens
client ``NAME`` to the gRPC responder on 127.0.0.1:``PORT``, makes one call (connected), then
runs closed loop and prints its figures (see :func:`measure`) as JSON. A client that cannot run (not
installed, or failing) exits with status 1 and says why in one line, the last of stderr.

Each client runs in a fresh process so that none inherits another's threads (grpc.aio's C
core keeps its own), imports or garbage; the clients are written as their users write them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import h2pool

from .load import Get, closed_loop, run_on
from .sizes import Budget

__all__ = [
    "CLIENTS",
    "GRPCLIB",
    "GRPC_AIO",
    "METHOD",
    "POOL",
    "REPLY",
    "REQUEST",
    "RPC",
    "frame",
]

RPC = "h2pool.rpc"
GRPCLIB = "grpclib"
GRPC_AIO = "grpc.aio (C core)"
POOL = "h2pool Pool.request, framed bytes"

METHOD = "/bench.Svc/Echo.grpc"
"""The method called: nghttpd serves the file of that path (``.grpc`` maps to application/grpc)."""

REQUEST = b"ping-payload"
"""The request message (12 bytes, as the small GETs' body)."""

REPLY = b"pong-payload"
"""The response message the responder serves."""


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length, the bytes."""
    return struct.pack(">BI", 0, len(message)) + message


# Seconds a run may overrun its budget (set-up, calls in flight finishing) before it fails.
_GRACE = 10.0

_GRPC_HEADERS = {"content-type": "application/grpc", "te": "trailers"}


@contextlib.asynccontextmanager
async def rpc_client(port: int) -> AsyncIterator[Get]:
    """h2pool.rpc as a grpc.aio user writes it: a channel, a multi-callable, bytes messages."""
    try:
        import h2pool.rpc
    except ImportError as exc:
        raise RuntimeError(f"h2pool.rpc not available: {exc}") from exc
    # An editable install of another checkout supplies the submodules this one lacks: its
    # rpc on this checkout's pool would measure neither.
    found = Path(h2pool.rpc.__file__)
    if not found.is_relative_to(Path(h2pool.__file__).parent):
        raise RuntimeError(f"h2pool.rpc not available: only {found} has it")

    async with h2pool.rpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary(METHOD)

        async def call() -> bytes:
            reply: bytes = await echo(REQUEST)
            return reply

        await call()  # connected
        yield call


@contextlib.asynccontextmanager
async def grpclib_client(port: int) -> AsyncIterator[Get]:
    """grpclib's channel (one connection) with a codec that passes bytes through."""
    from grpclib.client import Channel, UnaryUnaryMethod
    from grpclib.encoding.base import CodecBase

    class RawCodec(CodecBase):
        """Messages are bytes: no serialization (grpclib insists on a codec)."""

        __content_subtype__ = "proto"

        def encode(self, message: Any, message_type: Any) -> bytes:
            return bytes(message)

        def decode(self, data: bytes, message_type: Any) -> Any:
            return data

    channel = Channel("127.0.0.1", port, codec=RawCodec())
    try:
        echo = UnaryUnaryMethod[bytes, bytes](channel, METHOD, bytes, bytes)

        async def call() -> bytes:
            return await echo(REQUEST)

        await call()
        yield call
    finally:
        channel.close()


@contextlib.asynccontextmanager
async def grpc_aio_client(port: int) -> AsyncIterator[Get]:
    """grpcio's asyncio API on its C core, default options, no serializers."""
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary(METHOD)

        async def call() -> bytes:
            reply: bytes = await echo(REQUEST)
            return reply

        await call()
        yield call


@contextlib.asynccontextmanager
async def pool_client(port: int) -> AsyncIterator[Get]:
    """The pool posting the framed message itself: the bound for an rpc layer on the pool.

    It returns the response body, frame included, and reads nothing else of the response.
    """
    body = frame(REQUEST)
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:

        async def call() -> bytes:
            response = await pool.request("POST", METHOD, headers=_GRPC_HEADERS, content=body)
            return response.content

        await call()
        yield call


CLIENTS: dict[str, Callable[[int], AbstractAsyncContextManager[Get]]] = {
    RPC: rpc_client,
    GRPCLIB: grpclib_client,
    GRPC_AIO: grpc_aio_client,
    POOL: pool_client,
}
"""The clients, by name, in table order."""


def expected_reply(name: str) -> bytes:
    """What each call of client ``name`` must return: the message, or its frame for the pool."""
    return frame(REPLY) if name == POOL else REPLY


async def measure(name: str, port: int, concurrency: int, budget: Budget) -> dict[str, float]:
    """Calls per second of client ``name``, ``concurrency`` calls in flight, within ``budget``.

    Also the CPU time the process used meanwhile, all its threads counted (grpc.aio's C core
    works in threads of its own): in cores busy, and per call.
    """
    async with asyncio.timeout(budget.seconds + _GRACE), CLIENTS[name](port) as call:
        cpu, wall = time.process_time(), time.perf_counter()
        rate = await closed_loop(call, expected_reply(name), concurrency, budget)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"calls/s": rate, "CPU cores": cpu / wall, "CPU µs/call": cpu / wall / rate * 1e6}


def main() -> None:
    """Parse the command line, measure, print the figure (or why there is none)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rpc_client")
    parser.add_argument("name", choices=list(CLIENTS))
    parser.add_argument("port", type=int)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    budget = Budget(requests=args.requests, seconds=args.seconds)
    try:
        figures = run_on("asyncio", measure(args.name, args.port, args.concurrency, budget))
    except Exception as exc:
        # One line, the reason the parent shows (grpc.aio's errors span several).
        sys.exit(" ".join(f"{type(exc).__name__}: {exc or 'no message'}".split()))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
