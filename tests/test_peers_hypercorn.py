"""Self-tests of ``tests.peers.Hypercorn``: what hypercorn puts on the wire, seen raw."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import hpack
import pytest
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

from tests.peers import HOST, Hypercorn, HypercornFactory, run_curl, run_h2load
from tests.test_peers import CURL_VERSION_ON_STDERR, H2_PREFACE
from tests.waiting import eventually

pytestmark = [pytest.mark.peer, pytest.mark.timeout(30)]


NO_ERROR, PROTOCOL_ERROR = 0x0, 0x1


class RawH2c:
    """Just enough of an h2c client to see every frame a server sends, unprocessed.

    A real client library reacts to frames (acks, errors, closes); this one only records them,
    so the tests below see exactly what hypercorn puts on the wire and when.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()

    @classmethod
    async def connect(cls, port: int) -> RawH2c:
        """Open a connection and exchange SETTINGS (both sent, both acknowledged)."""
        reader, writer = await asyncio.open_connection(HOST, port)
        client = cls(reader, writer)
        writer.write(H2_PREFACE + SettingsFrame(0).serialize())
        acked = settings = False
        while not (acked and settings):
            frame = await client.next_frame()
            assert isinstance(frame, SettingsFrame), frame
            acked = acked or "ACK" in frame.flags
            settings = settings or "ACK" not in frame.flags
        client.send(SettingsFrame(0, flags=["ACK"]))
        return client

    def send(self, frame: Frame) -> None:
        self.writer.write(frame.serialize())

    def get(self, stream_id: int, path: str) -> None:
        """Send a complete GET request (HEADERS with END_STREAM) on ``stream_id``."""
        block = self.encoder.encode(
            [(":method", "GET"), (":scheme", "http"), (":authority", HOST), (":path", path)]
        )
        headers = HeadersFrame(stream_id, block, flags=["END_HEADERS", "END_STREAM"])
        self.send(headers)

    async def next_frame(self, timeout: float = 5.0) -> Frame | None:
        """Return the next frame, or None at EOF."""
        async with asyncio.timeout(timeout):
            try:
                header = await self.reader.readexactly(9)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise AssertionError("connection closed mid-frame") from exc
                return None
            frame, length = Frame.parse_frame_header(memoryview(header))
            frame.parse_body(memoryview(await self.reader.readexactly(length)))
            return frame

    async def frames_until_eof(self, timeout: float = 5.0) -> list[Frame]:
        """Return every frame received until the server closes the connection."""
        frames = []
        async with asyncio.timeout(timeout):
            while (frame := await self.next_frame()) is not None:
                frames.append(frame)
        return frames

    async def response_body(self, stream_id: int) -> bytes:
        """Read frames until ``stream_id`` ends; return its DATA. A GOAWAY fails the test."""
        body = b""
        while True:
            frame = await self.next_frame()
            assert frame is not None, f"EOF before stream {stream_id} ended"
            assert not isinstance(frame, GoAwayFrame), describe(frame)
            if frame.stream_id == stream_id:
                if isinstance(frame, DataFrame):
                    body += frame.data
                if "END_STREAM" in frame.flags:
                    return body

    async def aclose(self) -> None:
        self.writer.transport.abort()
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(5):
                await self.writer.wait_closed()


def describe(frame: Frame) -> tuple[str, int, int | None, int | None]:
    """A frame as (type, stream id, GOAWAY last_stream_id, GOAWAY error code), for asserts."""
    if isinstance(frame, GoAwayFrame):
        return ("GOAWAY", frame.stream_id, frame.last_stream_id, frame.error_code)
    return (type(frame).__name__, frame.stream_id, None, None)


