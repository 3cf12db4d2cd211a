"""What a response offers: Headers, text, json(), raise_for_status(), elapsed, request.

Against h2pool's own server (whose handler says exactly what goes on the wire), nghttpd,
and httpx/httpcore on top of the pool; the pure parts (Headers, charsets) with hypothesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http.server
import json
import threading
import time
from collections.abc import Iterator

import httpcore
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._messages import adopt_fields, fields_of
from h2pool._pool.response import charset_of
from tests.peers import Nghttpd
from tests.servers import Server

pytestmark = pytest.mark.timeout(30)

DOCUMENT = {"order": 42, "items": ["tea", "café"], "paid": True}
SLOW = 0.05  # seconds the /slow routes wait before answering, or before the body


async def routes(proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList) -> None:
    """The server's routes, by path (without the query)."""
    path = dict(headers)[":path"].partition("?")[0]
    await proto.read_stream(stream_id, -1)
    if path == "/json":
        await proto.start_response(
            stream_id,
            [
                (":status", "200"),
                ("content-type", "application/json"),
                ("set-cookie", "session=abc; Path=/"),
                ("x-request-id", "r-1"),
                ("set-cookie", "theme=dark"),
            ],
        )
        await proto.send_data(stream_id, json.dumps(DOCUMENT).encode())
        await proto.send_trailers(stream_id, [("x-checksum", "c0ffee"), ("x-rows", "2")])
    elif path == "/latin1":
        await proto.start_response(
            stream_id, {":status": "200", "content-type": 'text/plain; charset="ISO-8859-1"'}
        )
        await proto.send_data(stream_id, "café crème".encode("latin-1"), end_stream=True)
    elif path.startswith("/status/"):
        status = path.removeprefix("/status/")
        await proto.start_response(stream_id, {":status": status}, end_stream=True)
    elif path == "/slow":  # the answer takes SLOW
        await asyncio.sleep(SLOW)
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)
    elif path == "/slow-body":  # the headers at once, the body after SLOW
        await proto.start_response(stream_id, {":status": "200"})
        await asyncio.sleep(SLOW)
        await proto.send_data(stream_id, b"late", end_stream=True)
    else:
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, "€ utf-8 by default".encode(), end_stream=True)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


class _Http1Handler(http.server.BaseHTTPRequestHandler):
    """Python's own HTTP/1.1 server: capitalised names, a repeated field, latin-1 text."""

    protocol_version = "HTTP/1.1"
    timeout = 5  # a connection left open ends within it (server_close() waits for them)

    def do_GET(self) -> None:
        body = "café".encode("latin-1")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=ISO-8859-1")
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _Http1Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # so that server_close() joins them: no socket outlives the test


