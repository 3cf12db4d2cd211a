"""The benchmark suite (``python -m benchmarks``): it runs, and its pure parts are right.

The suite is run once at its tiny size and checked for completeness, never for speed (the
machine is shared): every client has a positive figure, every ratio is computed, the plots are
written. The small size runs only with ``-m slow``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.latency import LATENCY_CLIENTS
from benchmarks.load import OpenLoopResult, due, open_loop, percentile, summarize
from benchmarks.plain import CallbackGets, connect, get_headers
from benchmarks.plots import PLOTS
from benchmarks.results import Table, Target
from benchmarks.rpc import grpc_responder, measure_calls
from benchmarks.rpc_client import CLIENTS, GRPCLIB, REPLY, RPC, grpc_aio_client, grpclib_client
from benchmarks.server_load import h2load_rate
from benchmarks.sizes import Budget
from benchmarks.small_gets import NAMES
from tests.peers import INDEX_HTML, Nghttpd, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent

# --- the whole suite -----------------------------------------------------------------------------


def _run_suite(size: str, out: Path, timeout: float, *only: str) -> dict[str, Any]:
    """Run ``python -m benchmarks`` (``--only`` the names given) and return its JSON results."""
    selection = ["--only", *only] if only else []
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--size", size, "--out", str(out), *selection],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "### Targets" in done.stdout  # the table is printed
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def _rows(results: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    tables = {table["key"]: table for table in results["tables"]}
    assert key in tables, f"no {key} table: {sorted(tables)}"
    return {row["name"]: row for row in tables[key]["rows"]}


def _check_complete(results: dict[str, Any], out: Path) -> None:
    """Every benchmark produced every row, with positive numbers and ratios."""
    expected = {
        "small_gets": (NAMES, "req/s"),
        "latency": (LATENCY_CLIENTS, "p50 ms"),
        "download": (("plain h2, one connection", "h2pool Pool.request"), "MiB/s"),
        "upload": (("plain h2, one connection", "h2pool Pool.request"), "MiB/s"),
        "server": (("h2pool server", "hypercorn"), "req/s"),
    }
    for key, (names, column) in expected.items():
        rows = _rows(results, key)
        assert list(rows) == list(names), key
        for name, row in rows.items():
            assert row["error"] is None, (key, name, row["error"])
            assert row["values"][column] > 0, (key, name)
            assert row["ratio"] is not None, (key, name)
            assert row["ratio"] > 0, (key, name)
    memory = _rows(results, "memory")
    assert len(memory) == 7
    assert all(row["error"] is None and row["values"]["value"] > 0 for row in memory.values())
    curve = _rows(results, "small_gets_curve")
    assert all(row["error"] is None and len(row["values"]) >= 1 for row in curve.values())
    # uvloop is optional (and h2pool may fail on it): every client has a row, measured or not.
    assert list(_rows(results, "uvloop")) == list(NAMES)
    assert len(results["targets"]) == 11
    assert all(target["measured"] is not None for target in results["targets"][:8])
    _check_rpc(results, results["targets"][8:])
    assert (out / "results.md").read_text().startswith("## h2pool benchmarks")
    for name in PLOTS.values():
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name


# Whether this checkout has h2pool.rpc yet: until it does, its row must say so, and only its
# row (a module of the same name elsewhere, as an editable install of another checkout
# provides, does not count).
RPC_AVAILABLE = any((REPO_ROOT / "h2pool" / name).exists() for name in ("rpc.py", "rpc"))


def _check_rpc(results: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    """Every gRPC client has its figure and ratio to grpc.aio; issue 8's targets are there."""
    rows = _rows(results, "rpc")
    assert list(rows) == list(CLIENTS)
    for name, row in rows.items():
        if name == RPC and not RPC_AVAILABLE:
            assert "h2pool.rpc not available" in row["error"]
            continue
        assert row["error"] is None, (name, row["error"])
        assert list(row["values"]) == ["calls/s", "CPU cores", "CPU µs/call"], name
        assert all(value > 0 for value in row["values"].values()), name
        assert row["ratio"] > 0, name
    assert [target["goal"].split(",")[0].split(" (")[0] for target in targets] == [
        "h2pool.rpc / grpclib",
        "h2pool.rpc / grpc.aio",
        "h2pool.rpc / grpc.aio",
    ]
    assert [target["bound"] for target in targets] == [1.5, 0.5, 1.0]
    assert all((target["measured"] is not None) is RPC_AVAILABLE for target in targets)


