"""The request path's fast paths: taken, and the same on the wire and in h2's state as h2's own.

``Connection.send_request`` and ``Connection.send_data_frame`` (``_core/h2compat.py``)
write HEADERS and DATA frames without h2's ``send_headers``/``send_data``;
``Session.send_or_queue`` sends a small body right behind its HEADERS instead of
queueing it for the pump. Each is compared here with plain h2 doing the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from h2.settings import SettingCodes
from hpack import NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

import h2pool
from h2pool._core.config import H2Config
from h2pool._core.h2compat import Connection
from h2pool._core.session import Session
from h2pool._pool import outgoing
from tests.rawpeer import raw_peer

Block = list[tuple[bytes, bytes]]


def _pair(max_frame_size: int = 16_384) -> tuple[Connection, h2.connection.H2Connection]:
    """h2pool's client connection and plain h2's, both past the preface, peer settings applied."""
    ours = Connection(client_side=True, config=H2Config(), concurrency=100, outbound_open=lambda: 0)
    plain = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
    )
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    server.update_settings({SettingCodes.MAX_FRAME_SIZE: max_frame_size})
    settings_bytes = server.data_to_send()
    for conn in (ours, plain):
        conn.initiate_connection()
        conn.receive_data(settings_bytes)
        conn.data_to_send()  # the preface and the SETTINGS ACK
    return ours, plain


def _state(conn: h2.connection.H2Connection, stream_id: int) -> dict[str, Any]:
    """What h2 keeps of a connection and one stream, for comparison."""
    stream = conn.streams[stream_id]
    return {
        "connection": conn.state_machine.state,
        "highest": conn.highest_outbound_stream_id,
        "window": conn.outbound_flow_control_window,
        "stream": stream.state_machine.state,
        "client": stream.state_machine.client,
        "headers_sent": stream.state_machine.headers_sent,
        "stream_window": stream.outbound_flow_control_window,
        "method": stream.request_method,
        "authority": stream._authority,
        "table": list(conn.encoder.header_table.dynamic_entries),
    }


def _frames(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each frame in ``data``."""
    while data:
        length = int.from_bytes(data[:3], "big")
        yield data[3], data[4], int.from_bytes(data[5:9], "big"), data[9 : 9 + length]
        data = data[9 + length :]


def _request(path: bytes, *extra: tuple[bytes, bytes]) -> Block:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"example.test"),
        (b":path", path),
        *extra,
    ]


_FIELD = st.tuples(
    st.from_regex(rb"\A[a-z][a-z0-9-]{0,12}\Z", fullmatch=True),
    st.binary(max_size=40).map(lambda value: value.replace(b"\n", b"").strip()),
)


@settings(max_examples=60, deadline=None)
@given(
    fields=st.lists(_FIELD, max_size=8),
    end_stream=st.booleans(),
    bodies=st.lists(st.binary(max_size=300), max_size=3),
    never_indexed=st.booleans(),
)
def test_fast_sends_write_what_h2_writes(
    fields: Block, end_stream: bool, bodies: list[bytes], never_indexed: bool
) -> None:
    ours, plain = _pair()
    extra: Block = list(fields)
    if never_indexed:
        extra.append(NeverIndexedHeaderTuple(b"authorization", b"secret"))
    for stream_id in (1, 3):  # the second request finds its fields indexed
        block = _request(b"/svc/Method", *extra)
        ours.send_request(stream_id, block, end_stream)
        plain.send_headers(stream_id, block, end_stream=end_stream)
        assert ours.data_to_send() == plain.data_to_send()
        assert _state(ours, stream_id) == _state(plain, stream_id)
        if end_stream:
            continue
        for index, body in enumerate(bodies):
            last = index == len(bodies) - 1
            ours.send_data_frame(stream_id, body, last)
            plain.send_data(stream_id, body, end_stream=last)
            assert ours.data_to_send() == plain.data_to_send()
            assert _state(ours, stream_id) == _state(plain, stream_id)


