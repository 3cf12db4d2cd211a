"""The request side of the everyday API (issue 9): base path, params, json, verbs, encoding.

Each request goes to h2pool's own server, which records what arrived; the
pure URL functions are checked against httpx with hypothesis.
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import h2pool
from h2pool._pool.urls import encode_params, parse_target, quote, request_path
from tests.servers import Server


class Recorder:
    """A handler that keeps each request's fields and body and answers 200 with the body."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], list[tuple[str, str]], bytes]] = []

    async def __call__(
        self, proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
    ) -> None:
        body = await proto.read_stream(stream_id, -1)
        pseudo = {name: value for name, value in headers if name.startswith(":")}
        regular = [(name, value) for name, value in headers if not name.startswith(":")]
        self.requests.append((pseudo, regular, body))
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, body, end_stream=True)

    @property
    def last(self) -> tuple[dict[str, str], list[tuple[str, str]], bytes]:
        return self.requests[-1]

    @property
    def paths(self) -> list[str]:
        return [pseudo[":path"] for pseudo, _, _ in self.requests]


@pytest.fixture
async def served() -> AsyncIterator[tuple[Recorder, int]]:
    recorder = Recorder()
    async with Server(recorder) as server:
        yield recorder, server.port


async def test_base_path_is_joined_as_httpx_base_url(served: tuple[Recorder, int]) -> None:
    recorder, port = served
    async with h2pool.Pool(f"http://127.0.0.1:{port}/api/v1") as pool:
        for path in ("/users", "users", "/users/7?x=1", ""):
            assert (await pool.get(path)).status_code == 200
    assert recorder.paths == ["/api/v1/users", "/api/v1/users", "/api/v1/users/7?x=1", "/api/v1/"]
    async with h2pool.Pool(f"http://127.0.0.1:{port}/api/") as pool:
        await pool.get("/users")
    assert recorder.paths[-1] == "/api/users"


@pytest.mark.parametrize(
    "target", ["http://svc/a?x=1", "http://svc/a#f", "http://svc?x", "ftp://svc", "http:///a"]
)
def test_target_with_query_or_fragment_or_no_host_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="target"):
        h2pool.Pool(target)


def test_target_must_be_a_str() -> None:
    with pytest.raises(TypeError, match="target"):
        h2pool.Pool(b"http://svc")  # type: ignore[arg-type]


async def test_raw_space_and_non_ascii_in_a_path_are_percent_encoded(
    served: tuple[Recorder, int],
) -> None:
    recorder, port = served
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:
        await pool.get("/a b")
        await pool.get("/café/é?q=a b")
        await pool.get("/already%20encoded/100%")
        await pool.get("/x#fragment")
        await pool.get("/a/./b/../c")
    assert recorder.paths == [
        "/a%20b",
        "/caf%C3%A9/%C3%A9?q=a%20b",
        "/already%20encoded/100%",
        "/x",
        "/a/c",
    ]


async def test_absolute_paths_through_the_httpx_transport_are_sent_as_they_are(
    served: tuple[Recorder, int],
) -> None:
    recorder, port = served
    transport = h2pool.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"http://127.0.0.1:{port}//double/a b/%7E?q=x y")
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:
        await pool.get("//double")
    assert recorder.paths == ["//double/a%20b/%7E?q=x%20y", "//double"]


async def test_params_are_form_encoded_after_the_paths_query(served: tuple[Recorder, int]) -> None:
    recorder, port = served
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:
        await pool.get("/s", params={"q": "a b&c", "flag": True, "off": False, "n": None})
        await pool.get("/s?page=2", params=[("tag", "x"), ("tag", "y")])
        await pool.get("/s", params={"id": [1, 2.5]})
        await pool.get("/s", params="a=1&b=two words")
        await pool.get("/s", params={})
    assert recorder.paths == [
        "/s?q=a+b%26c&flag=true&off=false&n=",
        "/s?page=2&tag=x&tag=y",
        "/s?id=1&id=2.5",
        "/s?a=1&b=two%20words",
        "/s",
    ]


