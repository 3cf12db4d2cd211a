"""A hand-driven HTTP/2 server for tests: plain h2 plus raw frames.

Real servers cannot be made to misbehave on cue (send GOAWAY between two
chosen frames, go silent, lower a limit mid-stream), so tests drive this one
step by step. It uses h2's plain ``H2Connection`` for bookkeeping and writes
crafted frames (GOAWAY, unknown types, ALTSVC) directly when h2 would refuse
or change its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hyperframe.frame import Frame, GoAwayFrame

EventT = TypeVar("EventT", bound=h2.events.Event)


class RawConnection(asyncio.Protocol):
    """One server-side connection, driven by the test."""

    def __init__(self, auto_settings: bool = True) -> None:
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.events: asyncio.Queue[h2.events.Event] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()
        self.silent = False  # when True, nothing is written (a blackholed peer)
        self.protocol_errors: list[Exception] = []
        self._auto_settings = auto_settings

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._auto_settings:
            self.h2.initiate_connection()
            self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.protocol_errors.append(exc)
            return
        for event in events:
            self.events.put_nowait(event)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.silent and self.transport is not None:
            self.transport.write(data)

    def write_frame(self, frame: Frame) -> None:
        """Write a frame as is, without telling h2."""
        assert self.transport is not None
        self.flush()
        self.transport.write(frame.serialize())

    def write_raw(self, data: bytes) -> None:
        """Write raw bytes, without telling h2."""
        assert self.transport is not None
        self.flush()
        self.transport.write(data)

    def goaway(self, last_stream_id: int, error_code: int = 0, debug: bytes = b"") -> None:
        """Send GOAWAY while keeping h2's state open, so streams can go on."""
        frame = GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code)
        frame.additional_data = debug
        self.write_frame(frame)

    def unknown_frame(self, frame_type: int, payload: bytes, stream_id: int = 0) -> None:
        """Send a frame of a type h2 does not know (RFC 9113 section 5.5: ignored)."""
        header = struct.pack(">I", len(payload))[1:] + bytes([frame_type, 0])
        self.write_raw(header + struct.pack(">I", stream_id) + payload)

    async def next_event(self, kind: type[EventT], timeout: float = 5.0) -> EventT:
        """Wait for the next event of ``kind``, skipping the others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if isinstance(event, kind):
                    return event

    def respond(
        self, stream_id: int, body: bytes = b"", status: int = 200, end_stream: bool = True
    ) -> None:
        """Send response headers and an optional body."""
        self.h2.send_headers(
            stream_id, [(":status", str(status))], end_stream=not body and end_stream
        )
        if body:
            self.h2.send_data(stream_id, body, end_stream=end_stream)
        self.flush()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        assert self.transport is not None
        self.transport.abort()


class RawPeer:
    """A listening socket whose connections the test drives one by one."""

    def __init__(self, auto_settings: bool = True) -> None:
        self.connections: asyncio.Queue[RawConnection] = asyncio.Queue()
        self._every: list[RawConnection] = []
        self._auto_settings = auto_settings
        self._server: asyncio.Server | None = None
        self.port = 0

    def _factory(self) -> RawConnection:
        connection = RawConnection(self._auto_settings)
        self._every.append(connection)
        self.connections.put_nowait(connection)
        return connection

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def accept(self, timeout: float = 5.0) -> RawConnection:
        async with asyncio.timeout(timeout):
            return await self.connections.get()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self._every:
            if connection.transport is not None:
                connection.transport.abort()
        await self._server.wait_closed()


@contextlib.asynccontextmanager
async def raw_peer(auto_settings: bool = True) -> AsyncIterator[RawPeer]:
    """Run a :class:`RawPeer` for the duration of the block."""
    peer = RawPeer(auto_settings)
    await peer.start()
    try:
        yield peer
    finally:
        await peer.close()
