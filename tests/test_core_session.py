"""The sans-I/O Session, driven in memory against a plain h2 server.

No sockets, no event loop: bytes go back and forth between a client
:class:`~h2pool._core.session.Session` and h2's own ``H2Connection`` playing
the server, while hypothesis picks the order of requests, answers, resets,
reads and GOAWAYs. After every step the stream accounting must be exact.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from hypothesis import given, settings
from hypothesis import strategies as st

import h2pool
from h2pool._core.config import H2Config
from h2pool._core.h2compat import check_h2_version
from h2pool._core.session import Session
from h2pool._core.states import ConnectionState, Drain
from h2pool._core.streams import RecvState, SendState

GET = {":method": "GET", ":path": "/"}


class Pair:
    """A client Session wired to an h2 server through in-memory byte exchange."""

    def __init__(self, concurrency: int = 100, server_limit: int = 100) -> None:
        self.client = Session(
            client_side=True,
            config=H2Config(),
            concurrency=concurrency,
            now=0.0,
            ping_interval=10.0,
            authority="example",
        )
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.server.initiate_connection()
        self.server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server_limit})
        self.client.conn.initiate_connection()
        self.requests: list[int] = []
        self.exchange()

    def exchange(self) -> None:
        """Move bytes both ways until neither side has anything to send."""
        for _ in range(20):
            to_server = bytes(self.client.take_output())
            if to_server:
                for event in self.server.receive_data(to_server):
                    if isinstance(event, h2.events.RequestReceived):
                        self.requests.append(event.stream_id)
            to_client = self.server.data_to_send()
            if to_client:
                self.client.receive(to_client, now=1.0)
            if not to_server and not to_client:
                return

    def respond(self, stream_id: int, body: bytes, end: bool = True) -> None:
        self.server.send_headers(stream_id, [(b":status", b"200")], end_stream=not body and end)
        if body:
            self.server.send_data(stream_id, body, end_stream=end)

    def check(self) -> None:
        """The invariants the redesign exists for."""
        session = self.client
        open_local = [s for s in session.streams.values() if session.locally_initiated(s.id)]
        assert session.outbound_open == len(open_local)
        assert session.outbound_open >= 0
        assert 0 <= session.free_slots <= session.max_streams
        assert not set(session.streams) & set(session.unread)
        for stream in session.streams.values():
            assert not stream.done  # a done stream has left the table
        for stream in session.unread.values():
            assert stream.done
            assert stream.chunks
        wakeups = session.wakeups
        wakeups.receivers.clear()
        wakeups.senders.clear()
        wakeups.events.clear()


def test_unread_complete_response_then_reset_counts_once() -> None:
    pair = Pair()
    stream_id = pair.client.open_stream(GET, end_stream=True)
    pair.exchange()
    pair.respond(stream_id, b"body")
    pair.exchange()
    stream = pair.client.stream(stream_id)
    assert stream.recv is RecvState.ENDED
    assert stream.send is SendState.CLOSED
    assert pair.client.outbound_open == 0
    assert stream_id in pair.client.unread
    pair.client.reset(stream_id, ErrorCodes.CANCEL)
    pair.client.reset(stream_id, ErrorCodes.CANCEL)
    assert pair.client.outbound_open == 0
    assert stream_id not in pair.client.unread
    pair.check()


def test_goaway_drains_then_closes() -> None:
    pair = Pair()
    low = pair.client.open_stream(GET, end_stream=True)
    high = pair.client.open_stream(GET, end_stream=True)
    pair.exchange()
    # A GOAWAY the way a server drains: h2's close_connection names the last id.
    pair.server.close_connection(last_stream_id=low)
    pair.client.receive(pair.server.data_to_send(), now=2.0)
    session = pair.client
    assert session.state is ConnectionState.DRAINING
    assert session.drain is Drain.REMOTE
    assert session.free_slots == 0
    refused = session.stream(high).error
    assert isinstance(refused, h2pool.StreamRefused)
    assert refused.never_processed
    assert session.outbound_open == 1
    with pytest.raises(h2pool.ConnectionClosed):
        session.check_new_stream()
    pair.check()


def test_the_h2_version_gate() -> None:
    check_h2_version("4.1.0")
    check_h2_version("4.4.1")
    for bad in ("4.0.0", "3.2.0", "5.0.0", "nonsense"):
        with pytest.raises(ImportError, match="h2"):
            check_h2_version(bad)


ops = st.lists(
    st.tuples(
        st.sampled_from(["open", "open_post", "respond", "respond_head", "rst", "reset", "read"]),
        st.integers(min_value=0, max_value=50),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops, limit=st.integers(min_value=1, max_value=6))
def test_any_interleaving_keeps_exact_counts(ops: list[tuple[str, int]], limit: int) -> None:
    pair = Pair(server_limit=limit)
    session = pair.client
    headed: set[int] = set()  # streams the server sent headers on
    for op, n in ops:
        server_open = pair.server.streams
        known = sorted(s for s in pair.requests if s in server_open and server_open[s].open)
        every = sorted(set(session.streams) | set(session.unread) | set(session.finished))
        if op.startswith("open"):
            if session.free_slots:
                stream_id = session.open_stream(GET, end_stream=op == "open")
                if op == "open_post":
                    stream = session.stream(stream_id)
                    session.queue(stream, (memoryview(b"x" * n), True), True)
                    session.pump()
        elif op.startswith("respond") and known:
            stream_id = known[n % len(known)]
            end = op == "respond"
            if stream_id in headed:
                pair.server.send_data(stream_id, b"y" * n, end_stream=end)
            else:
                headed.add(stream_id)
                pair.respond(stream_id, b"y" * n, end=end)
        elif op == "rst" and known:
            pair.server.reset_stream(known[n % len(known)], ErrorCodes.INTERNAL_ERROR)
        elif op == "reset" and every:
            session.reset(every[n % len(every)], ErrorCodes.CANCEL)
        elif op == "read" and every:
            stream = session.stream(every[n % len(every)])
            if stream.chunks:
                chunk = stream.chunks.popleft()
                session.consumed(stream, len(chunk))
        pair.exchange()
        pair.check()
    for stream_id in sorted(set(session.streams) | set(session.unread)):
        session.reset(stream_id, ErrorCodes.CANCEL)
    pair.exchange()
    pair.check()
    assert session.outbound_open == 0
    assert session.free_slots == session.max_streams
