"""Opening a channel to an endpoint: TCP, TLS, and the protocol ALPN chose.

One handshake decides: the connection starts with a small protocol that, as
soon as TLS is up, looks at the ALPN result and hands the transport over to
HTTP/2 (the core module) or HTTP/1.1 (httpcore), so no second handshake is
needed to fall back.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from .._core.config import H2Config
from .._core.endpoints import connect_errors, set_tcp_keepalive
from .._core.health import PingBudget
from .._core.protocol import H2Protocol
from .._exceptions import ConnectError, H2PoolError
from .channel import Channel, H2Channel
from .http11 import H11Channel, StreamProtocol

__all__ = ["ChannelSettings", "open_channel"]


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """How the pool connects to its endpoints.

    Attributes:
        scheme: ``"http"`` or ``"https"``.
        authority: ``:authority`` (HTTP/2) and ``Host`` (HTTP/1.1) of requests.
        server_hostname: TLS server name (SNI) and certificate name.
        ssl: TLS context (offering ALPN ``h2`` and ``http/1.1``), or None.
        functional_timeout: Health check of HTTP/2 connections.
        max_streams: Local cap on streams per HTTP/2 connection.
        config: HTTP/2 settings.
        ping_budget: PINGs allowed while the server sends no HEADERS or DATA.
        tcp_keepalive: Seconds within which TCP keepalive notices a dead host, or None.
    """

    scheme: str
    authority: str
    server_hostname: str
    ssl: ssl.SSLContext | None
    functional_timeout: float
    max_streams: int
    config: H2Config | None
    ping_budget: PingBudget | None
    tcp_keepalive: float | None


class _Switch(asyncio.Protocol):
    """Hands a fresh connection to HTTP/2 or HTTP/1.1, as ALPN (or the caller) says."""

    def __init__(self, settings: ChannelSettings, http1: bool, ping_interval: float | None) -> None:
        self._settings = settings
        self._http1 = http1
        self._ping_interval = ping_interval
        self.target: H2Protocol | StreamProtocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        settings = self._settings
        target: H2Protocol | StreamProtocol
        if alpn == "http/1.1" or (self._http1 and alpn != "h2"):
            target = StreamProtocol()
        else:
            target = H2Protocol(
                client_side=True,
                functional_timeout=settings.functional_timeout,
                concurrency=settings.max_streams,
                config=settings.config,
                ping_interval=self._ping_interval,
                ping_budget=settings.ping_budget,
                authority=settings.authority,
            )
        # Swapped before the event loop can deliver any byte to this protocol.
        transport.set_protocol(target)
        target.connection_made(transport)
        self.target = target


async def open_channel(
    address: str,
    host: str,
    port: int,
    settings: ChannelSettings,
    *,
    http1: bool,
    connect_timeout: float | None,
    ping_interval: float | None,
) -> Channel:
    """Connect to ``host:port`` and return a ready channel.

    An HTTP/2 channel is returned only once the peer has proven it is alive
    (its SETTINGS arrived and a PING was answered), so that a blackholed
    endpoint never takes a request.

    Args:
        address: The endpoint's ``"host:port"``, for messages.
        host: Address to connect to.
        port: TCP port.
        settings: The pool's connection settings.
        http1: Speak HTTP/1.1 unless ALPN chooses HTTP/2.
        connect_timeout: Bound on TCP and TLS set-up.
        ping_interval: Silence before a health PING (per peer).

    Raises:
        ConnectError: TCP, TLS or ALPN failed (``CertificateVerifyError``
            when the certificate did).
        ConnectTimeout: ``connect_timeout`` ran out.
        H2ConnectionError: The HTTP/2 peer gave no proof of life.
    """
    loop = asyncio.get_running_loop()
    what = address
    switch = _Switch(settings, http1, ping_interval)
    async with connect_errors(what, connect_timeout):
        transport, _ = await loop.create_connection(
            lambda: switch,
            host,
            port,
            ssl=settings.ssl,
            server_hostname=settings.server_hostname if settings.ssl is not None else None,
        )
        set_tcp_keepalive(transport, settings.tcp_keepalive)
    target = switch.target
    if isinstance(target, StreamProtocol):
        return H11Channel(target, address, settings.scheme, host, port, settings.authority.encode())
    assert target is not None
    channel = H2Channel(target, address, settings.scheme.encode(), settings.authority.encode())
    try:
        await target.wait_functional()
    except H2PoolError as exc:
        target.close_connection()
        if isinstance(exc, ConnectError):
            raise  # e.g. ALPN chose neither h2 nor http/1.1
        # Nothing was sent yet: a connection that fails here failed to open
        # (for example a server refusing the client certificate under TLS 1.3).
        raise ConnectError(f"{what}: the connection failed while opening: {exc}") from exc
    except BaseException:
        target.close_connection()
        raise
    return channel
