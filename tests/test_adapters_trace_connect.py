"""The ``trace`` extension's connection events, side by side with httpcore's against nghttpd.

The request whose routing opens a connection is told of its steps (``connection.connect_tcp``,
``connection.start_tls``, ``http2.send_connection_init``) in httpcore's order and with its
arguments; connections opened ahead of requests tell nobody, and a failing callback does not
break the connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import httpx
import pytest
import trustme

import h2pool
from tests.http1_server import http1_server
from tests.peers import INDEX_HTML, Certificates, Nghttpd
from tests.waiting import eventually

pytestmark = pytest.mark.peer

Events = list[tuple[str, dict[str, Any]]]


def recorder() -> tuple[Events, Any]:
    events: Events = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        events.append((name, info))

    return events, trace


async def traced_get(client: httpx.AsyncClient, url: str) -> Events:
    events, trace = recorder()
    response = await client.get(url, extensions={"trace": trace})
    assert response.content == INDEX_HTML
    assert response.http_version == "HTTP/2"
    return events


def names(events: Events) -> list[str]:
    return [name for name, _ in events]


def keys(events: Events) -> list[tuple[str, list[str]]]:
    """Each event's name and the names of its arguments (their values differ by library).

    httpcore's ``receive_remote_settings`` (read while it waits for the response headers)
    has no counterpart: the pool has the server's SETTINGS before it sends a request.
    """
    return [(name, sorted(info)) for name, info in events if "receive_remote_settings" not in name]


async def test_a_fresh_h2c_connection_as_httpcore_tells_it(nghttpd_h2c: Nghttpd) -> None:
    url = nghttpd_h2c.url("/index.html")
    async with httpx.AsyncClient(http1=False, http2=True) as client:  # httpcore, prior knowledge
        theirs = await traced_get(client, url)
    async with httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport()) as client:
        ours = await traced_get(client, url)
    assert names(theirs)[:4] == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "http2.send_connection_init.started",
        "http2.send_connection_init.complete",
    ]
    assert keys(ours) == keys(theirs)


async def test_a_fresh_tls_connection_as_httpcore_tells_it(
    nghttpd_tls: Nghttpd, certificates: Certificates
) -> None:
    url = f"https://127.0.0.1:{nghttpd_tls.port}/index.html"
    context = ssl.create_default_context(cafile=str(certificates.ca_pem))
    async with httpx.AsyncClient(http2=True, verify=context) as client:
        theirs = await traced_get(client, url)
    transport = h2pool.AsyncHTTPTransport(verify=str(certificates.ca_pem))
    async with httpx.AsyncClient(transport=transport) as client:
        ours = await traced_get(client, url)
        again = await traced_get(client, url)
    assert names(theirs)[:6] == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "connection.start_tls.started",
        "connection.start_tls.complete",
        "http2.send_connection_init.started",
        "http2.send_connection_init.complete",
    ]
    assert keys(ours) == keys(theirs)
    started = ours[2][1]
    assert started["server_hostname"] == "127.0.0.1"
    assert isinstance(started["ssl_context"], ssl.SSLContext)
    tls = ours[3][1]["return_value"]
    assert tls.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    # The second request reuses the connection: no connection events, as with httpcore.
    assert not any(name.startswith("connection.") for name in names(again))
    assert names(again) == names(ours)[6:]


async def test_a_failed_tls_handshake_is_told(nghttpd_tls: Nghttpd, tmp_path: Any) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)
    events, trace = recorder()
    transport = h2pool.AsyncHTTPTransport(verify=str(other))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="certificate verification failed"):
            await client.get(
                f"https://127.0.0.1:{nghttpd_tls.port}/index.html", extensions={"trace": trace}
            )
    assert names(events)[:4] == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "connection.start_tls.started",
        "connection.start_tls.failed",
    ]
    assert isinstance(events[3][1]["exception"], h2pool.CertificateVerifyError)


async def test_a_raising_callback_does_not_break_the_connection(
    nghttpd_h2c: Nghttpd, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        seen.append(name)
        if name.startswith(("connection.", "http2.send_connection_init")):
            raise RuntimeError(f"broken tracer on {name}")

    caplog.set_level(logging.WARNING, logger="h2pool.pool")
    async with httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport()) as client:
        response = await client.get(nghttpd_h2c.url("/index.html"), extensions={"trace": trace})
    assert response.content == INDEX_HTML
    assert seen[:4] == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "http2.send_connection_init.started",
        "http2.send_connection_init.complete",
    ]
    logged = [r for r in caplog.records if "trace observer raised" in r.getMessage()]
    assert len(logged) == 4
    assert all(isinstance(r.exc_info and r.exc_info[1], RuntimeError) for r in logged)


async def test_connections_opened_ahead_tell_nobody(nghttpd_h2c: Nghttpd) -> None:
    events: Events = []

    async def observe(layer: str, step: str, info: dict[str, Any]) -> None:
        events.append((f"{layer} {step}", info))

    async with h2pool.Pool(f"http://127.0.0.1:{nghttpd_h2c.port}") as pool:  # start(): ahead
        await eventually(lambda: pool.stats().endpoints[0].connections == 1)
        async with pool.stream("GET", "/index.html", _observer=observe) as response:
            await response.aread()
    assert events
    assert not any(
        name.startswith(("connection ", "HTTP/2 send_connection_init")) for name, _ in events
    )
    # Without start(), the request's routing opens the connection: it is told.
    events.clear()
    pool = h2pool.Pool(f"http://127.0.0.1:{nghttpd_h2c.port}")
    try:
        async with pool.stream("GET", "/index.html", _observer=observe) as response:
            await response.aread()
    finally:
        await pool.aclose()
    assert names(events)[:4] == [
        "connection connect_tcp.started",
        "connection connect_tcp.complete",
        "HTTP/2 send_connection_init.started",
        "HTTP/2 send_connection_init.complete",
    ]


async def test_a_fresh_http11_connection_as_httpcore_tells_it() -> None:
    with http1_server() as server:
        results = []
        for client in (
            httpx.AsyncClient(),  # httpcore, HTTP/1.1
            httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport(http2=False)),
        ):
            events, trace = recorder()
            async with client:
                response = await client.get(server.url, extensions={"trace": trace})
            assert (response.http_version, response.content) == ("HTTP/1.1", b"hello")
            results.append(events)
    theirs, ours = results
    assert names(theirs)[:3] == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "http11.send_request_headers.started",
    ]
    assert keys(ours) == keys(theirs)


async def test_a_callback_that_hangs_is_bounded_by_the_connect_timeout(
    nghttpd_tls: Nghttpd, certificates: Certificates
) -> None:
    seen: list[tuple[str, Any]] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        seen.append((name, info.get("exception")))
        if name == "connection.start_tls.complete":
            await asyncio.Event().wait()  # never returns: the connect timeout ends it

    transport = h2pool.AsyncHTTPTransport(verify=str(certificates.ca_pem))
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, connect=0.5)) as c:
        with pytest.raises(httpx.ConnectTimeout):
            await c.get(
                f"https://127.0.0.1:{nghttpd_tls.port}/index.html", extensions={"trace": trace}
            )
        # The attempt's own end may come just after the request's.
        await eventually(lambda: "connection.start_tls.failed" in dict(seen))
        # The handshaken connection was dropped, not kept half made.
        assert all(not s.endpoints[0].connections for s in transport.stats().values())
    opening = [(name, error) for name, error in seen if name.startswith("connection.")]
    assert [name for name, _ in opening] == [
        "connection.connect_tcp.started",
        "connection.connect_tcp.complete",
        "connection.start_tls.started",
        "connection.start_tls.complete",
        "connection.start_tls.failed",
    ]
    assert isinstance(opening[4][1], h2pool.ConnectTimeout)
