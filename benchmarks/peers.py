"""The servers the benchmarks run against, started on 127.0.0.1 and stopped after use.

nghttpd, nginx and hypercorn come from ``tests.peers``; this module adds what the benchmarks
need on top: a docroot with the files served, nginx tuned for many keep-alive connections and
no access log, and h2pool's own server in a subprocess (``benchmarks.h2pool_server``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.peers import Hypercorn, Nginx

from .h2pool_server import SMALL_BODY

__all__ = ["BenchNginx", "bench_hypercorn", "h2pool_server", "write_docroot"]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Where ``python -m benchmarks.h2pool_server`` is run from."""

MIB = 1024 * 1024

# How long a server subprocess may take to start, and to exit after SIGTERM.
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0


def write_docroot(directory: Path, big_mib: int) -> None:
    """Write ``small`` (``SMALL_BODY``, 12 bytes) and ``big`` (``big_mib`` MiB) in ``directory``."""
    (directory / "small").write_bytes(SMALL_BODY)
    with (directory / "big").open("wb") as big:
        for _ in range(big_mib):
            big.write(os.urandom(MIB))


class BenchNginx(Nginx):
    """``tests.peers.Nginx`` for load: many connections, long keep-alive, no access log.

    The test peer allows 256 connections, which aiohttp at 500 concurrent (one connection per
    request in flight) would exceed; the access log would cost nginx a write per request.
    """

    def __init__(self, docroot: Path) -> None:
        super().__init__(docroot, server_directives="access_log off; keepalive_requests 10000000;")

    def config_text(self, port: int) -> str:
        """The test peer's configuration, with room for 4,096 connections."""
        return (
            super().config_text(port).replace("worker_connections 256;", "worker_connections 4096;")
        )


def bench_hypercorn() -> Hypercorn:
    """hypercorn serving ``tests.asgi_app`` for load: no GOAWAY every 1,000 requests, no log."""
    # An empty accesslog turns hypercorn's access log off, as h2pool's server keeps none.
    return Hypercorn(keep_alive_max_requests=10**9, options={"accesslog": ""})


@contextlib.contextmanager
def h2pool_server(mode: str, concurrency: int = 100) -> Iterator[int]:
    """Run ``python -m benchmarks.h2pool_server MODE`` and yield its port.

    Args:
        mode: ``small``, ``discard`` or ``hold`` (see ``benchmarks.h2pool_server``).
        concurrency: MAX_CONCURRENT_STREAMS the server advertises.

    Raises:
        RuntimeError: The server did not print its port within the start-up timeout.
    """
    argv = [sys.executable, "-m", "benchmarks.h2pool_server", mode]
    process = subprocess.Popen(
        [*argv, "--concurrency", str(concurrency)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = _read_port(process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


def _read_port(process: subprocess.Popen[str]) -> int:
    """Read the port a server subprocess prints first, bounded in time."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(_START_TIMEOUT):
            raise RuntimeError(f"h2pool's server did not start within {_START_TIMEOUT:g} s")
    line = process.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"h2pool's server exited with status {process.poll()}: {line!r}")
    return int(line)
