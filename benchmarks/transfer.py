"""Benchmarks 3 and 4: one large body at a time, down from nghttpd and up to h2pool's server.

Each client moves the same bytes, one body after the other on one connection, after its
connection is open; the figure is MiB/s over all of them, best of the size's rounds.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import h2pool

from .load import run_on
from .plain import PlainH2, connect, get_headers
from .results import Results, Table
from .sizes import Size

__all__ = ["WINDOW", "run_download", "run_upload"]

MIB = 1024 * 1024

WINDOW = 16 * MIB
"""Receive window of each stream and of the connection, for both downloading clients."""

PLAIN = "plain h2, one connection"
POOL = "h2pool Pool.request"

Transfer = Callable[[int], Awaitable[int]]
"""Moves body number ``i`` and returns its size."""

# Seconds allowed per MiB moved before a run is declared stuck (about 1 MiB/s).
_SECONDS_PER_MIB = 1.0


async def _timed(transfer: Transfer, count: int, total_mib: float) -> float:
    """MiB/s of ``count`` transfers one after the other, bounded in time."""
    moved = 0
    async with asyncio.timeout(10 + total_mib * _SECONDS_PER_MIB):
        start = time.perf_counter()
        for index in range(count):
            moved += await transfer(index)
        elapsed = time.perf_counter() - start
    return moved / MIB / elapsed


async def _plain_download(port: int, count: int, size: int) -> float:
    client = await connect(lambda: PlainH2(window=WINDOW), port)
    await client.request(get_headers(port, "/small"))  # warmed up, as the pool is
    headers = get_headers(port, "/big")

    async def transfer(_: int) -> int:
        body = await client.request(headers)
        if len(body) != size:
            raise AssertionError(f"downloaded {len(body)} bytes of {size}")
        return len(body)

    try:
        return await _timed(transfer, count, count * size / MIB)
    finally:
        client.close()


async def _pool_download(port: int, count: int, size: int) -> float:
    config = h2pool.H2Config(stream_window=WINDOW, connection_window=WINDOW)
    async with h2pool.Pool(f"http://127.0.0.1:{port}", config=config) as pool:
        await pool.request("GET", "/small")  # connected

        async def transfer(_: int) -> int:
            body = (await pool.request("GET", "/big")).content
            if len(body) != size:
                raise AssertionError(f"downloaded {len(body)} bytes of {size}")
            return len(body)

        return await _timed(transfer, count, count * size / MIB)


async def _plain_upload(port: int, payload: bytes, count: int) -> float:
    client = await connect(PlainH2, port)
    await client.request(get_headers(port, "/"))  # warmed up, as the pool is
    headers = [
        *get_headers(port, "/upload", "POST"),
        (b"content-length", str(len(payload)).encode()),
    ]

    async def transfer(_: int) -> int:
        await client.request(headers, payload)
        return len(payload)

    try:
        return await _timed(transfer, count, count * len(payload) / MIB)
    finally:
        client.close()


async def _pool_upload(port: int, payload: bytes, count: int) -> float:
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:
        await pool.request("GET", "/")  # connected

        async def transfer(_: int) -> int:
            response = await pool.request("POST", "/upload", content=payload)
            if response.status_code != 200:
                raise AssertionError(f"upload answered {response.status_code}")
            return len(payload)

        return await _timed(transfer, count, count * len(payload) / MIB)


def _compare(table: Table, rounds: int, runs: dict[str, Callable[[], float]]) -> None:
    """Fill ``table`` with the best MiB/s of each run over ``rounds``, alternating them."""
    best: dict[str, float] = {}
    errors: dict[str, Exception] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            if name in errors:
                continue
            try:
                best[name] = max(run(), best.get(name, 0.0))
            except Exception as exc:
                errors[name] = exc
    for name in runs:
        if name in errors:
            table.fail(name, errors[name])
        else:
            table.add(name, **{"MiB/s": best[name]})
    table.compute_ratios()


def run_download(port: int, size: Size, results: Results) -> None:
    """Benchmark 3: ``/big`` from nghttpd, by the plain client and by the pool."""
    count, file_bytes = size.download_files, size.download_mib * MIB
    table = Table(
        key="download",
        title=f"Download: {count} x {size.download_mib} MiB from nghttpd h2c, one at a time",
        columns=["MiB/s"],
        reference=PLAIN,
        ratio_of="MiB/s",
        note=f"Both clients with {WINDOW // MIB} MiB stream and connection receive windows.",
    )
    _compare(
        table,
        size.rounds,
        {
            PLAIN: lambda: run_on("asyncio", _plain_download(port, count, file_bytes)),
            POOL: lambda: run_on("asyncio", _pool_download(port, count, file_bytes)),
        },
    )
    results.tables.append(table)


def run_upload(port: int, size: Size, results: Results) -> None:
    """Benchmark 4: the same bytes POSTed to h2pool's server (which discards them)."""
    count = size.upload_files
    payload = os.urandom(size.upload_mib * MIB)
    table = Table(
        key="upload",
        title=f"Upload: {count} x {size.upload_mib} MiB to h2pool's server, one at a time",
        columns=["MiB/s"],
        reference=PLAIN,
        ratio_of="MiB/s",
        note="The server (another process) reads and discards; its windows are h2pool's defaults.",
    )
    _compare(
        table,
        size.rounds,
        {
            PLAIN: lambda: run_on("asyncio", _plain_upload(port, payload, count)),
            POOL: lambda: run_on("asyncio", _pool_upload(port, payload, count)),
        },
    )
    results.tables.append(table)
