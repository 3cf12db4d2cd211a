"""Errors that name what failed: every error a request raises carries ``.request``.

Its message names the method, the URL, the endpoint (where known) and says
whether the server may have processed the request; ``.endpoint`` and
``.never_processed`` say the same to code.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from tests.faultproxy import fault_proxy
from tests.servers import Server, hello

pytestmark = pytest.mark.timeout(30)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


class Arrivals:
    """A handler that records each request and holds it until the connection goes."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.arrived = asyncio.Event()

    async def __call__(
        self, proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
    ) -> None:
        self.paths.append(dict(headers)[":path"])
        await proto.read_stream(stream_id, -1)
        self.arrived.set()
        await asyncio.Event().wait()


async def test_connection_lost_mid_post_names_request_endpoint_and_maybe_processed() -> None:
    """The issue's example: a POST whose server dies under it (here: the link is reset)."""
    held = Arrivals()
    async with Server(held) as server, fault_proxy(server.port) as proxy:
        target = url(proxy.port)
        async with h2pool.Pool(target) as pool:
            post = asyncio.ensure_future(pool.request("POST", "/orders?id=7", content=b"{}"))
            async with asyncio.timeout(5):
                await held.arrived.wait()
            proxy.reset()  # RST on the live connection: the server is gone mid-request
            with pytest.raises(h2pool.ConnectionLost) as caught:
                await asyncio.wait_for(post, 10)
    error = caught.value
    assert held.paths == ["/orders?id=7"]  # a POST that may have been processed is not retried
    assert not error.never_processed
    assert error.endpoint == proxy.address
    assert error.request is not None
    assert (error.request.method, error.request.url) == ("POST", f"{target}/orders?id=7")
    assert error.request.headers["content-length"] == "2"
    message = str(error)
    assert message.startswith(f"POST {target}/orders?id=7 to {proxy.address}: ")
    assert message.endswith(" (may have been processed)")
    assert message.count("may have been processed") == 1  # put in context once
    assert isinstance(error.__cause__, h2pool.ConnectionLost)  # what the connection said


async def test_stream_reset_names_the_request() -> None:
    async def reset(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        proto.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)

    async with Server(reset) as server, h2pool.Pool(url(server.port)) as pool:
        with pytest.raises(h2pool.StreamReset) as caught:
            await pool.request("PATCH", "/item", content=b"x")
    error = caught.value
    assert error.error_code == h2pool.ErrorCode.INTERNAL_ERROR  # attributes kept
    assert error.stream_id is not None
    assert error.endpoint == f"127.0.0.1:{server.port}"
    assert error.request is not None
    assert str(error.request) == f"PATCH {url(server.port)}/item"
    assert str(error).startswith(f"PATCH {url(server.port)}/item to 127.0.0.1:{server.port}: ")
    assert str(error).endswith(" (may have been processed)")


async def test_a_streamed_body_that_fails_names_the_request() -> None:
    """An error while the body of ``stream()`` is read names the request too."""

    async def half(proto: h2pool.H2Protocol, stream_id: int, _: h2pool.HeaderList) -> None:
        await proto.start_response(stream_id, {":status": "200"})
        await proto.send_data(stream_id, b"part")
        proto.reset_stream(stream_id, h2pool.ErrorCode.INTERNAL_ERROR)

    async with (
        Server(half) as server,
        h2pool.Pool(url(server.port)) as pool,
        pool.stream("GET", "/export") as response,
    ):
        with pytest.raises(h2pool.StreamReset) as caught:
            await response.aread()
    error = caught.value
    assert error.error_code == h2pool.ErrorCode.INTERNAL_ERROR
    assert error.request is not None
    assert str(error.request) == f"GET {url(server.port)}/export"
    assert error.endpoint == f"127.0.0.1:{server.port}"
    assert str(error).startswith(f"GET {url(server.port)}/export to 127.0.0.1:{server.port}: ")
    assert str(error).count("(may have been processed)") == 1
    assert isinstance(error.__cause__, h2pool.StreamReset)


async def test_pool_refusals_name_the_request() -> None:
    async with Server(hello) as server:
        pool = h2pool.Pool(url(server.port), max_pending=0)
        # Nothing connected yet: the request would have to wait, and none may.
        with pytest.raises(h2pool.PoolOverloaded) as overloaded:
            await pool.request("GET", "/busy")
        await pool.aclose()
        with pytest.raises(h2pool.PoolClosed) as closed:
            await pool.request("DELETE", "/gone")
    assert str(overloaded.value) == (
        f"GET {url(server.port)}/busy: 0 requests already wait for a connection (max_pending)"
        " (never processed)"
    )
    assert overloaded.value.request is not None
    assert closed.value.request is not None
    gone = f"DELETE {url(server.port)}/gone"
    assert str(closed.value) == f"{gone}: the pool is closed (never processed)"


async def test_request_timeout_names_the_request_and_its_endpoint() -> None:
    held = Arrivals()
    async with Server(held) as server, h2pool.Pool(url(server.port)) as pool:
        with pytest.raises(h2pool.RequestTimeout) as caught:
            await pool.request("GET", "/wait", timeout=0.2)
    error = caught.value
    assert error.request is not None
    assert error.request.url == f"{url(server.port)}/wait"
    assert str(error).startswith(f"GET {url(server.port)}/wait: timed out; endpoints: ")
    assert str(error).endswith(" (may have been processed)")


async def test_errors_of_a_base_path_follow_the_pool_origin() -> None:
    """The URL in errors is the pool's origin and the request's path, as sent."""
    async with Server(hello) as server:
        target = f"http://localhost:{server.port}"
        pool = h2pool.Pool(target, endpoints=[f"127.0.0.1:{server.port}"])
        await pool.aclose()
        with pytest.raises(h2pool.PoolClosed) as closed:
            await pool.request("GET", "/a%20b?q=1")
    assert closed.value.request is not None
    assert closed.value.request.url == f"{target}/a%20b?q=1"


# --- the messages, as pure functions --------------------------------------------------------------

KINDS = st.sampled_from(
    [
        h2pool.ConnectionLost,
        h2pool.StreamReset,
        h2pool.StreamRefused,
        h2pool.ConnectError,
        h2pool.ReadTimeout,
        h2pool.PoolTimeout,
        h2pool.DrainInterrupted,
    ]
)
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=30)


@given(kind=KINDS, reason=TEXT, endpoint=st.one_of(st.none(), st.just("10.0.0.1:443")))
def test_for_request_names_the_request_once_whatever_came_before(
    kind: type[h2pool.H2PoolError], reason: str, endpoint: str | None
) -> None:
    request = h2pool.Request("POST", "https://svc.test/api/v1/x?a=1")
    error = kind(reason, stream_id=3)
    contexted = error.in_context("POST /api/v1/x?a=1 to 10.0.0.1:443")
    for source in (error, contexted):
        final = source.for_request(request, endpoint)
        where = "" if endpoint is None else f" to {endpoint}"
        processed = "never processed" if kind.never_processed else "may have been processed"
        assert str(final) == f"POST https://svc.test/api/v1/x?a=1{where}: {reason} ({processed})"
        assert final.reason == reason
        assert (final.request, final.endpoint) == (request, endpoint)
        assert type(final) is kind
        assert final.stream_id == 3  # attributes kept
        assert source.request is None  # a copy: the original is untouched
