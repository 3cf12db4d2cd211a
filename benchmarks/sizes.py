"""How much work each benchmark does at each ``--size``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SIZES", "Budget", "Size"]


@dataclass(frozen=True, slots=True)
class Budget:
    """Bounds on one closed-loop run of one client: it stops at whichever comes first.

    Attributes:
        requests: Requests to send in total.
        seconds: Seconds after which no new request is started.
    """

    requests: int
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Size:
    """The parameters of one suite size.

    Attributes:
        concurrencies: Concurrency levels of the small-GET benchmark (must include 100, the
            level of the ratio table and of the uvloop comparison).
        gets: Bounds on each client's small-GET run at each concurrency.
        rounds: Runs of each small-GET client per level, and of each gRPC client; the best one
            counts.
        latency_rate: Offered load of the latency benchmark, requests per second.
        latency_seconds: Length of the latency schedule.
        download_files: Files downloaded one after the other, per client.
        download_mib: Size of each downloaded file.
        upload_files: Bodies uploaded one after the other, per client.
        upload_mib: Size of each uploaded body.
        h2load_requests: Requests per h2load run against each server.
        idle_connections: Idle client connections held by the memory probe.
        open_streams: Streams held open by the memory probe.
        rpc_calls: Bounds on each gRPC client's run of unary calls.
    """

    concurrencies: tuple[int, ...]
    gets: Budget
    rounds: int
    latency_rate: float
    latency_seconds: float
    download_files: int
    download_mib: int
    upload_files: int
    upload_mib: int
    h2load_requests: int
    idle_connections: int
    open_streams: int
    rpc_calls: Budget


SIZES = {
    # Run by the test suite: the whole suite in well under a minute on 2 cores.
    "tiny": Size(
        concurrencies=(10, 100),
        gets=Budget(requests=3_000, seconds=0.7),
        rounds=1,
        latency_rate=1_000,
        latency_seconds=1.0,
        download_files=2,
        download_mib=4,
        upload_files=2,
        upload_mib=4,
        h2load_requests=4_000,
        idle_connections=1_000,
        open_streams=200,
        rpc_calls=Budget(requests=2_000, seconds=0.5),
    ),
    # A few minutes: a quick check of a change.
    "small": Size(
        concurrencies=(1, 10, 50, 100, 200, 500),
        gets=Budget(requests=20_000, seconds=3.0),
        rounds=1,
        latency_rate=1_000,
        latency_seconds=5.0,
        download_files=4,
        download_mib=16,
        upload_files=4,
        upload_mib=16,
        h2load_requests=50_000,
        idle_connections=1_000,
        open_streams=1_000,
        rpc_calls=Budget(requests=20_000, seconds=3.0),
    ),
    # The figures in docs/performance.md.
    "full": Size(
        concurrencies=(1, 10, 50, 100, 200, 500),
        gets=Budget(requests=50_000, seconds=6.0),
        rounds=3,
        latency_rate=1_000,
        latency_seconds=20.0,
        download_files=16,
        download_mib=16,
        upload_files=16,
        upload_mib=16,
        h2load_requests=100_000,
        idle_connections=1_000,
        open_streams=1_000,
        rpc_calls=Budget(requests=50_000, seconds=6.0),
    ),
}
"""The sizes offered by ``--size``."""