@contextlib.contextmanager
def http1_server() -> Iterator[int]:
    """``http.server`` on 127.0.0.1 in a thread; yields its port."""
    server = _Http1Server(("127.0.0.1", 0), _Http1Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------------------
# Headers and trailers


async def test_headers_are_a_case_insensitive_mapping_with_repeated_fields_apart() -> None:
    async with Server(routes) as server, h2pool.Pool(url(server.port)) as pool:
        response = await pool.request("GET", "/json")
    headers = response.headers
    assert isinstance(headers, h2pool.Headers)
    assert headers["Content-Type"] == headers["content-type"] == "application/json"
    assert headers.get("X-REQUEST-ID") == "r-1"
    assert headers.get("x-missing") is None
    assert headers.get("x-missing", "none") == "none"
    with pytest.raises(KeyError):
        _ = headers["x-missing"]
    assert "Set-Cookie" in headers
    assert headers.get_list("Set-Cookie") == ["session=abc; Path=/", "theme=dark"]
    assert headers["set-cookie"] == "session=abc; Path=/, theme=dark"  # RFC 9110 5.3
    # Wire order, each name once; every field as sent with multi_items().
    assert list(headers)[:3] == ["content-type", "set-cookie", "x-request-id"]
    assert headers.multi_items()[:4] == [
        ("content-type", "application/json"),
        ("set-cookie", "session=abc; Path=/"),
        ("x-request-id", "r-1"),
        ("set-cookie", "theme=dark"),
    ]
    assert response.header("Set-Cookie") == "session=abc; Path=/"  # the first value, as before


async def test_trailers_are_headers_too_whole_and_streamed() -> None:
    async with Server(routes) as server, h2pool.Pool(url(server.port)) as pool:
        whole = await pool.request("GET", "/json")
        async with pool.stream("GET", "/json") as streamed:
            assert streamed.trailers == []  # not read yet
            assert isinstance(streamed.trailers, h2pool.Headers)
            await streamed.aread()
            trailers = streamed.trailers
    for fields in (whole.trailers, trailers):
        assert isinstance(fields, h2pool.Headers)
        assert fields["X-Checksum"] == "c0ffee"
        assert fields == [("x-checksum", "c0ffee"), ("x-rows", "2")]
        assert dict(fields) == {"x-checksum": "c0ffee", "x-rows": "2"}


async def test_headers_from_nghttpd(nghttpd_h2c: Nghttpd) -> None:
    async with h2pool.Pool(url(nghttpd_h2c.port)) as pool:
        response = await pool.request("GET", "/index.html")
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.headers["SERVER"].startswith("nghttpd")
    assert response.text == response.content.decode()
    assert len(response.headers) == len({name for name, _ in response.headers.multi_items()})


async def test_headers_of_an_http1_server() -> None:
    with http1_server() as port:
        async with h2pool.Pool(url(port), http1=True) as pool:
            response = await pool.request("GET", "/")
    assert response.http_version == "HTTP/1.1"
    assert response.headers["content-type"] == "text/plain; charset=ISO-8859-1"
    assert response.headers.get_list("SET-COOKIE") == ["a=1", "b=2"]
    assert ("set-cookie", "b=2") in response.headers.multi_items()
    assert response.text == "café"
    assert response.trailers == []
    assert response.request.url == f"{url(port)}/"


async def test_httpx_and_httpcore_keep_repeated_fields_apart() -> None:
    async with Server(routes) as server:
        target = f"{url(server.port)}/json"
        async with httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport()) as client:
            response = await client.get(target)
        assert response.headers.get_list("set-cookie") == ["session=abc; Path=/", "theme=dark"]
        assert response.json() == DOCUMENT
        async with h2pool.AsyncConnectionPool() as http:
            raw = await http.request("GET", target)
        cookies = [value for name, value in raw.headers if name == b"set-cookie"]
        assert cookies == [b"session=abc; Path=/", b"theme=dark"]
        assert isinstance(raw, httpcore.Response)


# ---------------------------------------------------------------------------
# The body as text and JSON


async def test_text_decodes_with_the_charset_of_content_type() -> None:
    async with Server(routes) as server, h2pool.Pool(url(server.port)) as pool:
        latin1 = await pool.request("GET", "/latin1")
        default = await pool.request("GET", "/")
    assert latin1.encoding == "iso8859-1"
    assert latin1.text == "café crème"
    assert latin1.content.decode("utf-8", errors="replace") != latin1.text  # not UTF-8 on the wire
    assert default.encoding == "utf-8"
    assert default.text == "€ utf-8 by default"


async def test_json_parses_the_body_with_json_loads_keywords() -> None:
    async with Server(routes) as server, h2pool.Pool(url(server.port)) as pool:
        response = await pool.request("GET", "/json")
        assert response.json() == DOCUMENT
        assert response.json(parse_int=str)["order"] == "42"
        with pytest.raises(json.JSONDecodeError):
            (await pool.request("GET", "/")).json()
        with pytest.raises(UnicodeDecodeError):  # json.loads reads UTF-8, -16 or -32 only
            (await pool.request("GET", "/latin1")).json()
        async with pool.stream("GET", "/json") as streamed:
            with pytest.raises(h2pool.ResponseNotRead):
                streamed.json()
            with pytest.raises(h2pool.ResponseNotRead):
                _ = streamed.text
            await streamed.aread()
            assert streamed.json() == DOCUMENT


# ---------------------------------------------------------------------------
# Statuses


