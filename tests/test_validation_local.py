"""Malformed requests are refused before anything is sent, and h2pool's server refuses them too.

Issue 9's findings: a header value with ``\\n`` reached the server (which tore
the connection down), an empty header name raised ``IndexError``, an int or
None value ``AttributeError``, methods ``"GE T"`` and ``""`` were sent (and
h2pool's own server accepted them), ``content=dict`` failed with an
``async for`` TypeError. Each is checked against h2pool's own server: nothing
arrived there and no connection was opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

import h2pool
from h2pool._core.headers import request_problem
from tests.servers import Server

Call = Callable[[Any], Any]  # Any: the cases pass wrong types on purpose


class Counting:
    """A handler answering 204 that counts the requests that reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(
        self, proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
    ) -> None:
        self.paths.append(dict(headers)[":path"])
        await proto.start_response(stream_id, {":status": "204"}, end_stream=True)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, Counting]]:
    handler = Counting()
    async with Server(handler) as running:
        yield running, handler


# (call, error type, what the message must name)
REFUSED: list[tuple[str, Call, type[Exception], str]] = [
    (
        "newline in value",
        lambda p: p.get("/", headers={"x-a": "b\nc"}),
        h2pool.LocalProtocolError,
        "x-a",
    ),
    (
        "CR in value",
        lambda p: p.get("/", headers={"x-a": "b\rc"}),
        h2pool.LocalProtocolError,
        "x-a",
    ),
    (
        "NUL in value",
        lambda p: p.get("/", headers={"x-a": "b\x00"}),
        h2pool.LocalProtocolError,
        "x-a",
    ),
    (
        "newline in name",
        lambda p: p.get("/", headers={"x\na": "b"}),
        h2pool.LocalProtocolError,
        "name",
    ),
    ("empty name", lambda p: p.get("/", headers={"": "x"}), h2pool.LocalProtocolError, "name"),
    ("int value", lambda p: p.get("/", headers={"x-a": 1}), TypeError, "x-a"),
    ("None value", lambda p: p.get("/", headers={"x-a": None}), TypeError, "x-a"),
    ("int name", lambda p: p.get("/", headers={1: "x"}), TypeError, "name"),
    ("headers a str", lambda p: p.get("/", headers="x-a: b"), TypeError, "headers"),
    ("headers not pairs", lambda p: p.get("/", headers=[("x-a",)]), TypeError, "headers"),
    (
        "connection",
        lambda p: p.get("/", headers={"connection": "close"}),
        h2pool.LocalProtocolError,
        "connection",
    ),
    (
        "transfer-encoding",
        lambda p: p.get("/", headers={"Transfer-Encoding": "chunked"}),
        h2pool.LocalProtocolError,
        "transfer-encoding",
    ),
    (
        "keep-alive",
        lambda p: p.get("/", headers={"keep-alive": "5"}),
        h2pool.LocalProtocolError,
        "keep-alive",
    ),
    (
        "upgrade",
        lambda p: p.get("/", headers={"upgrade": "h2c"}),
        h2pool.LocalProtocolError,
        "upgrade",
    ),
    (
        "proxy-connection",
        lambda p: p.get("/", headers={"proxy-connection": "x"}),
        h2pool.LocalProtocolError,
        "proxy-connection",
    ),
    (
        "te not trailers",
        lambda p: p.get("/", headers={"te": "gzip"}),
        h2pool.LocalProtocolError,
        "te",
    ),
    (
        "pseudo-header",
        lambda p: p.get("/", headers={":path": "/x"}),
        h2pool.LocalProtocolError,
        ":path",
    ),
    ("method with a space", lambda p: p.request("GE T", "/"), h2pool.LocalProtocolError, "method"),
    ("empty method", lambda p: p.request("", "/"), h2pool.LocalProtocolError, "method"),
    ("non-ASCII method", lambda p: p.request("GÉT", "/"), h2pool.LocalProtocolError, "method"),
    ("method not a str", lambda p: p.request(b"GET", "/"), TypeError, "method"),
    ("path not a str", lambda p: p.request("GET", b"/"), TypeError, "path"),
    ("CR LF in path", lambda p: p.get("/a\r\nx: 1"), h2pool.LocalProtocolError, "path"),
    ("URL as path", lambda p: p.get("http://elsewhere/x"), ValueError, "path"),
    ("content dict", lambda p: p.post("/", content={"a": 1}), TypeError, "content"),
    ("content list", lambda p: p.post("/", content=[b"a"]), TypeError, "content"),
    ("content and json", lambda p: p.post("/", content=b"a", json={}), TypeError, "json"),
    ("json not serialisable", lambda p: p.post("/", json={"a": object()}), TypeError, "json"),
    ("json NaN", lambda p: p.post("/", json=float("nan")), ValueError, "json"),
    ("params of a wrong type", lambda p: p.get("/", params=5), TypeError, "params"),
    ("timeout a str", lambda p: p.get("/", timeout="5"), TypeError, "timeout"),
    ("timeout negative", lambda p: p.get("/", timeout=-1), ValueError, "timeout"),
    (
        "wait_for_ready a str",
        lambda p: p.get("/", wait_for_ready="yes"),
        TypeError,
        "wait_for_ready",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
async def test_refused_locally_nothing_sent_no_connection(
    server: tuple[Server, Counting], call: Call, error: type[Exception], named: str
) -> None:
    running, handler = server
    async with h2pool.Pool(f"http://127.0.0.1:{running.port}", min_connections=0) as pool:
        with pytest.raises(error) as refused:
            await call(pool)
        assert named in str(refused.value)
        assert "\n" not in str(refused.value).replace("\\n", "")
        assert not isinstance(refused.value, AssertionError | AttributeError | IndexError)
        assert running.protocols == []  # no connection was opened
        assert pool.stats().endpoints[0].state is h2pool.ConnectivityState.IDLE
        # The pool and the server are fine: a good request goes through.
        assert (await pool.get("/fine")).status_code == 204
    assert handler.paths == ["/fine"]


def test_local_protocol_error_is_a_value_error_and_an_h2pool_error() -> None:
    assert issubclass(h2pool.LocalProtocolError, ValueError)
    assert issubclass(h2pool.LocalProtocolError, h2pool.H2PoolError)
    assert h2pool.LocalProtocolError("x").never_processed


async def test_upper_case_names_are_sent_lower_case(server: tuple[Server, Counting]) -> None:
    running, _ = server
    seen: list[h2pool.HeaderList] = []

    async def keep(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
        seen.append(headers)
        await proto.start_response(stream_id, {":status": "204"}, end_stream=True)

    running.handler = keep
    async with h2pool.Pool(f"http://127.0.0.1:{running.port}") as pool:
        await pool.get("/", headers={"X-Mixed-Case": "Value"})
    assert ("x-mixed-case", "Value") in seen[0]


async def test_core_client_refuses_a_method_that_is_not_a_token(
    server: tuple[Server, Counting],
) -> None:
    running, handler = server
    proto = await h2pool.open_connection("127.0.0.1", running.port)
    try:
        for method in ("GE T", ""):
            with pytest.raises(h2pool.LocalProtocolError, match="method"):
                await proto.start_request({":method": method, ":path": "/"}, end_stream=True)
        with pytest.raises(h2pool.LocalProtocolError, match="path"):
            await proto.start_request({":method": "GET", ":path": "/a b"}, end_stream=True)
    finally:
        proto.close_connection()
    assert handler.paths == []


# ----------------------------------------------------------------------
# h2pool's server: a malformed request is a stream error, the rest goes on


def _raw_client() -> h2.connection.H2Connection:
    """A client that sends what it is given (h2's own checks off)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
    )
    conn.initiate_connection()
    return conn


def _request(
    method: bytes = b"GET", path: bytes = b"/ok", **extra: bytes
) -> list[tuple[bytes, bytes]]:
    block = [(b":method", method), (b":scheme", b"http"), (b":authority", b"h"), (b":path", path)]
    return block + [(name.replace("_", "-").encode(), value) for name, value in extra.items()]


MALFORMED: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("method with a space", _request(b"GE T")),
    ("empty method", _request(b"")),
    ("path with a space", _request(path=b"/a b")),
    ("path with a control", _request(path=b"/a\x01")),
    ("non-ASCII path", _request(path="/é".encode())),
    ("bad field name", [*_request(), (b"bad name", b"x")]),
    ("upper-case field name", [*_request(), (b"X-Upper", b"x")]),
    ("empty field name", [*_request(), (b"", b"x")]),
    ("newline in value", [*_request(), (b"x-a", b"b\nc")]),
    ("connection", _request(connection=b"close")),
    ("transfer-encoding", _request(transfer_encoding=b"chunked")),
    ("keep-alive", _request(keep_alive=b"5")),
    ("upgrade", _request(upgrade=b"h2c")),
    ("te gzip", _request(te=b"gzip")),
    ("no :scheme", [(b":method", b"GET"), (b":authority", b"h"), (b":path", b"/")]),
    ("host differs from :authority", _request(host=b"other")),
    ("pseudo-header after a regular field", [*_request()[:3], (b"x-a", b"1"), (b":path", b"/")]),
    ("response pseudo-header", [*_request(), (b":status", b"200")]),
    ("no :authority or host", [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]),
]


async def test_server_resets_each_malformed_request_and_serves_the_others(
    server: tuple[Server, Counting],
) -> None:
    running, handler = server
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    conn = _raw_client()
    expected: dict[int, str] = {}
    good: list[int] = []
    for index, (name, block) in enumerate(MALFORMED):
        good_id = conn.get_next_available_stream_id()
        conn.send_headers(good_id, _request(path=f"/ok{index}".encode()), end_stream=True)
        good.append(good_id)
        bad_id = conn.get_next_available_stream_id()
        # Half of them with a body still to come, whose DATA must not disturb anything.
        conn.send_headers(bad_id, block, end_stream=index % 2 == 0)
        if index % 2:
            conn.send_data(bad_id, b"body", end_stream=True)
        expected[bad_id] = name
    writer.write(conn.data_to_send())
    resets: dict[int, int] = {}
    answered: dict[int, bytes] = {}
    ended: set[int] = set()
    try:
        async with asyncio.timeout(10):
            while len(resets) < len(expected) or len(ended) < len(good):
                data = await reader.read(65536)
                assert data, "the server closed the connection"
                for event in conn.receive_data(data):
                    assert not isinstance(event, h2.events.ConnectionTerminated), event
                    if isinstance(event, h2.events.StreamReset):
                        resets[event.stream_id] = event.error_code
                    elif isinstance(event, h2.events.ResponseReceived):
                        answered[event.stream_id] = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.add(event.stream_id)
                writer.write(conn.data_to_send())
    finally:
        writer.close()
    assert {expected[sid]: code for sid, code in resets.items()} == {
        name: ErrorCodes.PROTOCOL_ERROR for name, _ in MALFORMED
    }
    assert answered == dict.fromkeys(good, b"204")
    # Only the well-formed requests were handed to recv_request().
    assert sorted(handler.paths) == sorted(f"/ok{i}" for i in range(len(MALFORMED)))


WELL_FORMED: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("plain GET", _request()),
    ("host equal to :authority", _request(host=b"h")),
    (
        "host without :authority",
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"h")],
    ),
    ("OPTIONS *", _request(b"OPTIONS", b"*")),
    ("te trailers", _request(te=b"trailers")),
    ("an extension method", _request(b"PROPFIND")),
    ("percent-encoded path", _request(path=b"/a%20b?q=%C3%A9")),
    ("CONNECT", [(b":method", b"CONNECT"), (b":authority", b"h:443")]),
    (
        "extended CONNECT (RFC 8441)",
        [*_request(b"CONNECT"), (b":protocol", b"websocket")],
    ),
]


@pytest.mark.parametrize(
    "block", [case[1] for case in WELL_FORMED], ids=[case[0] for case in WELL_FORMED]
)
def test_well_formed_requests_pass_the_servers_check(block: list[tuple[bytes, bytes]]) -> None:
    assert request_problem(block, received=True) is None


@pytest.mark.parametrize(
    "block", [case[1] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_requests_fail_the_servers_check(block: list[tuple[bytes, bytes]]) -> None:
    assert request_problem(block, received=True) is not None