async def test_hypercorn_serves_h2c_with_prior_knowledge(
    hypercorn_factory: HypercornFactory,
) -> None:
    server = hypercorn_factory()
    args = [*CURL_VERSION_ON_STDERR, "--http2-prior-knowledge"]
    assert await run_curl([*args, server.url("/x")], timeout=10) == (0, b"hello /x", b"2")
    posted = await run_curl([*args, "--data-binary", "echo me", server.url("/p")], timeout=10)
    assert posted == (0, b"echo me", b"2")
    started = time.monotonic()
    assert await run_curl([*args, server.url("/slow?ms=200")], timeout=10) == (
        0,
        b"hello /slow",
        b"2",
    )
    assert time.monotonic() - started >= 0.2
    assert "GET /x 2" in server.stdout_path.read_text()  # the access log, one line a request


async def test_hypercorn_goaway_after_keep_alive_max_requests(
    hypercorn_factory: HypercornFactory,
) -> None:
    server = hypercorn_factory(keep_alive_max_requests=2)
    client = await RawH2c.connect(server.port)
    try:
        for stream_id in (1, 3):
            client.get(stream_id, "/x")
            assert await client.response_body(stream_id) == b"hello /x"
        # Request 3 (stream 5), one past the limit, is what triggers the GOAWAY; it is counted
        # in last_stream_id, yet never answered.
        client.get(5, "/x")
        frame = await client.next_frame()
        assert frame is not None
        assert describe(frame) == ("GOAWAY", 0, 5, NO_ERROR)
        # Any frame from us after that is a protocol error to hypercorn.
        client.send(PingFrame(0, opaque_data=b"8 bytes!"))
        frames = await client.frames_until_eof()
        assert list(map(describe, frames)) == [("GOAWAY", 0, 5, PROTOCOL_ERROR)]
    finally:
        await client.aclose()


async def test_hypercorn_drops_streams_in_flight_at_its_goaway(
    hypercorn_factory: HypercornFactory,
) -> None:
    server = hypercorn_factory(keep_alive_max_requests=1, keep_alive_timeout=0.5)
    client = await RawH2c.connect(server.port)
    try:
        client.get(1, "/slow?ms=300")  # still running when the GOAWAY goes out
        client.get(3, "/x")
        # Nothing but the GOAWAY, then the keep-alive timeout closes the idle connection:
        # neither stream is answered, though both are at or below last_stream_id.
        frames = await client.frames_until_eof()
        assert list(map(describe, frames)) == [("GOAWAY", 0, 3, NO_ERROR)]
    finally:
        await client.aclose()

    # The application did run both requests: retrying them is not safe in general.
    def both_logged() -> bool:
        log = server.stdout_path.read_text()
        return '"GET /slow 2" 200' in log and '"GET /x 2" 200' in log

    await eventually(both_logged)


async def test_h2load_against_hypercorn_keep_alive_max_requests(
    hypercorn_factory: HypercornFactory,
) -> None:
    server = hypercorn_factory(keep_alive_max_requests=50, keep_alive_timeout=1)
    result = await run_h2load(server.url("/x"), requests=200, clients=1, streams=10, timeout=20)
    # h2load keeps up to 10 requests in flight, so when request 51 arrives at least 41 have
    # been answered; hypercorn answers no more after it. (50 in practice: the app is fast.)
    assert 41 <= result.succeeded <= 50, result.output
    assert result.status_2xx == result.succeeded
    # The rest fail as errors: the streams left in flight at the GOAWAY, and those never sent,
    # as h2load does not reconnect.
    assert result.failed == result.errored == 200 - result.succeeded
    assert result.started <= result.succeeded + 10


def test_hypercorn_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="not hypercorn configuration keys: keep_alive_max"):
        Hypercorn(options={"keep_alive_max": 5})


def test_hypercorn_stops_promptly_and_is_reaped(tmp_path: Path) -> None:
    with Hypercorn(log_dir=tmp_path) as server:
        assert server.running
        assert "keep_alive_max_requests = 1000\n" in server.config_path.read_text()
        pid = server.pid
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert (server.running, server.returncode) == (False, 0)
    assert pid is not None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert "Running on http://127.0.0.1:" in (tmp_path / "hypercorn.stderr").read_text()
