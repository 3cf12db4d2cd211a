"""``h2pool bench``: its pure parts, and tiny runs against nghttpd and h2pool's server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._cli.arguments import parse
from h2pool._cli.failures import CommandError, Exit
from h2pool._cli.load import Tally, is_late, percentile, report, start_time
from tests.peers import Nghttpd
from tests.servers import Server, hello
from tests.test_cli import ROOT, refused_port, run

# --- Pure ------------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 1) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="out of"):
        percentile([1.0], 0)


@given(st.lists(st.floats(0, 1e3), min_size=1), st.floats(0.01, 100))
def test_percentile_is_a_measured_value_with_q_percent_at_or_below(
    values: list[float], q: float
) -> None:
    ordered = sorted(values)
    found = percentile(ordered, q)
    assert found in ordered
    at_or_below = sum(1 for v in ordered if v <= found)
    assert at_or_below >= q / 100 * len(ordered)
    below = sum(1 for v in ordered if v < found)
    assert below < q / 100 * len(ordered)


def test_open_loop_schedule_and_lateness() -> None:
    assert [start_time(i, 4.0) for i in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert not is_late(due=1.0, started=1.2, rate=4.0)  # behind, within one interval
    assert is_late(due=1.0, started=1.3, rate=4.0)  # the next one was already due


def test_bench_arguments() -> None:
    args = parse(["bench", "http://h/", "-n", "5", "-c", "2", "--connections", "3"])
    assert (args.requests, args.clients, args.connections, args.rate) == (5, 2, 3, None)
    args = parse(["bench", "http://h/", "--duration", "1.5", "--rate", "100"])
    assert (args.requests, args.duration, args.rate) == (None, 1.5, 100.0)
    for bad in (["-n", "0"], ["-c", "x"], ["--rate", "-1"], ["--duration", "0"], ["-v"]):
        with pytest.raises(CommandError):
            parse(["bench", "http://h/", *bad])


def test_report_lines() -> None:
    tally = Tally(
        latencies=[0.001 * i for i in range(1, 101)],
        statuses=Counter({200: 99, 503: 1}),
        errors=Counter({"ReadTimeout": 2}),
        endpoints=Counter({"a:1": 60, "b:2": 40}),
        late=3,
    )
    lines = report(tally, 2.0, retries=4, connections=Counter({"a:1": 1, "b:2": 2}), rate=50.0)
    assert lines == [
        "102 requests in 2.00 s: 51.0 req/s, 2 failed",
        "offered 50.0 req/s (open loop), 3 started late",
        "latency ms: p50 50.00, p90 90.00, p99 99.00, max 100.00",
        "status: 200 99, 503 1",
        "errors: ReadTimeout 2",
        "retries: 4",
        "connections: 3 (a:1 1, b:2 2)",
        "endpoints: a:1 60, b:2 40",
    ]


# --- Runs ------------------------------------------------------------------------------------


def report_of(stdout: bytes) -> dict[str, str]:
    """The report's lines by their first word."""
    lines = stdout.decode().splitlines()
    return {line.split(" ")[0].rstrip(":"): line for line in lines}


async def test_bench_closed_loop_nghttpd(nghttpd_h2c: Nghttpd) -> None:
    url = nghttpd_h2c.url("/index.html")
    ran = await run("bench", url, "-n", "200", "-c", "8", "--connections", "2")
    assert (ran.code, ran.stderr) == (0, "")  # not a TTY: no progress line
    lines = report_of(ran.stdout)
    assert lines["200"].startswith("200 requests in ")
    assert lines["200"].endswith(" 0 failed")
    assert lines["status"] == "status: 200 200"
    assert lines["connections"] == f"connections: 2 ({nghttpd_h2c.target} 2)"
    assert lines["endpoints"] == f"endpoints: {nghttpd_h2c.target} 200"
    assert lines["latency"].startswith("latency ms: p50 ")


async def test_bench_open_loop_own_server() -> None:
    async with Server(hello) as server:
        url = f"http://127.0.0.1:{server.port}/"
        ran = await run("bench", url, "--rate", "200", "--duration", "0.5", "-n", "1000")
    assert ran.code == 0, ran
    lines = report_of(ran.stdout)
    assert lines["100"].startswith("100 requests in ")  # 0.5 s at 200/s, whatever the machine
    assert lines["offered"].startswith("offered 200.0 req/s (open loop), ")


async def test_bench_open_loop_does_not_wait_for_answers() -> None:
    """All 20 requests reach the server while it answers none (closed loop: -c 10 at most)."""
    arrived: list[int] = []
    all_arrived = asyncio.Event()
    release = asyncio.Event()

    async def held(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        arrived.append(stream_id)
        if len(arrived) == 20:
            all_arrived.set()
        await release.wait()
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

    async with Server(held) as server:
        url = f"http://127.0.0.1:{server.port}/"
        command = asyncio.create_task(run("bench", url, "--rate", "100", "-n", "20"))
        await asyncio.wait_for(all_arrived.wait(), 20)
        release.set()
        ran = await command
    assert ran.code == 0, ran
    assert report_of(ran.stdout)["20"].startswith("20 requests in ")


async def test_bench_every_request_failed() -> None:
    ran = await run("bench", f"http://127.0.0.1:{refused_port()}/", "-n", "3")
    assert ran.code == Exit.FAILED
    assert report_of(ran.stdout)["errors"] == "errors: ConnectError 3"
    assert ran.stderr.startswith("h2pool: error: every request failed; the first: GET ")
    assert len(ran.stderr.splitlines()) == 1


async def test_bench_progress_only_on_a_terminal() -> None:
    """With stderr a terminal (a pty), a progress line is drawn, then wiped before the report."""
    master, terminal = pty.openpty()
    try:
        async with Server(hello) as server:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "h2pool",
                "bench",
                f"http://127.0.0.1:{server.port}/",
                "-n",
                "50",
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=terminal,
            )
            os.close(terminal)
            terminal = -1
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        drawn = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's other end is closed
            while chunk := os.read(master, 4096):
                drawn += chunk
    finally:
        os.close(master)
        if terminal != -1:
            os.close(terminal)
    assert process.returncode == 0
    assert drawn.startswith(b"\r0/50 requests, 0 failed ")
    assert drawn.endswith(b"\r\x1b[K")
    assert out.startswith(b"50 requests in ")