def test_a_block_larger_than_a_frame_goes_as_continuation_frames() -> None:
    ours, plain = _pair()
    block = _request(b"/big", (b"x-big", b"v" * 40_000))  # two CONTINUATION frames
    ours.send_request(1, block, True)
    plain.send_headers(1, block, end_stream=True)
    data = ours.data_to_send()
    assert data == plain.data_to_send()
    kinds = [(kind, flags) for kind, flags, _, _ in _frames(data)]
    assert kinds == [(0x1, 0x1), (0x9, 0x0), (0x9, 0x4)]  # END_STREAM first, END_HEADERS last
    assert _state(ours, 1) == _state(plain, 1)


def test_data_frames_keep_h2s_limits() -> None:
    ours, _ = _pair()
    ours.send_request(1, _request(b"/"), False)
    with pytest.raises(h2.exceptions.FrameTooLargeError):
        ours.send_data_frame(1, b"x" * 16_385, False)
    ours.send_data_frame(1, b"x" * 16_384, False)
    ours.send_data_frame(1, b"x" * 16_384, False)
    ours.send_data_frame(1, b"x" * 16_384, False)
    with pytest.raises(h2.exceptions.FlowControlError):  # 65,535 - 3 x 16,384 = 16,383 left
        ours.send_data_frame(1, b"x" * 16_384, False)
    ours.send_data_frame(1, b"x" * 16_383, True)
    with pytest.raises(h2.exceptions.ProtocolError):
        ours.send_data_frame(1, b"", True)  # the stream's send half is closed
    with pytest.raises(h2.exceptions.ProtocolError):
        ours.send_request(1, _request(b"/"), True)  # a stream id cannot be reused


def _session() -> Session:
    session = Session(
        client_side=True, config=H2Config(), concurrency=100, now=0.0, ping_interval=5
    )
    session.take_output()
    return session


def test_a_small_body_is_sent_behind_its_headers_unless_output_waits() -> None:
    session = _session()
    first = session.open_stream(_request(b"/a"), end_stream=False, checked=True)
    stream = session.streams[first]
    assert not session.send_or_queue(stream, memoryview(b"hello"), True)  # sent now
    kinds = [(kind, flags, sid) for kind, flags, sid, _ in _frames(bytes(session.take_output()))]
    assert kinds == [(0x1, 0x4, first), (0x0, 0x1, first)]  # HEADERS, DATA with END_STREAM
    assert stream.send is h2pool._core.streams.SendState.CLOSED
    assert not stream.outbound
    assert not session.scheduler.ready

    # A body larger than the window waits for the pump; the next one queues behind it
    # (RFC 9218 order is the scheduler's to keep).
    second = session.open_stream(_request(b"/b"), end_stream=False, checked=True)
    third = session.open_stream(_request(b"/c"), end_stream=False, checked=True)
    assert session.send_or_queue(session.streams[second], memoryview(b"x" * 70_000), True)
    assert session.send_or_queue(session.streams[third], memoryview(b"y"), True)
    assert set(session.scheduler.ready) == {second, third}


@pytest.fixture
def h2_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Records every call of h2's own ``send_headers`` and ``send_data``, by side."""
    calls: list[tuple[str, str]] = []
    for name in ("send_headers", "send_data"):
        original = getattr(h2.connection.H2Connection, name)

        def spy(self: Any, *args: Any, _name: str = name, _f: Any = original, **kw: Any) -> Any:
            calls.append(("client" if self.config.client_side else "server", _name))
            return _f(self, *args, **kw)

        monkeypatch.setattr(h2.connection.H2Connection, name, spy)
    return calls


