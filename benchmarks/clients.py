"""The GET clients compared, each opened as ``async with client(origins, concurrency) as get``.

Every client is set up (connections open) before it yields, so no run times a handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import h2pool

from .load import Get
from .plain import CallbackGets, PlainH2, connect, get_headers
from .sizes import Budget

__all__ = [
    "AIOHTTP",
    "CALLBACK",
    "CLIENTS",
    "CORE",
    "FUTURE",
    "HTTPX",
    "POOL",
    "Origins",
    "run_callback",
]

CALLBACK = "plain h2, callback"
FUTURE = "plain h2, future per request"
CORE = "h2pool core H2Protocol"
POOL = "h2pool Pool.request"
HTTPX = "httpx http2"
AIOHTTP = "aiohttp HTTP/1.1 (nginx)"


@dataclass(frozen=True, slots=True)
class Origins:
    """Where the clients send their GETs.

    Attributes:
        h2c_port: nghttpd, serving the docroot over h2c.
        http1_port: nginx, serving the same docroot over HTTP/1.1 (for aiohttp).
        path: The small file.
    """

    h2c_port: int
    http1_port: int
    path: str = "/small"

    @property
    def h2c_url(self) -> str:
        """The small file's URL on nghttpd."""
        return f"http://127.0.0.1:{self.h2c_port}{self.path}"


ClientFactory = Callable[[Origins, int], AbstractAsyncContextManager[Get]]
"""Opens a client for a concurrency level and yields its ``get``."""


async def run_callback(
    origins: Origins, expected: bytes, concurrency: int, budget: Budget
) -> float:
    """Requests per second of the callback client (:class:`CallbackGets`) on one connection.

    Raises:
        AssertionError: The bodies received do not add up to ``expected`` per request.
    """
    client = await connect(CallbackGets, origins.h2c_port)
    try:
        headers = get_headers(origins.h2c_port, origins.path)
        start = asyncio.get_running_loop().time()
        completed = await client.run(headers, budget.requests, concurrency, budget.seconds)
        elapsed = asyncio.get_running_loop().time() - start
    finally:
        client.close()
    if client.body_bytes != completed * len(expected):
        raise AssertionError(f"{client.body_bytes} body bytes for {completed} responses")
    return completed / elapsed


@contextlib.asynccontextmanager
async def future_client(origins: Origins, concurrency: int) -> AsyncIterator[Get]:
    """The plain h2 client awaiting one future per request, on one connection."""
    client = await connect(PlainH2, origins.h2c_port)
    headers = get_headers(origins.h2c_port, origins.path)
    # Requests beyond the server's MAX_CONCURRENT_STREAMS wait here, as in any client.
    slots = asyncio.Semaphore(client.conn.remote_settings.max_concurrent_streams)

    async def get() -> bytes:
        async with slots:
            return await client.request(headers)

    try:
        yield get
    finally:
        client.close()


@contextlib.asynccontextmanager
async def core_client(origins: Origins, concurrency: int) -> AsyncIterator[Get]:
    """h2pool's core: ``start_request``, ``recv_response``, ``read_stream`` on one connection."""
    client = await h2pool.open_connection("127.0.0.1", origins.h2c_port)
    request = {":method": "GET", ":path": origins.path}

    async def get() -> bytes:
        stream_id = await client.start_request(request, end_stream=True)
        await client.recv_response(stream_id)
        return await client.read_stream(stream_id, -1)

    try:
        await client.wait_functional()
        yield get
    finally:
        client.close_connection()


@contextlib.asynccontextmanager
async def pool_client(origins: Origins, concurrency: int) -> AsyncIterator[Get]:
    """h2pool's ``Pool.request`` with its defaults, one endpoint."""
    async with h2pool.Pool(f"http://127.0.0.1:{origins.h2c_port}") as pool:

        async def get() -> bytes:
            return (await pool.request("GET", origins.path)).content

        await get()  # connected
        yield get


@contextlib.asynccontextmanager
async def httpx_client(origins: Origins, concurrency: int) -> AsyncIterator[Get]:
    """httpx ``AsyncClient(http1=False, http2=True)`` with its default limits."""
    import httpx

    async with httpx.AsyncClient(http1=False, http2=True) as client:
        url = origins.h2c_url

        async def get() -> bytes:
            return (await client.get(url)).content

        await get()
        yield get


@contextlib.asynccontextmanager
async def aiohttp_client(origins: Origins, concurrency: int) -> AsyncIterator[Get]:
    """aiohttp over HTTP/1.1 to nginx, with a connection limit equal to the concurrency.

    aiohttp's default limit is 100 connections; with a limit equal to the concurrency each
    concurrent request has its own keep-alive connection, as an HTTP/1.1 client needs.
    """
    import aiohttp

    url = f"http://127.0.0.1:{origins.http1_port}{origins.path}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get() -> bytes:
            async with session.get(url) as response:
                return await response.read()

        await get()
        yield get


CLIENTS: dict[str, ClientFactory] = {
    FUTURE: future_client,
    CORE: core_client,
    POOL: pool_client,
    HTTPX: httpx_client,
    AIOHTTP: aiohttp_client,
}
"""The coroutine-per-request clients, by name (the callback client runs on its own)."""
