"""The reference clients: the least a Python program can do with h2's state machine.

* :class:`CallbackGets` is the ceiling for small GETs: one connection, no coroutine, task or
  future per request. The callback that sees a stream end starts the next request, and each
  received batch ends in one ``transport.write``.
* :class:`PlainH2` awaits a future per request, as the first version of h2pool's benchmark did
  (kept for continuity); it also uploads with flow control, for the transfer benchmarks.

Both keep h2's defaults (header validation and normalization on), send header names and values
as bytes, and acknowledge received data at once (h2 batches the WINDOW_UPDATEs it implies).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import h2.config
import h2.connection
import h2.events
import h2.settings

__all__ = ["CallbackGets", "PlainH2", "connect", "get_headers"]

Headers = list[tuple[bytes, bytes]]


def get_headers(port: int, path: str, method: str = "GET") -> Headers:
    """The request header block the plain clients send."""
    return [
        (b":method", method.encode()),
        (b":path", path.encode()),
        (b":scheme", b"http"),
        (b":authority", f"127.0.0.1:{port}".encode()),
    ]


class _PlainProtocol(asyncio.Protocol):
    """Connection set-up shared by the plain clients: preface, windows, and a ready future.

    Args:
        window: The receive window of each stream and of the connection; h2's 65,535 if None.
    """

    def __init__(self, window: int | None = None) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        self._window = window
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(): uvloop's transports do not derive from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.conn.initiate_connection()
        if self._window is not None:
            self.conn.increment_flow_control_window(self._window - 65_535)
        self.transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        error = exc or ConnectionError("connection closed")
        if not self.ready.done():
            self.ready.set_exception(error)
        self._abort(error)

    def _abort(self, error: Exception) -> None:
        """Fail whatever waits on this connection."""

    def _settings_received(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close the connection (no GOAWAY: the benchmark is over)."""
        if self.transport is not None:
            self.transport.close()


class CallbackGets(_PlainProtocol):
    """Closed-loop GETs driven from ``data_received``: the Python ceiling.

    Up to ``concurrency`` requests are in flight (at most the peer's MAX_CONCURRENT_STREAMS on
    the one connection). Bodies are counted, not kept; :meth:`run` checks the total.
    """

    def __init__(self) -> None:
        super().__init__()
        self._headers: Headers = []
        self._remaining = 0
        self._in_flight = 0
        self.completed = 0
        self.body_bytes = 0
        self._stopping = False
        self._done: asyncio.Future[None] | None = None

    async def run(self, headers: Headers, requests: int, concurrency: int, seconds: float) -> int:
        """Send up to ``requests`` GETs, ``concurrency`` at a time, for at most ``seconds``.

        Args:
            headers: The request's header block.
            requests: Requests to complete at most.
            concurrency: Requests in flight at once.
            seconds: After this, no new request is started; those in flight finish.

        Returns:
            How many requests completed.
        """
        await self.ready
        loop = asyncio.get_running_loop()
        self._headers = headers
        self._remaining, self.completed, self.body_bytes = requests, 0, 0
        self._stopping = False
        self._done = loop.create_future()
        limit = self.conn.remote_settings.max_concurrent_streams
        stop = loop.call_later(seconds, self._stop)
        for _ in range(min(concurrency, limit, requests)):
            self._start()
        self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self._done), seconds + 10)
        finally:
            stop.cancel()
        return self.completed

    def _stop(self) -> None:
        self._stopping = True

    def _start(self) -> None:
        self._remaining -= 1
        self._in_flight += 1
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, self._headers, end_stream=True)

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.body_bytes += len(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.completed += 1
                self._in_flight -= 1
                if self._remaining > 0 and not self._stopping:
                    self._start()
                elif not self._in_flight and self._done is not None and not self._done.done():
                    self._done.set_result(None)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._settings_received()
            elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                self._fail(event)
        self._flush()

    def _fail(self, event: h2.events.Event) -> None:
        self._abort(RuntimeError(f"the server ended the exchange: {event}"))

    def _abort(self, error: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)


class PlainH2(_PlainProtocol):
    """Requests awaited one future each; uploads follow flow control.

    Args:
        window: The receive window of each stream and of the connection; h2's 65,535 if None.
    """

    def __init__(self, window: int | None = None) -> None:
        super().__init__(window)
        self._waiters: dict[int, asyncio.Future[bytes]] = {}
        self._bodies: dict[int, list[bytes]] = {}
        self._uploads: dict[int, memoryview] = {}

    async def request(self, headers: Sequence[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
        """Send a request (with ``body``, if any) and return the response body.

        Raises:
            RuntimeError: The stream was reset or the connection ended.
        """
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters[stream_id] = waiter
        self._bodies[stream_id] = []
        if body:
            self._uploads[stream_id] = memoryview(body)
            self._send_uploads()
        self._flush()
        return await waiter

    def _send_uploads(self) -> None:
        """Send as much of each pending upload as the flow-control windows allow."""
        frame = self.conn.max_outbound_frame_size
        for stream_id, rest in list(self._uploads.items()):
            window = self.conn.local_flow_control_window(stream_id)
            while rest and window > 0:
                size = min(window, frame, len(rest))
                self.conn.send_data(stream_id, rest[:size].tobytes())
                rest, window = rest[size:], window - size
            if rest:
                self._uploads[stream_id] = rest
            else:
                del self._uploads[stream_id]
                self.conn.end_stream(stream_id)

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self._bodies[event.stream_id].append(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                body = b"".join(self._bodies.pop(event.stream_id))
                self._waiters.pop(event.stream_id).set_result(body)
            elif isinstance(event, h2.events.WindowUpdated):
                self._send_uploads()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._settings_received()
                self._send_uploads()
            elif isinstance(event, h2.events.StreamReset):
                self._fail(event.stream_id, f"stream reset with error {event.error_code!r}")
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._abort(RuntimeError(f"GOAWAY {event.error_code!r}"))
        self._flush()

    def _abort(self, error: Exception) -> None:
        for stream_id in list(self._waiters):
            self._fail(stream_id, str(error))

    def _fail(self, stream_id: int, reason: str) -> None:
        self._uploads.pop(stream_id, None)
        self._bodies.pop(stream_id, None)
        waiter = self._waiters.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(RuntimeError(reason))


Plain = TypeVar("Plain", bound=_PlainProtocol)


async def connect(factory: Callable[[], Plain], port: int) -> Plain:
    """Open a plain client connection to 127.0.0.1:``port`` and wait for the server's SETTINGS."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(factory, "127.0.0.1", port)
    await protocol.ready
    return protocol