@pytest.mark.parametrize(
    ("status", "kind", "phrase"),
    [(404, "Client error", "Not Found"), (503, "Server error", "Service Unavailable")],
)
async def test_raise_for_status_names_status_url_and_endpoint(
    status: int, kind: str, phrase: str
) -> None:
    async with Server(routes) as server, h2pool.Pool(url(server.port)) as pool:
        response = await pool.request("GET", f"/status/{status}")
        with pytest.raises(h2pool.HTTPStatusError) as raised:
            response.raise_for_status()
    error = raised.value
    endpoint = f"127.0.0.1:{server.port}"
    assert str(error) == (
        f"{kind} '{status} {phrase}' for url '{url(server.port)}/status/{status}'"
        f" from endpoint {endpoint}"
    )
    assert isinstance(error, h2pool.H2PoolError)
    assert error.response is response
    assert error.request is response.request
    assert error.request.method == "GET"
    assert error.endpoint == endpoint
    assert response.reason_phrase == phrase
    assert response.is_error
    assert response.is_client_error == (status == 404)
    assert response.is_server_error == (status == 503)
    assert not response.is_success


async def test_raise_for_status_returns_the_response_otherwise() -> None:
    async with Server(routes) as server, h2pool.Pool(url(server.port)) as pool:
        assert (await pool.request("GET", "/json")).raise_for_status().json() == DOCUMENT
        for status in (204, 304):
            response = await pool.request("GET", f"/status/{status}")
            assert response.raise_for_status() is response
            assert not response.is_error
        assert (await pool.request("GET", "/status/204")).is_success
        assert not (await pool.request("GET", "/status/304")).is_success


def test_responses_made_by_hand_know_no_request() -> None:
    response = h2pool.Response(599, [("x-a", "1")], "10.0.0.5:8080", None, content=b"{}")
    assert response.headers == [("x-a", "1")]
    assert response.trailers == []
    assert response.reason_phrase == ""
    assert response.json() == {}
    with pytest.raises(RuntimeError, match="not known"):
        _ = response.request
    with pytest.raises(RuntimeError, match="not sent"):
        _ = response.elapsed
    with pytest.raises(h2pool.HTTPStatusError) as raised:
        response.raise_for_status()
    assert str(raised.value) == "Server error '599' from endpoint 10.0.0.5:8080"
    assert raised.value.request is None


# ---------------------------------------------------------------------------
# The request, and the time it took


async def test_the_response_carries_its_request() -> None:
    async with (
        Server(routes) as server,
        h2pool.Pool(url(server.port), headers={"user-agent": "tests"}) as pool,
    ):
        response = await pool.request(
            "POST", "/json?page=2", headers={"x-trace": "t-1"}, content=b"{}"
        )
        async with pool.stream("DELETE", "/json") as streamed:
            deleted = streamed.request
    request = response.request
    assert isinstance(request, h2pool.Request)
    assert request is response.request  # built once, when first asked for
    assert request.method == "POST"
    assert request.url == f"{url(server.port)}/json?page=2"
    assert request.headers["User-Agent"] == "tests"
    assert request.headers["x-trace"] == "t-1"
    assert request.headers["content-length"] == "2"
    assert str(request) == f"POST {url(server.port)}/json?page=2"
    assert (deleted.method, deleted.url) == ("DELETE", f"{url(server.port)}/json")


async def test_elapsed_spans_the_request_to_the_end_of_its_body() -> None:
    async with Server(routes) as server, h2pool.Pool(url(server.port)) as pool:
        await pool.request("GET", "/")  # connected
        started = time.perf_counter()
        slow = await pool.request("GET", "/slow")
        wall = time.perf_counter() - started
        assert isinstance(slow.elapsed, datetime.timedelta)
        assert datetime.timedelta(seconds=SLOW) <= slow.elapsed <= datetime.timedelta(seconds=wall)
        assert slow.elapsed == slow.elapsed  # fixed once the response ended

        async with pool.stream("GET", "/slow-body") as streamed:
            with pytest.raises(h2pool.ResponseNotRead):
                _ = streamed.elapsed  # the body has not ended
            assert await streamed.aread() == b"late"
            assert streamed.elapsed >= datetime.timedelta(seconds=SLOW)
        started = time.perf_counter()
        async with pool.stream("GET", "/slow-body") as abandoned:
            with pytest.raises(h2pool.ResponseNotRead):
                _ = abandoned.elapsed
        wall = time.perf_counter() - started
        # Ended when it was closed, not when asked for (later than ``wall``).
        assert datetime.timedelta(0) < abandoned.elapsed <= datetime.timedelta(seconds=wall)