async def test_json_body_and_content_type(served: tuple[Recorder, int]) -> None:
    recorder, port = served
    document = {"name": "Zoë", "tags": ["a", "b"], "n": 1.5, "none": None}
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:
        response = await pool.post("/items", json=document)
        assert response.status_code == 200
        _, fields, body = recorder.last
        assert body == '{"name":"Zoë","tags":["a","b"],"n":1.5,"none":null}'.encode()
        assert json.loads(body) == document
        assert ("content-type", "application/json") in fields
        assert ("content-length", str(len(body))) in fields
        await pool.put("/items/1", json=[1], headers={"Content-Type": "application/merge+json"})
        _, fields, body = recorder.last
        assert [value for name, value in fields if name == "content-type"] == [
            "application/merge+json"
        ]
        assert body == b"[1]"


async def test_every_verb_sends_its_method_and_keywords(served: tuple[Recorder, int]) -> None:
    recorder, port = served
    async with h2pool.Pool(f"http://127.0.0.1:{port}") as pool:
        await pool.get("/g", params={"a": 1}, headers={"x-v": "get"})
        await pool.head("/h")
        await pool.options("/o")
        await pool.delete("/d")
        await pool.post("/p", content=b"post")
        await pool.put("/u", content="put")
        await pool.patch("/pa", json={"patch": True})
        await pool.request("get", "/lower")
    methods = [(pseudo[":method"], pseudo[":path"], body) for pseudo, _, body in recorder.requests]
    assert methods == [
        ("GET", "/g?a=1", b""),
        ("HEAD", "/h", b""),
        ("OPTIONS", "/o", b""),
        ("DELETE", "/d", b""),
        ("POST", "/p", b"post"),
        ("PUT", "/u", b"put"),
        ("PATCH", "/pa", b'{"patch":true}'),
        ("GET", "/lower", b""),
    ]
    assert ("x-v", "get") in recorder.requests[0][1]


async def test_stream_takes_the_same_keywords(served: tuple[Recorder, int]) -> None:
    recorder, port = served
    async with (
        h2pool.Pool(f"http://127.0.0.1:{port}/base") as pool,
        pool.stream("POST", "s", params={"k": "v"}, json={"a": 1}) as response,
    ):
        assert [chunk async for chunk in response.aiter_bytes()] == [b'{"a":1}']
    assert recorder.paths == ["/base/s?k=v"]


async def test_userinfo_becomes_basic_authorization_not_authority(
    served: tuple[Recorder, int],
) -> None:
    recorder, port = served
    async with h2pool.Pool(f"http://us%40er:p%3Ass@127.0.0.1:{port}") as pool:
        await pool.get("/")
        await pool.get("/", headers={"authorization": "Bearer t"})
    (pseudo, fields, _), (_, replaced, _) = recorder.requests
    assert pseudo[":authority"] == f"127.0.0.1:{port}"
    token = base64.b64encode(b"us@er:p:ss").decode()
    assert [v for n, v in fields if n == "authorization"] == [f"Basic {token}"]
    assert [v for n, v in replaced if n == "authorization"] == ["Bearer t"]


async def test_request_fields_replace_the_pools_of_the_same_name(
    served: tuple[Recorder, int],
) -> None:
    recorder, port = served
    pool_headers = {"x-tenant": "a", "x-keep": "k"}
    async with h2pool.Pool(f"http://127.0.0.1:{port}", headers=pool_headers) as pool:
        await pool.get("/", headers={"X-Tenant": "b"})
        await pool.get("/")
    (_, replaced, _), (_, kept, _) = recorder.requests
    assert [(n, v) for n, v in replaced if n.startswith("x-")] == [
        ("x-keep", "k"),
        ("x-tenant", "b"),
    ]
    assert [(n, v) for n, v in kept if n.startswith("x-")] == [("x-tenant", "a"), ("x-keep", "k")]


