"""The driver: start the peers, run the selected benchmarks, write and print the results."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.peers import Nghttpd

from .clients import AIOHTTP, CALLBACK, CORE, HTTPX, POOL, Origins
from .latency import run_latency
from .memory import run_memory
from .peers import BenchNginx, h2pool_server, write_docroot
from .plots import plot
from .results import Results, Table, Target, machine, ratio
from .rpc import rpc_targets, run_rpc
from .server_load import H2POOL, run_server
from .sizes import SIZES, Size
from .small_gets import run_small_gets, run_uvloop
from .transfer import PLAIN, run_download, run_upload
from .transfer import POOL as TRANSFER_POOL

__all__ = ["BENCHMARKS", "run_suite", "targets"]

BENCHMARKS = ("small_gets", "latency", "download", "upload", "server", "memory", "uvloop", "rpc")
"""The benchmarks, in the order they run (names for ``--only``)."""

# The benchmarks that GET from nghttpd (and nginx).
_ON_ORIGINS = {"small_gets", "latency", "download", "uvloop"}

# Idle connections the memory target is stated for.
_TARGET_CONNECTIONS = 1_000


def _nginx_path() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _run_one(
    key: str, size: Size, origins: Origins | None, scratch: Path, results: Results
) -> None:
    """Run benchmark ``key``; ``scratch`` is an empty directory it may use."""
    steps: dict[str, Callable[[Origins], None]] = {
        "small_gets": lambda o: run_small_gets(o, size, results),
        "latency": lambda o: run_latency(o, size, results),
        "download": lambda o: run_download(o.h2c_port, size, results),
        "uvloop": lambda o: run_uvloop(o, size, results),
    }
    if key in steps:
        if origins is None:
            raise RuntimeError("nghttpd did not start")
        steps[key](origins)
    elif key == "upload":
        with h2pool_server("discard") as port:
            run_upload(port, size, results)
    elif key == "server":
        run_server(size, results)
    elif key == "memory":
        run_memory(size, results)
    elif key == "rpc":
        run_rpc(scratch, size, results)
    else:
        raise ValueError(f"unknown benchmark {key!r}")


def run_suite(size_name: str, only: Sequence[str], out: Path) -> Results:
    """Run the benchmarks in ``only`` (all if empty) at ``size_name``; write into ``out``.

    A client that fails shows as an error row; a benchmark that fails as a whole shows as a
    table with one error row. Neither stops the suite.
    """
    size = SIZES[size_name]
    selected = [key for key in BENCHMARKS if not only or key in only]
    results = Results(size=size_name, machine=machine(_nginx_path()))
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="h2pool-bench-") as tmp,
        contextlib.ExitStack() as peers,
    ):
        docroot = Path(tmp) / "docroot"
        docroot.mkdir()
        origins: Origins | None = None
        if _ON_ORIGINS.intersection(selected):
            write_docroot(docroot, size.download_mib if "download" in selected else 1)
            origins = Origins(
                h2c_port=peers.enter_context(Nghttpd(docroot)).port,
                http1_port=_start_nginx(peers, docroot),
            )
        for key in selected:
            print(f"[{time.perf_counter() - started:5.1f} s] {key}", file=sys.stderr, flush=True)
            try:
                scratch = Path(tmp) / key
                scratch.mkdir()
                _run_one(key, size, origins, scratch, results)
            except Exception as exc:
                failed = Table(key=key, title=f"{key}: failed", columns=["value"])
                failed.fail(key, exc)
                results.tables.append(failed)
    results.targets = targets(results)
    results.seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    results.write(out)
    plot(results, out)
    return results


def _start_nginx(peers: contextlib.ExitStack, docroot: Path) -> int:
    """Start nginx for aiohttp; port 0 (every aiohttp run then fails) if it cannot start."""
    try:
        return peers.enter_context(BenchNginx(docroot)).port
    except (OSError, RuntimeError) as exc:
        print(f"nginx did not start, aiohttp will fail: {exc}", file=sys.stderr)
        return 0


def targets(results: Results) -> list[Target]:
    """The issues' speed and memory goals (7, then 8), with what this run measured."""
    found: list[Target] = []
    gets = results.table("small_gets")
    if gets is not None:
        pool = gets.value(POOL, "req/s")
        callback = gets.value(CALLBACK, "req/s")
        found += [
            Target(
                "Pool.request / plain callback client, 100 concurrent", ratio(pool, callback), 1.0
            ),
            Target(
                "core H2Protocol / plain callback client",
                ratio(gets.value(CORE, "req/s"), callback),
                1.3,
            ),
            Target("Pool.request / httpx http2", ratio(pool, gets.value(HTTPX, "req/s")), 6.0),
            Target(
                "Pool.request / aiohttp HTTP/1.1 (goal: pass it)",
                ratio(pool, gets.value(AIOHTTP, "req/s")),
                0.8,
            ),
        ]
    for key, what in (("download", "download 16 x 16 MiB"), ("upload", "upload")):
        table = results.table(key)
        if table is not None:
            measured = ratio(table.value(TRANSFER_POOL, "MiB/s"), table.value(PLAIN, "MiB/s"))
            found.append(Target(f"Pool.request / plain client, {what}", measured, 0.9))
    server = results.table("server")
    if server is not None:
        found.append(
            Target(
                "h2pool server / hypercorn under h2load",
                ratio(server.value(H2POOL, "req/s"), server.value("hypercorn", "req/s")),
                2.0,
            )
        )
    memory = results.table("memory")
    if memory is not None:
        per_connection = memory.value("RSS per idle connection, KiB", "value")
        measured = None if per_connection is None else per_connection * _TARGET_CONNECTIONS / 1024
        found.append(
            Target(
                "RSS of 1,000 idle client connections", measured, 50.0, at_least=False, unit=" MiB"
            )
        )
    rpc = results.table("rpc")
    if rpc is not None:
        found += rpc_targets(rpc)
    return found
