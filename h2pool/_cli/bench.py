"""``h2pool bench``: a load generator on the pool (h2load-like), closed or open loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import BinaryIO, TextIO

from .._exceptions import H2PoolError
from .._pool.pool import Pool
from .arguments import split_url
from .failures import CommandError, Exit, describe
from .load import Tally, is_late, report, start_time
from .pools import command_pool

# Seconds between two progress lines on a terminal.
_PROGRESS_EVERY = 0.25


class _Run:
    """One run's pool, target path, tally and bounds."""

    def __init__(self, pool: Pool, path: str, args: argparse.Namespace) -> None:
        self.pool = pool
        self.path = path
        self.total: int | None = args.requests
        self.tally = Tally()
        self.started = time.perf_counter()
        self.ends = None if args.duration is None else self.started + args.duration
        self.issued = 0

    def more(self) -> bool:
        """Whether another request may start (count and duration both allow it)."""
        if self.total is not None and self.issued >= self.total:
            return False
        return self.ends is None or time.perf_counter() < self.ends

    async def one(self) -> None:
        """Send one request and count how it ended."""
        sent = time.perf_counter()
        try:
            response = await self.pool.request("GET", self.path)
        except H2PoolError as exc:
            self.tally.errors[type(exc).__name__] += 1
            self.tally.first_error = self.tally.first_error or str(exc)
            return
        self.tally.latencies.append(time.perf_counter() - sent)
        self.tally.statuses[response.status_code] += 1
        self.tally.endpoints[response.endpoint] += 1

    async def closed_loop(self, clients: int) -> None:
        """``clients`` workers, each sending its next request once the last one ended."""

        async def worker() -> None:
            while self.more():
                self.issued += 1
                await self.one()

        await asyncio.gather(*(worker() for _ in range(clients)))

    async def open_loop(self, rate: float) -> None:
        """Start requests on the schedule of ``rate``, whether or not earlier ones ended."""
        tasks: set[asyncio.Task[None]] = set()
        while self.more():
            due = start_time(self.issued, rate)
            if self.ends is not None and self.started + due >= self.ends:
                break
            # Behind schedule, still yield: the requests already started get sent.
            await asyncio.sleep(max(0.0, self.started + due - time.perf_counter()))
            if is_late(due, time.perf_counter() - self.started, rate):
                self.tally.late += 1
            self.issued += 1
            task = asyncio.create_task(self.one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def _progress(run: _Run, stderr: TextIO) -> AsyncIterator[None]:
    """A progress line rewritten on stderr while the run goes, only on a terminal."""
    if not stderr.isatty():
        yield
        return

    async def show() -> None:
        while True:
            total = "" if run.total is None else f"/{run.total:,}"
            failed = sum(run.tally.errors.values())
            stderr.write(f"\r{run.tally.done:,}{total} requests, {failed:,} failed ")
            stderr.flush()
            await asyncio.sleep(_PROGRESS_EVERY)

    task = asyncio.create_task(show())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stderr.write("\r\033[K")


async def bench(
    args: argparse.Namespace, stdout: BinaryIO, stderr: TextIO, stdin: BinaryIO
) -> Exit:
    """Run the load ``args`` describe; the report to stdout.

    Raises:
        CommandError: A bad argument.
    """
    target = split_url(args.url)
    if args.requests is None and args.duration is None:
        args.requests = 100
    pool = command_pool(
        args,
        target.base,
        min_connections=args.connections,
        max_connections=args.connections,
        max_pending=max(1000, args.clients),
    )
    async with pool:
        run = _Run(pool, target.path, args)
        async with _progress(run, stderr):
            if args.rate is None:
                await run.closed_loop(args.clients)
            else:
                await run.open_loop(args.rate)
        seconds = time.perf_counter() - run.started
        stats = pool.stats()
    connections = Counter({e.address: e.connections + e.draining for e in stats.endpoints})
    lines = report(
        run.tally, seconds, retries=stats.retries, connections=connections, rate=args.rate
    )
    stdout.write("".join(line + "\n" for line in lines).encode())
    stdout.flush()
    if run.tally.first_error is not None and not run.tally.latencies:
        failed = describe(CommandError(run.tally.first_error))
        stderr.write(f"h2pool: error: every request failed; the first: {failed}\n")
        return Exit.FAILED
    return Exit.OK
