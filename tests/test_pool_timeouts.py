"""The pool's per-phase timeouts: connect, read, write, pool and total.

Each expiry must raise its own h2pool error, which is also a builtin ``TimeoutError``, within
a sensible bound of the configured value. The peers are h2pool's own server (handlers that
never answer, stall a body or never read one) and a TCP listener that never answers a TLS
handshake, so no third-party program is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import h2pool
from tests.servers import Handler, Server, mute_listener

pytestmark = pytest.mark.timeout(20)

# Slack allowed above a configured timeout on a loaded test machine.
SLACK = 0.5


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def elapsed() -> Iterator[list[float]]:
    """Measure the block with the event loop's clock; the result is in ``[0]`` afterwards."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    result: list[float] = []
    try:
        yield result
    finally:
        result.append(loop.time() - started)


def assert_timeout_error(error: BaseException, kind: type[h2pool.H2TimeoutError]) -> None:
    """``error`` is exactly ``kind``, an h2pool error and a builtin TimeoutError."""
    assert type(error) is kind, f"expected {kind.__name__}, got {type(error).__name__}: {error}"
    assert isinstance(error, TimeoutError)
    assert isinstance(error, h2pool.H2PoolError)


class Recorder:
    """Handlers that count the requests that reached the server and signal each arrival."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.arrived = asyncio.Event()

    def _arrive(self, headers: h2pool.HeaderList) -> None:
        self.paths.append(dict(headers)[":path"])
        self.arrived.set()

    def never(self) -> Handler:
        """Never answer (and never read the body)."""

        async def handler(_: h2pool.H2Protocol, __: int, headers: h2pool.HeaderList) -> None:
            self._arrive(headers)
            await asyncio.Event().wait()  # cancelled when the server stops

        return handler

    def stall_body(self, first: bytes) -> Handler:
        """Send the headers and ``first``, then nothing more."""

        async def handler(
            proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
        ) -> None:
            self._arrive(headers)
            await proto.start_response(stream_id, {":status": "200"})
            await proto.send_data(stream_id, first)
            await asyncio.Event().wait()

        return handler

    def trickle(self, chunk: bytes, count: int, every: float) -> Handler:
        """Send the headers, then ``chunk`` ``count`` times, ``every`` seconds apart."""

        async def handler(
            proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
        ) -> None:
            self._arrive(headers)
            await proto.start_response(stream_id, {":status": "200"})
            for _ in range(count):
                await asyncio.sleep(every)
                await proto.send_data(stream_id, chunk)
            await proto.end_stream(stream_id)

        return handler

    def reset_after(self, delay: float) -> Handler:
        """Reset the stream (INTERNAL_ERROR) ``delay`` seconds after it arrived."""

        async def handler(
            proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
        ) -> None:
            self._arrive(headers)
            await asyncio.sleep(delay)
            proto.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)

        return handler

    def hold(self, release: asyncio.Event) -> Handler:
        """Answer 200 with no body once ``release`` is set (like ``tests.servers.hold``)."""

        async def handler(
            proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
        ) -> None:
            self._arrive(headers)
            await release.wait()
            await proto.start_response(stream_id, {":status": "200"}, end_stream=True)

        return handler


def mute_pool(port: int, **options: Any) -> h2pool.Pool:
    """A pool whose one endpoint, ``mute_listener()`` on ``port``, accepts TCP and says nothing."""
    url, endpoint = f"https://localhost:{port}", f"127.0.0.1:{port}"
    return h2pool.Pool(url, endpoints=[endpoint], wait_for_ready=False, **options)


# --- connect -------------------------------------------------------------------------------------


async def test_connect_timeout_of_a_tls_handshake_that_is_never_answered() -> None:
    async with mute_listener() as port:
        # min_connections=0: the request starts the connection attempt itself, so the attempt
        # is bounded by the request's connect timeout (the next test covers an attempt the
        # pool started on its own first).
        pool = mute_pool(port, min_connections=0)
        async with pool:
            with elapsed() as took, pytest.raises(h2pool.ConnectTimeout) as timed_out:
                await pool.request("GET", "/", timeout=h2pool.Timeouts(total=5, connect=0.2))
            assert 0.2 <= took[0] < 0.2 + SLACK
            assert_timeout_error(timed_out.value, h2pool.ConnectTimeout)
            assert timed_out.value.never_processed
            assert f"connecting to 127.0.0.1:{port} timed out after 0.2s" in str(timed_out.value)
            (endpoint,) = pool.stats().endpoints
            assert endpoint.state is h2pool.ConnectivityState.TRANSIENT_FAILURE
            assert endpoint.last_error is not None
            assert endpoint.last_error.startswith("ConnectTimeout: ")


async def test_connect_timeout_knob_bounds_the_pools_own_attempts() -> None:
    async with mute_listener() as port:
        pool = mute_pool(port, connect_timeout=0.2, timeout=5)
        async with pool:
            with elapsed() as took, pytest.raises(h2pool.ConnectTimeout) as timed_out:
                await pool.request("GET", "/")
        assert took[0] < 0.2 + SLACK
        assert_timeout_error(timed_out.value, h2pool.ConnectTimeout)


async def test_pool_level_connect_timeout_bounds_every_attempt() -> None:
    async with mute_listener() as port:
        pool = mute_pool(port, timeout=h2pool.Timeouts(total=1.5, connect=0.2))
        async with pool:
            with elapsed() as took, pytest.raises(h2pool.H2TimeoutError) as timed_out:
                await pool.request("GET", "/")
        assert type(timed_out.value) is h2pool.ConnectTimeout, repr(timed_out.value)
        assert took[0] < 0.2 + SLACK


# --- read ----------------------------------------------------------------------------------------


async def test_read_timeout_waiting_for_response_headers() -> None:
    recorder = Recorder()
    async with (
        Server(recorder.never()) as server,
        h2pool.Pool(url(server.port), retry=h2pool.RetryPolicy(max_attempts=1)) as pool,
    ):
        with elapsed() as took, pytest.raises(h2pool.ReadTimeout) as timed_out:
            await pool.request("GET", "/slow", timeout=h2pool.Timeouts(total=5, read=0.2))
        assert 0.2 <= took[0] < 0.2 + SLACK
        assert_timeout_error(timed_out.value, h2pool.ReadTimeout)
        assert f"GET {url(server.port)}/slow to 127.0.0.1:{server.port}: " in str(timed_out.value)
        assert recorder.paths == ["/slow"]
        # The stream was reset, not the connection: the pool is still ready and idle.
        stats = pool.stats()
        assert stats.active == 0
        assert [ep.state for ep in stats.endpoints] == [h2pool.ConnectivityState.READY]


async def test_read_timeout_is_not_retried() -> None:
    """A server that may be processing is not sent the request again: that multiplies its load."""
    recorder = Recorder()
    read = h2pool.Timeouts(total=5, read=0.2)
    async with Server(recorder.never()) as server, h2pool.Pool(url(server.port)) as pool:
        for method in ("GET", "POST"):
            recorder.paths.clear()
            with elapsed() as took, pytest.raises(h2pool.ReadTimeout) as timed_out:
                await pool.request(method, "/slow", content=b"once", timeout=read)
            assert_timeout_error(timed_out.value, h2pool.ReadTimeout)
            assert recorder.paths == ["/slow"]
            assert took[0] < 0.2 + SLACK


async def test_read_timeout_bounds_each_wait_for_data_not_the_whole_body() -> None:
    """A body arriving every 0.25 s for 1.5 s is read under read=1 by request() and stream()."""
    recorder = Recorder()
    async with (
        Server(recorder.trickle(b"part;", count=6, every=0.25)) as server,
        h2pool.Pool(url(server.port)) as pool,
    ):
        timeout = h2pool.Timeouts(total=10, read=1.0)
        response = await pool.request("GET", "/trickle", timeout=timeout)
        assert response.content == b"part;" * 6
        async with pool.stream("GET", "/trickle", timeout=timeout) as streamed:
            assert b"".join([chunk async for chunk in streamed.aiter_bytes()]) == b"part;" * 6
        assert recorder.paths == ["/trickle"] * 2


async def test_read_timeout_while_the_body_stalls_in_a_stream() -> None:
    recorder = Recorder()
    async with (
        Server(recorder.stall_body(b"first")) as server,
        h2pool.Pool(url(server.port)) as pool,
    ):
        timeout = h2pool.Timeouts(total=5, read=0.2)
        async with pool.stream("GET", "/stall", timeout=timeout) as response:
            assert response.status_code == 200
            chunks = response.aiter_bytes()
            assert await anext(chunks) == b"first"
            with elapsed() as took, pytest.raises(h2pool.ReadTimeout) as timed_out:
                await anext(chunks)
        assert 0.2 <= took[0] < 0.2 + SLACK
        assert_timeout_error(timed_out.value, h2pool.ReadTimeout)
        # Retries happen only until the response headers arrived: never after.
        assert recorder.paths == ["/stall"]
        assert pool.stats().active == 0


# --- write ---------------------------------------------------------------------------------------

WINDOW = 65_535  # the server's stream and connection receive windows, never opened further
CHUNK = 16 * 1024


async def test_write_timeout_of_a_streamed_body_the_server_never_reads() -> None:
    recorder = Recorder()
    produced: list[int] = []

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(64):  # 1 MiB in all, far more than the window
            produced.append(CHUNK)
            yield b"u" * CHUNK

    # The server acknowledges data only as its handler reads it, and this one never does:
    # with 64 KiB windows, flow control blocks the upload after 65,535 bytes.
    config = h2pool.H2Config(stream_window=WINDOW, connection_window=WINDOW)
    async with (
        Server(recorder.never(), config=config) as server,
        h2pool.Pool(url(server.port)) as pool,
    ):
        timeout = h2pool.Timeouts(total=5, write=0.2)
        with elapsed() as took, pytest.raises(h2pool.WriteTimeout) as timed_out:
            await pool.request("PUT", "/upload", content=upload(), timeout=timeout)
        assert 0.2 <= took[0] < 0.2 + SLACK
        assert_timeout_error(timed_out.value, h2pool.WriteTimeout)
        # Stopped at the window: the chunk that did not fit is the last one produced.
        assert sum(produced) == WINDOW // CHUNK * CHUNK + CHUNK
        # A started stream cannot be replayed, so the PUT was not retried.
        assert recorder.paths == ["/upload"]


async def test_a_bytes_body_is_queued_and_never_hits_the_write_timeout() -> None:
    recorder = Recorder()
    config = h2pool.H2Config(stream_window=WINDOW, connection_window=WINDOW)
    async with (
        Server(recorder.never(), config=config) as server,
        h2pool.Pool(url(server.port), retry=h2pool.RetryPolicy(max_attempts=1)) as pool,
    ):
        # The body cannot leave either, but bytes are queued without waiting: the write
        # timeout (shorter than the read one) does not apply, the read timeout does.
        timeout = h2pool.Timeouts(total=5, write=0.05, read=0.3)
        with elapsed() as took, pytest.raises(h2pool.ReadTimeout):
            await pool.request("PUT", "/bytes", content=b"b" * (4 * WINDOW), timeout=timeout)
        assert 0.3 <= took[0] < 0.3 + SLACK
        assert recorder.paths == ["/bytes"]


# --- pool ----------------------------------------------------------------------------------------


async def test_pool_timeout_when_no_connection_has_a_free_stream() -> None:
    recorder = Recorder()
    release = asyncio.Event()
    async with (
        Server(recorder.hold(release), concurrency=1) as server,
        h2pool.Pool(url(server.port), max_connections=1, max_streams_per_connection=1) as pool,
    ):
        first = asyncio.create_task(pool.request("GET", "/first"))
        async with asyncio.timeout(5):
            await recorder.arrived.wait()
        with elapsed() as took, pytest.raises(h2pool.PoolTimeout) as timed_out:
            await pool.request("GET", "/second", timeout=h2pool.Timeouts(total=5, pool=0.2))
        assert 0.2 <= took[0] < 0.2 + SLACK
        assert_timeout_error(timed_out.value, h2pool.PoolTimeout)
        assert timed_out.value.never_processed
        assert f"GET {url(server.port)}/second: " in str(timed_out.value)
        assert recorder.paths == ["/first"]  # the second request was never sent
        assert pool.stats().pending == 0  # and it no longer waits

        release.set()
        assert (await asyncio.wait_for(first, 5)).status_code == 200
        # The slot is free again: the next request goes through.
        third = await pool.request("GET", "/third", timeout=h2pool.Timeouts(total=5, pool=0.2))
        assert third.status_code == 200
        assert recorder.paths == ["/first", "/third"]


# --- total ---------------------------------------------------------------------------------------


async def test_total_timeout_covers_retries_and_backoff() -> None:
    recorder = Recorder()
    # Constant 20 ms backoff without jitter, and attempts enough to outlast the total.
    retry = h2pool.RetryPolicy(
        max_attempts=100, backoff_initial=0.02, backoff_multiplier=1.0, jitter=0.0
    )
    async with (
        Server(recorder.reset_after(0.25)) as server,
        h2pool.Pool(url(server.port), retry=retry) as pool,
    ):
        # Attempts end by a reset at 0.25, 0.52 and 0.79 s; the fourth starts at 0.81 s and
        # is still waiting when the total runs out at 1.0 s, so the total is what ends it (a
        # retry whose backoff would cross the deadline is not made, and then the last error is
        # raised instead, which these numbers keep well away from).
        with elapsed() as took, pytest.raises(h2pool.RequestTimeout) as timed_out:
            await pool.request("GET", "/retried", timeout=1.0)
        assert 1.0 <= took[0] < 1.0 + SLACK
        assert_timeout_error(timed_out.value, h2pool.RequestTimeout)
        message = str(timed_out.value)
        endpoint = f"127.0.0.1:{server.port}"
        assert message.startswith(f"GET {url(server.port)}/retried to {endpoint}: timed out; ")
        assert f"endpoints: {endpoint} ready; last error: StreamReset: " in message
        assert "reset by the peer (INTERNAL_ERROR) (may have been processed)" in message
        assert timed_out.value.endpoint == endpoint
        assert len(recorder.paths) >= 3  # several attempts reached the server
        assert set(recorder.paths) == {"/retried"}


async def test_total_timeout_as_a_plain_number_sets_only_the_total() -> None:
    recorder = Recorder()
    timeouts = h2pool.Timeouts(total=30, read=0.2)
    async with (
        Server(recorder.never()) as server,
        h2pool.Pool(url(server.port), timeout=timeouts) as pool,
    ):
        # The pool's read timeout (0.2 s) still applies under a per-request total of 2 s (and
        # a read timeout is not retried).
        with elapsed() as took, pytest.raises(h2pool.ReadTimeout):
            await pool.request("GET", "/n", timeout=2.0)
        assert 0.2 <= took[0] < 0.2 + SLACK
        assert recorder.paths == ["/n"]


async def test_total_timeout_while_every_endpoint_is_down_names_the_last_error() -> None:
    async with mute_listener() as port:
        pass  # the listener is closed: its port now refuses connections
    async with h2pool.Pool(url(port), timeout=0.5, wait_for_ready=True) as pool:
        with elapsed() as took, pytest.raises(h2pool.RequestTimeout) as timed_out:
            await pool.request("GET", "/")
        assert 0.5 <= took[0] < 0.5 + SLACK
        message = str(timed_out.value)
        assert f"127.0.0.1:{port} transient_failure" in message
        assert "last error" in message, message
        assert "cannot connect" in message, message


async def test_total_timeouts_of_many_requests_fire_on_time_never_early() -> None:
    """Deadlines share timers per 10 ms slice: each still fires after its own total."""
    recorder = Recorder()
    async with Server(recorder.never()) as server, h2pool.Pool(url(server.port)) as pool:
        loop = asyncio.get_running_loop()

        async def timed(total: float) -> float:
            started = loop.time()
            with pytest.raises(h2pool.RequestTimeout):
                await pool.request("GET", "/", timeout=total)
            return loop.time() - started

        totals = [0.1 + 0.013 * i for i in range(20)]
        took = await asyncio.gather(*(timed(total) for total in totals))
        for total, spent in zip(totals, took, strict=True):
            assert total <= spent < total + SLACK
        assert pool.stats().active == 0