@pytest.mark.peer
@pytest.mark.timeout(170)
def test_tiny_suite_produces_every_row_and_plot(tmp_path: Path) -> None:
    _check_complete(_run_suite("tiny", tmp_path, timeout=150), tmp_path)


@pytest.mark.peer
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_small_suite_produces_every_row_and_plot(tmp_path: Path) -> None:
    _check_complete(_run_suite("small", tmp_path, timeout=1100), tmp_path)


@pytest.mark.peer
@pytest.mark.timeout(60)
def test_rpc_benchmark_runs_alone_with_every_client_and_target(tmp_path: Path) -> None:
    results = _run_suite("tiny", tmp_path, 50, "rpc")
    assert [table["key"] for table in results["tables"]] == ["rpc"]
    assert len(results["targets"]) == 3
    _check_rpc(results, results["targets"])
    text = (tmp_path / "results.md").read_text()
    assert "| h2pool.rpc / grpc.aio (goal: match it) |" in text


# --- the gRPC responder and clients ------------------------------------------------------------


@pytest.mark.peer
async def test_grpc_responder_answers_grpc_aio_and_grpclib(tmp_path: Path) -> None:
    # nghttpd must pass for a gRPC server with both reference clients, or their figures lie.
    with grpc_responder(tmp_path) as port:
        for client in (grpc_aio_client, grpclib_client):
            async with asyncio.timeout(10), client(port) as call:
                assert await call() == REPLY


@pytest.mark.peer
def test_a_failing_client_reports_its_reason() -> None:
    # grpclib fails at once on a refused connection (the pool would wait for the port).
    with pytest.raises(RuntimeError, match=r"^ConnectionRefusedError: .*Connect call failed"):
        measure_calls(GRPCLIB, free_port(), Budget(requests=10, seconds=0.1))


# --- the callback client -------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize("concurrency", [1, 10, 150])
async def test_callback_client_completes_every_request(
    nghttpd_h2c: Nghttpd, concurrency: int
) -> None:
    # 150 is above nghttpd's 100 streams: the client keeps within the server's limit.
    client = await connect(CallbackGets, nghttpd_h2c.port)
    try:
        headers = get_headers(nghttpd_h2c.port, "/index.html")
        completed = await client.run(headers, 500, concurrency, seconds=30)
    finally:
        client.close()
    assert completed == 500
    assert client.body_bytes == 500 * len(INDEX_HTML)


@pytest.mark.peer
async def test_callback_client_stops_at_its_time_bound(nghttpd_h2c: Nghttpd) -> None:
    client = await connect(CallbackGets, nghttpd_h2c.port)
    try:
        headers = get_headers(nghttpd_h2c.port, "/index.html")
        completed = await client.run(headers, 10**9, 10, seconds=0.2)
    finally:
        client.close()
    assert 0 < completed < 10**9
    assert client.body_bytes == completed * len(INDEX_HTML)


# --- the open-loop schedule ----------------------------------------------------------------------


def test_due_counts_requests_scheduled_so_far() -> None:
    assert due(-0.001, 100, 10) == 0
    assert due(0.0, 100, 10) == 1  # request 0 is due at once
    assert due(0.0099, 100, 10) == 1
    assert due(0.0101, 100, 10) == 2
    assert due(5.0, 100, 10) == 10  # never more than the schedule


