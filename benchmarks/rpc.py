"""Benchmark 8: unary gRPC calls per second at 100 concurrent, against a C-speed responder.

nghttpd answers every POST to ``/bench.Svc/Echo.grpc`` with a file holding one framed message,
``content-type: application/grpc`` (a mime-types file maps ``.grpc`` to it) and ``grpc-status:
0`` in trailers: a gRPC server at C speed, so the clients are the bottleneck. Each client
(``benchmarks.rpc_client``) runs in a fresh process, one after the other, so that each has the
machine to itself; they alternate round by round and the best round of each counts.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.peers import Nghttpd

from .peers import REPO_ROOT
from .results import Results, Table, Target, ratio
from .rpc_client import CLIENTS, GRPC_AIO, GRPCLIB, METHOD, REPLY, RPC, frame
from .sizes import Budget, Size

__all__ = ["CONCURRENCY", "grpc_responder", "measure_calls", "rpc_targets", "run_rpc"]

CONCURRENCY = 100
"""Calls in flight (nghttpd allows 100 streams per connection)."""

# Seconds a client process may take beyond its budget (imports, connecting) before it is killed.
_PROCESS_GRACE = 30.0


@contextlib.contextmanager
def grpc_responder(directory: Path) -> Iterator[int]:
    """Serve ``frame(REPLY)`` as a gRPC answer to every POST of ``METHOD``; yield the port.

    Args:
        directory: An empty directory for the docroot and the mime-types file.
    """
    docroot = directory / "docroot"
    message = docroot / METHOD.lstrip("/")
    message.parent.mkdir(parents=True)
    message.write_bytes(frame(REPLY))
    mime_types = directory / "mime.types"
    mime_types.write_text("application/grpc grpc\n")
    arguments = ["--trailer", "grpc-status: 0", f"--mime-types-file={mime_types}"]
    with Nghttpd(docroot, extra_args=arguments) as nghttpd:
        yield nghttpd.port


def measure_calls(name: str, port: int, budget: Budget) -> dict[str, float]:
    """Calls per second (and CPU used) of client ``name`` at :data:`CONCURRENCY`, in a fresh
    process: the figures of ``benchmarks.rpc_client.measure``.

    Raises:
        RuntimeError: The client could not run; the message is the reason it gave.
        subprocess.TimeoutExpired: It overran its budget by more than the grace period.
    """
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.rpc_client",
            name,
            str(port),
            f"--concurrency={CONCURRENCY}",
            f"--requests={budget.requests}",
            f"--seconds={budget.seconds}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=budget.seconds + _PROCESS_GRACE,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def run_rpc(directory: Path, size: Size, results: Results) -> None:
    """Every client against the responder, best of the size's rounds; ratios to grpc.aio.

    Args:
        directory: An empty directory for the responder's files.
        size: The budget of each run (``rpc_calls``) and the rounds.
        results: Where the table goes.
    """
    budget = size.rpc_calls
    table = Table(
        key="rpc",
        title=f"Unary gRPC calls, {CONCURRENCY} concurrent (nghttpd as the responder, h2c)",
        columns=["calls/s", "CPU cores", "CPU µs/call"],
        reference=GRPC_AIO,
        ratio_of="calls/s",
        note=(
            f"Closed loop, at most {budget.requests:,} calls or {budget.seconds:g} s per run,"
            f" best of {size.rounds} round(s), each client in a fresh process. Messages of"
            f" {len(REPLY)} bytes, no serializers. The last row posts the framed message"
            " through the pool and reads the body only: the bound for an rpc layer on the pool."
            " CPU: the client process's CPU time (all its threads) over the run's wall time."
        ),
    )
    results.tables.append(table)
    best: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    with grpc_responder(directory) as port:
        for _ in range(size.rounds):
            for name in CLIENTS:
                if name in errors:
                    continue
                try:
                    figures = measure_calls(name, port, budget)
                except (RuntimeError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                    errors[name] = str(exc) or type(exc).__name__
                    continue
                if figures["calls/s"] > best.get(name, {}).get("calls/s", 0.0):
                    best[name] = figures
    for name in CLIENTS:
        if name in best:
            table.add(name, **best[name])
        else:
            table.fail(name, errors.get(name, "not measured"))
    table.compute_ratios()


def rpc_targets(table: Table) -> list[Target]:
    """Issue 8's goals for h2pool.rpc: 1.5x grpclib, 0.5x grpc.aio, and matching grpc.aio."""
    rpc = table.value(RPC, "calls/s")
    grpclib = ratio(rpc, table.value(GRPCLIB, "calls/s"))
    grpc_aio = ratio(rpc, table.value(GRPC_AIO, "calls/s"))
    return [
        Target("h2pool.rpc / grpclib, unary calls", grpclib, 1.5),
        Target("h2pool.rpc / grpc.aio, unary calls", grpc_aio, 0.5),
        Target("h2pool.rpc / grpc.aio (goal: match it)", grpc_aio, 1.0),
    ]
