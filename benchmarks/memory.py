"""Benchmark 6: memory of idle client connections and of open streams.

The measuring process is fresh (``benchmarks.memory_probe``), so nothing this suite did before
inflates its figures; the server holding the other ends (h2pool's, ``hold`` mode: it never
answers) runs in a third process.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .memory_probe import POOL_REQUESTS
from .peers import REPO_ROOT, h2pool_server
from .results import Results, Table
from .sizes import Size

__all__ = ["run_memory"]

# Seconds the probe may take.
_PROBE_TIMEOUT = 120.0


def run_memory(size: Size, results: Results) -> None:
    """Run the probe and tabulate its figures."""
    connections, streams = size.idle_connections, size.open_streams
    table = Table(
        key="memory",
        title="Memory (client side)",
        columns=["value"],
        note=(
            f"A fresh process opening {connections:,} idle h2c connections to h2pool's server"
            f" (each proven alive by a PING), then {streams:,} streams on one more connection"
            " (requests sent, responses never sent by the server), then requests held in flight"
            " through a Pool. RSS is VmRSS; the heap is what tracemalloc traces."
        ),
    )
    results.tables.append(table)
    try:
        with h2pool_server("hold", concurrency=max(100, streams)) as port:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.memory_probe",
                    str(port),
                    f"--connections={connections}",
                    f"--streams={streams}",
                ],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=_PROBE_TIMEOUT,
                check=True,
            )
        figures = json.loads(done.stdout)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None)
        table.fail("memory probe", f"{exc}: {detail.strip()[-300:]}" if detail else exc)
        return
    growth = (figures["idle_kib"] - figures["baseline_kib"]) / 1024
    table.add("process RSS after imports, MiB", value=figures["baseline_kib"] / 1024)
    table.add(
        f"process RSS with {connections:,} idle connections, MiB", value=figures["idle_kib"] / 1024
    )
    table.add(f"RSS growth for {connections:,} idle connections, MiB", value=growth)
    table.add("RSS per idle connection, KiB", value=growth * 1024 / connections)
    table.add("Python heap per open stream, bytes", value=figures["stream_traced_bytes"])
    table.add("RSS per open stream, bytes", value=figures["stream_rss_bytes"])
    table.add(
        f"Python heap per Pool.request in flight ({POOL_REQUESTS}), bytes",
        value=figures["pool_request_traced_bytes"],
    )