@given(
    st.floats(-1, 100, allow_nan=False),
    st.floats(-1, 100, allow_nan=False),
    st.floats(1, 10_000, allow_nan=False),
    st.integers(1, 10**6),
)
def test_due_is_monotonic_and_bounded(a: float, b: float, rate: float, total: int) -> None:
    early, late = sorted((a, b))
    assert 0 <= due(early, rate, total) <= due(late, rate, total) <= total


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 50) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_summarize_reports_milliseconds_rate_and_failures() -> None:
    result = OpenLoopResult(
        latencies=[0.001, 0.002, 0.003, 0.004], scheduled=6, failed=1, dropped=1, seconds=2
    )
    values = summarize(result)
    assert values["p50 ms"] == pytest.approx(2.0)
    assert values["max ms"] == pytest.approx(4.0)
    assert values["done/s"] == pytest.approx(2.0)
    assert values["failed"] == 1
    assert values["dropped"] == 1


async def test_open_loop_counts_queueing_from_the_scheduled_start() -> None:
    # A server that takes 20 ms per request, one at a time, offered one every 10 ms: the
    # requests queue, and the last one's latency includes the wait (about 110 ms), not just
    # its own 20 ms of service.
    lock = asyncio.Lock()

    async def get() -> bytes:
        async with lock:
            await asyncio.sleep(0.02)
        return b"ok"

    result = await open_loop(get, b"ok", rate=100, seconds=0.1, drain=5, max_in_flight=100)
    assert result.scheduled == 10
    assert result.failed == 0
    assert result.dropped == 0
    assert len(result.latencies) == 10
    assert result.latencies[-1] >= 0.1


async def test_open_loop_counts_wrong_bodies_and_stragglers_as_failed() -> None:
    calls = 0
    never = asyncio.Event()

    async def get() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            await never.wait()  # still running at the end of the drain
        return b"ok" if calls != 3 else b"wrong"

    result = await open_loop(get, b"ok", rate=1000, seconds=0.004, drain=0.05, max_in_flight=100)
    assert result.scheduled == 4
    assert len(result.latencies) == 2
    assert result.failed == 2
    assert result.dropped == 0


async def test_open_loop_drops_requests_beyond_its_backlog() -> None:
    never = asyncio.Event()

    async def get() -> bytes:
        await never.wait()
        return b"ok"

    result = await open_loop(get, b"ok", rate=1000, seconds=0.005, drain=0.01, max_in_flight=2)
    assert result.scheduled == 5
    assert result.dropped == 3
    assert result.failed == 2  # the two started, cancelled after the drain
    assert result.latencies == []


# --- results -------------------------------------------------------------------------------------


def test_table_ratios_and_error_rows() -> None:
    table = Table(key="t", title="T", columns=["req/s"], reference="a", ratio_of="req/s")
    table.add("a", **{"req/s": 200.0})
    table.add("b", **{"req/s": 100.0})
    table.fail("c", RuntimeError("boom | bang\nmore"))
    table.compute_ratios()
    assert [row.ratio for row in table.rows] == [1.0, 0.5, None]
    text = table.markdown()
    assert "| b | 100 | 0.50x |" in text
    assert "error: RuntimeError: boom / bang |" in text


def test_targets_bounds() -> None:
    assert Target("x", 1.2, 1.0).met is True
    assert Target("x", 0.8, 1.0).met is False
    assert Target("x", 40.0, 50.0, at_least=False).met is True
    assert Target("x", None, 1.0).met is None
    # Shown rounded towards missing: never "2.00x" next to "no".
    assert Target("x", 1.9998, 2.0).markdown_row() == "| x | 1.99x | >= 2x | no |"
    assert Target("x", 50.004, 50.0, at_least=False, unit=" MiB").markdown_row() == (
        "| x | 50.01 MiB | <= 50 MiB | no |"
    )


def test_h2load_rate_parses_the_summary() -> None:
    output = "finished in 1.23s, 8123.45 req/s, 1.2MB/s\nrequests: 10000 total\n"
    assert h2load_rate(output) == pytest.approx(8123.45)
    with pytest.raises(ValueError, match="no rate"):
        h2load_rate("requests: 0 total")