async def test_a_pool_post_takes_the_fast_paths_and_arrives_whole(
    h2_sends: list[tuple[str, str]],
) -> None:
    body = b"\x00\x00\x00\x00\x0chello world!"
    async with (
        raw_peer() as peer,
        h2pool.Pool(f"http://127.0.0.1:{peer.port}", functional_timeout=5) as pool,
    ):
        connection_task = peer.accept()
        request = asyncio.ensure_future(
            pool.request(
                "POST",
                "/bench.Svc/Echo",
                headers={"content-type": "application/grpc", "te": "trailers"},
                content=body,
            )
        )
        server = await connection_task
        received = await server.next_event(h2.events.RequestReceived)
        data = await server.next_event(h2.events.DataReceived)
        ended = await server.next_event(h2.events.StreamEnded)
        assert data.data == body
        assert data.stream_ended is not None
        assert ended.stream_id == received.stream_id == data.stream_id
        fields: list[Any] = list(received.headers)  # str: the raw peer decodes them
        assert fields == [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", f"127.0.0.1:{peer.port}"),
            (":path", "/bench.Svc/Echo"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("content-length", str(len(body))),
        ]
        server.h2.acknowledge_received_data(len(body), data.stream_id)
        server.respond(received.stream_id, b"ok")
        response = await request
        assert response.status_code == 200
        assert response.content == b"ok"
    # The client never went through h2's own senders; the raw peer's respond() did.
    assert h2_sends == [("server", "send_headers"), ("server", "send_data")]


async def test_the_h2_state_after_a_fast_post_is_consistent() -> None:
    body = b"z" * 1000
    async with raw_peer() as peer:
        client = await h2pool.open_connection("127.0.0.1", peer.port, functional_timeout=5)
        try:
            server = await peer.accept()
            stream_id = await client.start_request(_request(b"/p"), checked=True)
            client.queue_data(stream_id, body, end_stream=True)
            received = await server.next_event(h2.events.DataReceived)
            assert received.data == body
            assert received.stream_ended is not None
            conn = client._session.conn
            assert conn.outbound_flow_control_window == 65_535 - len(body)
            h2_stream = conn.streams[stream_id]
            assert h2_stream.outbound_flow_control_window == 65_535 - len(body)
            assert h2_stream.state_machine.state is h2.stream.StreamState.HALF_CLOSED_LOCAL
            server.respond(stream_id, b"done")
            headers, content, _ = await client.recv_whole_response(stream_id)
            assert dict(headers)[":status"] == "200"
            assert content == b"done"
            assert stream_id not in conn.streams
            assert client.open_streams == 0
        finally:
            client.close_connection()


def _events(conn: h2.connection.H2Connection, data: bytes, piece: int) -> list[tuple[str, str]]:
    """The events of ``data`` received ``piece`` bytes at a time, as comparable values.

    The name of the error raised, if any, ends the list.
    """
    seen: list[tuple[str, str]] = []
    try:
        for start in range(0, len(data), piece):
            for event in conn.receive_data(data[start : start + piece]):
                fields = {name: repr(value) for name, value in vars(event).items()}
                seen.append((type(event).__name__, repr(fields)))
    except h2.exceptions.ProtocolError as exc:
        seen.append((type(exc).__name__, ""))
    return seen


@pytest.mark.parametrize(
    "answer",
    [
        "whole",  # HEADERS, DATA, trailers: a gRPC answer
        "informational",  # 103, then the response
        "headers only",  # HEADERS with END_STREAM (a gRPC Trailers-Only answer)
        "too long",  # more DATA than content-length: refused by h2
        "trailers without end",  # refused by h2
        "informational with end",  # refused by h2
        "padded",  # DATA with padding: left to h2
        "continued",  # trailers in HEADERS and CONTINUATION frames: left to h2
    ],
)
@pytest.mark.parametrize("piece", [1, 7, 100_000])
def test_received_frames_give_what_h2_gives(
    answer: str, piece: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, plain = _pair()
    ours.send_request(1, _request(b"/p"), True)
    plain.send_headers(1, _request(b"/p"), end_stream=True)
    request = plain.data_to_send()
    assert ours.data_to_send() == request
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    preface = h2.connection.H2Connection()  # the client's preface, as any client sends it
    preface.initiate_connection()
    server.initiate_connection()
    server.receive_data(preface.data_to_send() + request)
    server.data_to_send()  # its SETTINGS and ACK: the clients have had the peer's already
    length = [(b"content-length", b"2")] if answer == "too long" else []
    if answer.startswith("informational"):
        server.send_headers(1, [(b":status", b"103"), (b"link", b"</a>")])
    frames = server.data_to_send()
    if answer == "informational with end":
        frames = frames[:4] + bytes([frames[4] | 0x1]) + frames[5:]  # END_STREAM on the 103
    server.send_headers(1, [(b":status", b"200"), *length], end_stream=answer == "headers only")
    if answer != "headers only":
        server.send_data(1, b"abc", pad_length=3 if answer == "padded" else None)
        frames += server.data_to_send()
        big = [(b"x-big", b"v" * 20_000)] if answer == "continued" else []
        server.send_headers(1, [(b"grpc-status", b"0"), *big], end_stream=True)
    last = server.data_to_send()
    if answer == "trailers without end":
        last = last[:4] + bytes([last[4] & ~0x1]) + last[5:]  # END_STREAM taken off
    frames += last
    flags_built: list[object] = []
    build = h2.stream.H2Stream._build_hdr_validation_flags

    def counted(stream: h2.stream.H2Stream, events: Any) -> Any:
        flags_built.append(stream)
        return build(stream, events)

    monkeypatch.setattr(h2.stream.H2Stream, "_build_hdr_validation_flags", counted)
    taken_by_h2: list[str] = []
    for name in ("_receive_data_frame", "_receive_headers_frame"):
        method = getattr(h2.connection.H2Connection, name)

        def counted_frame(conn: Any, frame: Any, _name: str = name, _f: Any = method) -> Any:
            taken_by_h2.append(_name)
            return _f(conn, frame)

        monkeypatch.setattr(h2.connection.H2Connection, name, counted_frame)
    mine = _events(ours, frames, piece)
    assert not flags_built  # no flags for checks that are off
    if answer not in ("padded", "continued", "informational with end"):
        assert not taken_by_h2  # frames taken without h2's frame objects
    theirs = _events(plain, frames, piece)
    assert flags_built or answer == "informational with end"  # h2 refuses it before
    assert mine == theirs
    refused = {
        "too long": "InvalidBodyLengthError",
        "trailers without end": "ProtocolError",
        "informational with end": "ProtocolError",
    }
    if answer in refused:
        assert theirs[-1] == (refused[answer], "")
    else:
        assert theirs[-1][0] == "StreamEnded"
    if 1 in plain.streams:
        assert _state(ours, 1) == _state(plain, 1)


_ANY_FIELD = st.tuples(
    st.sampled_from(
        [b"x-a", b"X-B", b"te", b"connection", b":path", b"bad name", b"authorization"]
    ),
    st.sampled_from([b"v", b"trailers", b" padded", b"a\nb", b"w" * 300]),
)


@settings(max_examples=200, deadline=None)
@given(fields=st.lists(_ANY_FIELD, max_size=5))
def test_checked_headers_remembered_give_what_checking_gives(fields: Block) -> None:
    def outcome() -> object:
        try:
            return [(type(field), field) for field in outgoing.checked_headers(list(fields))]
        except h2pool.LocalProtocolError as exc:
            return str(exc)

    outgoing._CHECKED.clear()
    first = outcome()  # checked, and remembered where it may be
    assert outcome() == first  # the second time from what was remembered


def test_fields_checked_before_are_not_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
    assert outgoing.checked_headers(fields) == fields
    monkeypatch.setattr(outgoing, "encode_headers", None)  # any check would fail
    assert outgoing.checked_headers(list(fields)) == fields
    with pytest.raises(TypeError):
        outgoing.checked_headers([*fields, (b"x-new", b"1")])


def test_a_closed_connection_refuses_frames_as_h2_does() -> None:
    ours, plain = _pair()
    ours.send_request(1, _request(b"/"), True)
    plain.send_headers(1, _request(b"/"), end_stream=True)
    for conn in (ours, plain):
        assert conn.state_machine.state is h2.connection.ConnectionState.CLIENT_OPEN
        conn.close_connection()  # h2's own: its state machine is CLOSED
    with pytest.raises(h2.exceptions.ProtocolError):
        ours.send_request(3, _request(b"/"), True)
    with pytest.raises(h2.exceptions.ProtocolError):
        plain.send_headers(3, _request(b"/"), end_stream=True)
