"""Fail fast by default, DNS failures, final timeouts and ``per_try_timeout``.

As gRPC does, a request fails with ``ConnectError`` as soon as no endpoint
can be reached (``wait_for_ready=False``, the default), instead of waiting
out its timeout; a timeout is final unless ``RetryPolicy.per_try_timeout``
asks for retries. Against h2pool's own server, closed ports and a stub
resolver (no real DNS lookup).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._pool.endpoint import Endpoint, unreachable
from h2pool._pool.policies import RetryAction, Tries, decide_retry
from tests.servers import Server, hello
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(30)

# Far below every timeout these tests set (30 s): failing "at once" means
# without waiting for them; a refused loopback port takes milliseconds.
AT_ONCE = 2.0


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def elapsed() -> Iterator[list[float]]:
    loop = asyncio.get_running_loop()
    took = [0.0]
    started = loop.time()
    try:
        yield took
    finally:
        took[0] = loop.time() - started


# --- fail fast ------------------------------------------------------------------------------------


async def test_refused_port_fails_at_once_with_a_connect_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="h2pool.pool")
    port = closed_port()
    endpoint = f"127.0.0.1:{port}"
    async with h2pool.Pool(url(port), timeout=30) as pool:
        with elapsed() as took, pytest.raises(h2pool.ConnectError) as caught:
            await pool.request("GET", "/x")
        assert took[0] < AT_ONCE
        error = caught.value
        assert type(error) is h2pool.ConnectError  # not RequestTimeout
        assert error.never_processed
        assert error.endpoint == endpoint
        assert error.request is not None
        assert (error.request.method, error.request.url) == ("GET", f"{url(port)}/x")
        assert str(error).startswith(f"GET {url(port)}/x to {endpoint}: cannot connect to ")
        assert "Connect call failed" in str(error)
        assert str(error).endswith(" (never processed)")
        # Not retried: the pool already waited for the connection attempt, which failed.
        assert not [r for r in caplog.records if "retrying" in r.getMessage()]
        # While the endpoint backs off (1 s), the next request fails at once with its last
        # error, without a new connection attempt.
        with elapsed() as took, pytest.raises(h2pool.ConnectError) as again:
            await pool.request("GET", "/y")
        assert took[0] < AT_ONCE
        assert again.value.reason == error.reason
        (stats,) = pool.stats().endpoints
        assert stats.consecutive_failures == 1
        assert stats.state is h2pool.ConnectivityState.TRANSIENT_FAILURE


async def test_first_request_on_a_fresh_pool_waits_for_the_first_attempts() -> None:
    """Without start(), nothing was tried yet: the request waits for the attempts, then fails."""
    port = closed_port()
    pool = h2pool.Pool(url(port), timeout=30)
    try:
        assert [ep.state for ep in pool.stats().endpoints] == []  # not even resolved yet
        with elapsed() as took, pytest.raises(h2pool.ConnectError):
            await pool.request("GET", "/")
        assert took[0] < AT_ONCE
        (stats,) = pool.stats().endpoints
        assert stats.consecutive_failures == 1
    finally:
        await pool.aclose()


async def test_every_endpoint_refused_names_each_with_its_error() -> None:
    first, second = f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"
    pool = h2pool.Pool("http://service.test", endpoints=[first, second], timeout=30)
    async with pool:
        with elapsed() as took, pytest.raises(h2pool.ConnectError) as caught:
            await pool.request("POST", "/orders", content=b"{}")
        assert took[0] < AT_ONCE
    error = caught.value
    assert error.endpoint is None  # none in particular
    assert error.never_processed
    assert str(error).startswith("POST http://service.test/orders: no endpoint could be reached: ")
    assert f"cannot connect to {first}: " in str(error)
    assert f"cannot connect to {second}: " in str(error)
    assert isinstance(error.__cause__, h2pool.ConnectError)  # the last failure, chained


async def test_one_refused_endpoint_does_not_fail_requests_another_serves() -> None:
    async with Server(hello) as server:
        live = f"127.0.0.1:{server.port}"
        dead = f"127.0.0.1:{closed_port()}"
        async with h2pool.Pool("http://service.test", endpoints=[dead, live]) as pool:
            for index in range(5):
                response = await pool.request("GET", f"/r{index}")
                assert (response.status_code, response.endpoint) == (200, live)


async def test_tls_to_a_cleartext_server_fails_at_once() -> None:
    async with Server(hello) as server:
        target = f"https://127.0.0.1:{server.port}"
        async with h2pool.Pool(target, ssl=False, timeout=30) as pool:
            with elapsed() as took, pytest.raises(h2pool.ConnectError) as caught:
                await pool.request("GET", "/")
            assert took[0] < AT_ONCE
    assert caught.value.endpoint == f"127.0.0.1:{server.port}"
    assert str(caught.value).startswith(f"GET {target}/ to 127.0.0.1:{server.port}: ")


async def test_wait_for_ready_waits_until_an_endpoint_comes_back() -> None:
    port = closed_port()
    fast = h2pool.ConnectionBackoff(initial=0.05, max=0.1)
    async with h2pool.Pool(url(port), wait_for_ready=True, backoff=fast) as pool:
        request = asyncio.ensure_future(pool.request("GET", "/back", timeout=20))
        await eventually(lambda: any(ep.consecutive_failures for ep in pool.stats().endpoints))
        assert not request.done()  # it waits, as asked
        served = await h2pool.start_server(_hello_connection, "127.0.0.1", port)
        try:
            response = await asyncio.wait_for(request, 10)
        finally:
            served.close()
    assert response.status_code == 200
    assert response.content == b"hello /back"


async def _hello_connection(proto: h2pool.H2Protocol) -> None:
    while True:
        stream_id, headers = await proto.recv_request()
        await hello(proto, stream_id, headers)


# --- DNS -----------------------------------------------------------------------------------------


class StubResolver:
    """The event loop's ``getaddrinfo``, answering from a script (no real lookup)."""

    def __init__(self, failures: int, port: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.port = port
        self.error = error or socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        self.calls = 0

    async def __call__(self, host: str, port: int, **_: Any) -> list[Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", self.port))]


@contextlib.asynccontextmanager
async def resolver(
    monkeypatch: pytest.MonkeyPatch, failures: int, port: int = 0, error: Exception | None = None
) -> AsyncIterator[StubResolver]:
    stub = StubResolver(failures, port, error)
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", stub)
    yield stub


async def test_dns_failure_is_a_connect_error_naming_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with resolver(monkeypatch, failures=100) as stub:
        pool = h2pool.Pool("http://orders.internal:8080", timeout=30)
        async with pool:  # start() resolves once and does not raise
            with elapsed() as took, pytest.raises(h2pool.ConnectError) as caught:
                await pool.request("GET", "/v1")
            assert took[0] < AT_ONCE
            error = caught.value
            assert str(error) == (
                "GET http://orders.internal:8080/v1: cannot resolve 'orders.internal': "
                "[Errno -2] Name or service not known (never processed)"
            )
            causes = []
            cause = error.__cause__
            while cause is not None:
                causes.append(cause)
                cause = cause.__cause__
            assert isinstance(causes[-1], socket.gaierror)  # the resolver's own, chained
            assert error.endpoint is None
            assert error.request is not None
            assert error.request.url == "http://orders.internal:8080/v1"
            # Backing off: the next request fails with the same error without a lookup.
            calls = stub.calls
            with pytest.raises(h2pool.ConnectError):
                await pool.request("GET", "/v1")
            assert stub.calls == calls


async def test_a_name_idna_refuses_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """getaddrinfo raises UnicodeError (not OSError) for such names: still a ConnectError."""
    refused = UnicodeError("encoding with 'idna' codec failed (label empty or too long)")
    async with (
        resolver(monkeypatch, failures=1, error=refused),
        h2pool.Pool("http://a..b") as pool,
    ):
        with pytest.raises(h2pool.ConnectError) as caught:
            await pool.request("GET", "/")
    assert "cannot resolve 'a..b': encoding with 'idna' codec failed" in str(caught.value)


async def test_dns_failure_through_httpx_is_a_connect_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not ``httpx.PoolTimeout`` after 5 s: the transport says what failed, at once."""
    async with (
        resolver(monkeypatch, failures=100),
        httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport()) as client,
    ):
        with elapsed() as took, pytest.raises(httpx.ConnectError) as caught:
            await client.get("http://orders.internal/v1", timeout=30)
        assert took[0] < AT_ONCE
    assert "cannot resolve 'orders.internal': [Errno -2] Name or service not known" in str(
        caught.value
    )


async def test_dns_failure_waits_for_ready_then_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Server(hello) as server:
        fast = h2pool.ConnectionBackoff(initial=0.05, max=0.1)
        async with resolver(monkeypatch, failures=2, port=server.port) as stub:
            pool = h2pool.Pool(
                f"http://orders.internal:{server.port}", backoff=fast, wait_for_ready=True
            )
            async with pool:
                response = await pool.request("GET", "/later", timeout=10)
    assert response.content == b"hello /later"
    assert stub.calls == 3


async def test_dns_failure_past_the_deadline_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    async with resolver(monkeypatch, failures=1000):
        fast = h2pool.ConnectionBackoff(initial=0.05, max=0.1)
        pool = h2pool.Pool("http://orders.internal", backoff=fast, wait_for_ready=True)
        async with pool:
            with pytest.raises(h2pool.RequestTimeout) as caught:
                await pool.request("GET", "/", timeout=0.3)
    assert "endpoints: none resolved (cannot resolve 'orders.internal': " in str(caught.value)


# --- timeouts are final --------------------------------------------------------------------------


class Slow:
    """A handler that answers after ``delays[n]`` seconds for the n-th request, counting them."""

    def __init__(self, *delays: float) -> None:
        self.delays = delays
        self.paths: list[str] = []

    async def __call__(
        self, proto: h2pool.H2Protocol, stream_id: int, headers: h2pool.HeaderList
    ) -> None:
        fields = dict(headers)
        self.paths.append(fields[":path"])
        delay = self.delays[min(len(self.paths), len(self.delays)) - 1]
        await proto.read_stream(stream_id, -1)
        await asyncio.sleep(delay)
        await proto.start_response(stream_id, {":status": "200"}, end_stream=True)


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_read_timeout_is_final_the_server_receives_the_request_once(method: str) -> None:
    slow = Slow(5.0)
    async with Server(slow) as server, h2pool.Pool(url(server.port)) as pool:
        with elapsed() as took, pytest.raises(h2pool.ReadTimeout) as caught:
            await pool.request(method, "/slow", timeout=h2pool.Timeouts(total=10, read=0.1))
        assert took[0] < 5.0  # ended by the read timeout, not by a response
    assert slow.paths == ["/slow"]
    assert not caught.value.never_processed
    assert str(caught.value).endswith("(may have been processed)")


async def test_total_timeout_is_final() -> None:
    slow = Slow(5.0)
    retry = h2pool.RetryPolicy(max_attempts=5)
    async with Server(slow) as server, h2pool.Pool(url(server.port), retry=retry) as pool:
        with pytest.raises(h2pool.RequestTimeout) as caught:
            await pool.request("GET", "/slow", timeout=0.3)
    assert slow.paths == ["/slow"]
    assert caught.value.request is not None


async def test_per_try_timeout_retries_slow_attempts() -> None:
    slow = Slow(5.0, 5.0, 0.0)
    retry = h2pool.RetryPolicy(per_try_timeout=0.2, max_attempts=3, backoff_initial=0.01)
    async with Server(slow) as server, h2pool.Pool(url(server.port), retry=retry) as pool:
        response = await pool.request("GET", "/flaky", timeout=10)
    assert response.status_code == 200
    assert slow.paths == ["/flaky"] * 3


async def test_per_try_timeout_ends_after_the_attempts() -> None:
    slow = Slow(5.0)
    retry = h2pool.RetryPolicy(per_try_timeout=0.1, max_attempts=2, backoff_initial=0.01)
    async with Server(slow) as server, h2pool.Pool(url(server.port), retry=retry) as pool:
        with pytest.raises(h2pool.ReadTimeout) as caught:
            await pool.request("GET", "/slow", timeout=10)
        with pytest.raises(h2pool.ReadTimeout):
            async with pool.stream("GET", "/stream", timeout=10):
                pass
    assert slow.paths == ["/slow", "/slow", "/stream", "/stream"]
    assert "no response within per_try_timeout (0.1s)" in str(caught.value)
    assert caught.value.endpoint == f"127.0.0.1:{server.port}"


async def test_per_try_timeout_does_not_retry_a_post() -> None:
    slow = Slow(5.0)
    retry = h2pool.RetryPolicy(per_try_timeout=0.1, max_attempts=3)
    async with Server(slow) as server, h2pool.Pool(url(server.port), retry=retry) as pool:
        with pytest.raises(h2pool.ReadTimeout):
            await pool.request("POST", "/pay", content=b"1", timeout=10)
    assert slow.paths == ["/pay"]


def test_per_try_timeout_is_checked() -> None:
    assert h2pool.RetryPolicy().per_try_timeout is None
    with pytest.raises(ValueError, match="per_try_timeout"):
        h2pool.RetryPolicy(per_try_timeout=0)
    with pytest.raises(TypeError, match="per_try_timeout"):
        h2pool.RetryPolicy(per_try_timeout="1")  # type: ignore[arg-type]


TIMEOUTS = st.sampled_from(
    [h2pool.ReadTimeout("x"), h2pool.WriteTimeout("x"), h2pool.RequestTimeout("x")]
)
METHODS = st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH"])


@given(error=TIMEOUTS, method=METHODS, attempts=st.integers(1, 5))
def test_timeouts_are_final_without_per_try_timeout(
    error: h2pool.H2PoolError, method: str, attempts: int
) -> None:
    policy = h2pool.RetryPolicy(max_attempts=5)
    decision = decide_retry(
        error,
        method=method,
        replayable=True,
        tries=Tries(attempts),
        now=0.0,
        deadline=None,
        policy=policy,
        rng=random.Random(0),
    )
    assert decision.action is RetryAction.STOP


@given(
    error=TIMEOUTS,
    method=METHODS,
    attempts=st.integers(1, 5),
    deadline=st.one_of(st.none(), st.floats(0.0, 1.0)),
    replayable=st.booleans(),
)
def test_per_try_timeout_makes_timeouts_counted_retries_of_idempotent_methods(
    error: h2pool.H2PoolError, method: str, attempts: int, deadline: float | None, replayable: bool
) -> None:
    policy = h2pool.RetryPolicy(max_attempts=3, per_try_timeout=1.0, jitter=0.0)
    decision = decide_retry(
        error,
        method=method,
        replayable=replayable,
        tries=Tries(attempts),
        now=0.0,
        deadline=deadline,
        policy=policy,
        rng=random.Random(0),
    )
    delay = 0.05 * 2 ** (attempts - 1)
    expected = (
        replayable
        and method in policy.methods
        and attempts < policy.max_attempts
        and (deadline is None or delay < deadline)
    )
    assert (decision.action is RetryAction.RETRY) == expected
    if expected:
        assert decision.tries.attempts == attempts + 1  # counted
        assert decision.delay == pytest.approx(delay)


@given(
    error=st.sampled_from(
        [
            h2pool.ConnectError("x"),
            h2pool.CertificateVerifyError("x"),
            h2pool.ConnectTimeout("x"),
            h2pool.StreamRefused("x"),
        ]
    ),
    method=METHODS,
    per_try=st.one_of(st.none(), st.just(1.0)),
)
def test_an_attempt_that_got_no_connection_is_final(
    error: h2pool.H2PoolError, method: str, per_try: float | None
) -> None:
    """The pool already waited for a connection as the request allowed: no retry finds one."""
    policy = h2pool.RetryPolicy(per_try_timeout=per_try)
    decision = decide_retry(
        error,
        method=method,
        replayable=True,
        tries=Tries(),
        now=0.0,
        deadline=None,
        policy=policy,
        connected=False,
    )
    assert decision.action is RetryAction.STOP
    connected = decide_retry(
        error, method=method, replayable=True, tries=Tries(), now=0.0, deadline=None, policy=policy
    )
    assert connected.action is RetryAction.RETRY  # never processed, on a connection: retried


FAILURES = st.sampled_from(
    [
        None,
        h2pool.ConnectError("cannot connect"),
        h2pool.ConnectTimeout("timed out"),
        h2pool.CertificateVerifyError("bad certificate"),
    ]
)


@given(states=st.lists(st.tuples(st.booleans(), FAILURES), max_size=4))
def test_unreachable_only_when_every_endpoint_failed_its_latest_attempt(
    states: list[tuple[bool, h2pool.H2PoolError | None]],
) -> None:
    endpoints: list[Endpoint[Any]] = []
    for index, (connecting, failure) in enumerate(states):
        endpoint: Endpoint[Any] = Endpoint(f"10.0.0.{index}:80", connecting=int(connecting))
        endpoint.last_failure = failure
        endpoints.append(endpoint)
    error = unreachable(endpoints)
    failures = [failure for _, failure in states]
    if not states or any(connecting for connecting, _ in states) or None in failures:
        assert error is None
        return
    assert error is not None
    if len(states) == 1:
        assert error is failures[0]
        return
    kinds = {type(failure) for failure in failures}
    assert type(error) is (kinds.pop() if len(kinds) == 1 else h2pool.ConnectError)
    assert error.__cause__ is failures[-1]
    assert str(error).startswith("no endpoint could be reached: ")
    for endpoint, failure in zip(endpoints, failures, strict=True):
        assert f"{endpoint.address}: {failure}" in str(error)


_UNCONFIGURED = """
import asyncio, h2pool
async def main():
    async with h2pool.Pool("http://127.0.0.1:{port}") as pool:
        try:
            await pool.get("/")
        except h2pool.ConnectError as error:
            print(error)
asyncio.run(main())
"""


def test_a_refused_port_prints_nothing_when_logging_is_not_configured() -> None:
    # The error is the one line the caller prints; the pool's own log records
    # (a failed connection attempt is a warning) go nowhere without a handler.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connections are refused
    done = subprocess.run(
        [sys.executable, "-c", _UNCONFIGURED.format(port=port)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert done.stderr == ""
    assert done.stdout.startswith(f"GET http://127.0.0.1:{port}/ to 127.0.0.1:{port}: ")
    assert done.stdout.count("\n") == 1