async def test_health_check_responses_carry_their_request_too() -> None:
    seen: asyncio.Queue[h2pool.Response] = asyncio.Queue()

    async def check(probe: h2pool.Probe) -> bool:
        response = await probe.request("GET", "/status/200")
        seen.put_nowait(response)
        return True

    async with Server(routes) as server:
        health = h2pool.HealthCheck(check=check, interval=0.05)
        async with h2pool.Pool(url(server.port), health_check=health):
            response = await asyncio.wait_for(seen.get(), 10)
    assert response.request.url == f"{url(server.port)}/status/200"
    assert response.elapsed > datetime.timedelta(0)
    assert response.raise_for_status() is response


# ---------------------------------------------------------------------------
# Pure: Headers and charsets

_NAMES = st.sampled_from(["a", "B", "set-cookie", "Set-Cookie", "x-y", "X-Y", "content-type"])
_FIELDS = st.lists(st.tuples(_NAMES, st.text(max_size=5)), max_size=8)


@given(_FIELDS, _NAMES)
def test_headers_lookups_agree_with_the_fields(fields: list[tuple[str, str]], name: str) -> None:
    headers = h2pool.Headers(fields)
    values = [value for key, value in fields if key.lower() == name.lower()]
    assert headers.get_list(name) == headers.get_list(name.upper()) == values
    assert (name in headers) == bool(values)
    if values:
        assert headers[name] == headers[name.swapcase()] == ", ".join(values)
    else:
        assert headers.get(name) is None
        with pytest.raises(KeyError):
            _ = headers[name]
    assert headers.multi_items() == fields
    names = list(dict.fromkeys(key.lower() for key, _ in fields))
    assert list(headers) == names
    assert len(headers) == len(names)


@given(_FIELDS)
def test_headers_equality_and_adopted_lists(fields: list[tuple[str, str]]) -> None:
    headers = h2pool.Headers(fields)
    lowered = [(key.lower(), value) for key, value in fields]
    assert headers == fields
    assert headers == lowered
    assert headers == h2pool.Headers(lowered)
    assert adopt_fields(list(fields)) == headers
    assert fields_of(headers) == fields
    assert h2pool.Headers(headers).multi_items() == fields  # a copy keeps repeated fields apart
    assert h2pool.Headers(dict(fields)) == dict(fields)
    assert h2pool.Headers(dict(fields)) == {key.swapcase(): value for key, value in fields}
    assert headers.multi_items() is not headers.multi_items()  # a copy: the fields stay as sent


def test_headers_from_a_mapping_and_an_iterable() -> None:
    assert h2pool.Headers({"Content-Type": "text/plain"})["content-type"] == "text/plain"
    assert h2pool.Headers(iter([("a", "1"), ("A", "2")])).get_list("a") == ["1", "2"]
    assert h2pool.Headers() == []
    assert h2pool.Headers([("a", "1")]) != [("a", "2")]


@pytest.mark.parametrize(
    ("content_type", "charset"),
    [
        (None, None),
        ("text/plain", None),
        ("text/plain; charset=utf-8", "utf-8"),
        ('text/html; Charset="ISO-8859-1"', "ISO-8859-1"),
        ("text/plain;format=flowed; charset = latin-1 ", "latin-1"),
        ("text/plain; charset=", None),
    ],
)
def test_charset_of(content_type: str | None, charset: str | None) -> None:
    assert charset_of(content_type) == charset


def test_text_falls_back_to_utf8_and_replaces_what_does_not_decode() -> None:
    unknown = h2pool.Response(
        200, [("content-type", "text/plain; charset=no-such")], "e", None, content=b"caf\xc3\xa9"
    )
    assert unknown.encoding == "utf-8"
    assert unknown.text == "café"
    broken = h2pool.Response(200, [], "e", None, content=b"caf\xe9")
    assert broken.text == "caf\ufffd"