def test_userinfo_without_password_and_ipv6() -> None:
    target = parse_target("https://user@[::1]:8443/x/y/")
    assert target.authority == "[::1]:8443"
    assert target.host == "::1"
    assert target.port == 8443
    assert target.base_path == "/x/y/"
    assert target.authorization == "Basic " + base64.b64encode(b"user:").decode()
    assert parse_target("http://svc").authorization is None
    assert parse_target("http://@svc").authorization is None  # as httpx: nothing to send
    assert parse_target("http://@svc").authority == "svc"
    assert parse_target("http://svc").port == 80


# ----------------------------------------------------------------------
# The pure functions, against httpx (hypothesis)

_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="#?"), max_size=30
)
_SEGMENT = st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=8)


def _httpx_path(base: str, path: str, params: Any = None) -> str:
    with httpx.Client(base_url="http://h" + base) as client:
        return client.build_request("GET", path, params=params).url.raw_path.decode()


@settings(deadline=None)  # httpx is slow to build a client on a loaded machine
@given(st.lists(_SEGMENT, max_size=3), _TEXT)
def test_paths_are_joined_and_encoded_as_httpx_does(segments: list[str], path: str) -> None:
    if path.startswith("//") or ":" in path.partition("/")[0]:  # httpx reads these as URLs
        return
    base = parse_target("http://h/" + "/".join(segments)).base_path
    assert request_path(base, path) == _httpx_path(base, path)


@settings(deadline=None)
@given(
    st.lists(_SEGMENT, max_size=3),
    st.lists(st.sampled_from([".", "..", "", "a", "b c", "é", "%2E"]), max_size=6),
)
def test_dot_segments_are_resolved_as_httpx_does(segments: list[str], parts: list[str]) -> None:
    path = "/".join(parts)
    if path.startswith("//"):
        return
    base = parse_target("http://h/" + "/".join(segments)).base_path
    assert request_path(base, path) == _httpx_path(base, path)


@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=30), st.booleans())
def test_quoting_is_idempotent_and_leaves_only_visible_ascii(text: str, query: bool) -> None:
    once = quote(text, query=query)
    assert quote(once, query=query) == once
    assert all("\x21" <= char <= "\x7e" for char in once)
    assert not set(once) & set(' "<>' + ("" if query else "`{}"))


@settings(deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.none()),
        max_size=4,
    )
)
def test_params_encode_as_httpx_does(params: dict[str, Any]) -> None:
    if any("\x00" <= char < " " for key in params for char in key):
        return
    encoded = encode_params(params)
    assert request_path("/", "/p", params) == _httpx_path("/", "/p", params)
    assert request_path("/", "/p", params) == ("/p?" + encoded if encoded else "/p")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"a": object()}, "'a'"),
        ({1: "x"}, "names"),
        ([("a",)], "pair"),
        (5, "params"),
        (b"a=1", "params"),
        ({"a": [[1]]}, "'a'"),
    ],
)
def test_params_of_a_wrong_type_are_named(params: object, named: str) -> None:
    with pytest.raises(TypeError, match="params") as refused:
        encode_params(params)
    assert named in str(refused.value)


@pytest.mark.parametrize("path", ["/a\r\nx-injected: 1", "/a\x00", "/\t", "/\x7f"])
def test_ascii_controls_in_a_path_are_refused_not_encoded(path: str) -> None:
    with pytest.raises(h2pool.LocalProtocolError, match="path"):
        request_path("/", path)


@pytest.mark.parametrize("path", [".", "..", "/.", "/..", "../..", "./"])
def test_dot_segments_never_leave_an_empty_path(path: str) -> None:
    assert request_path("/", path) == "/"


def test_a_url_as_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="not a URL"):
        request_path("/", "http://other/x")
