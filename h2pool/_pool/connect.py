"""Opening a channel to an endpoint: TCP, TLS, and the protocol the peer speaks.

One handshake decides over TLS: the connection starts with a small protocol
that, as soon as TLS is up, looks at the ALPN result and hands the transport
over to HTTP/2 (the core module) or HTTP/1.1 (httpcore), so no second
handshake is needed to fall back.

Over cleartext there is no ALPN: the first connection to an endpoint sends
HTTP/2's preface (prior knowledge, RFC 9113 section 3.3) and the peer's
first bytes tell what it speaks (:func:`classify_first_bytes`). A server
that answers otherwise (``HTTP/1.1 400 Bad Request``, an HTML page) or
closes at once speaks HTTP/1.1: the pool then opens an HTTP/1.1 connection
instead, and the endpoint speaks HTTP/1.1 from then on (no request was sent
on the first connection, so none needs retrying). A server answering with a
TLS record, and one that closes at once but completes a TLS handshake,
expects ``https://``; a TLS handshake answered with cleartext bytes means
``http://``: both fail at once with a :class:`ConnectError` saying so.

TCP and TLS are two steps (``loop.start_tls`` after ``create_connection``),
each told, with the start of HTTP/2, to the observer of the request that
asked for the connection, as httpcore's ``trace`` events
(``connection.connect_tcp``, ``connection.start_tls``,
``http2.send_connection_init``). An observer that raises is logged and
ignored: the connection is the pool's, shared by every request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from .._core.config import H2Config
from .._core.endpoints import connect_errors, set_tcp_keepalive
from .._core.health import PingBudget
from .._core.protocol import H2Protocol
from .._core.tls import client_ssl_context
from .._exceptions import ConnectError, ConnectTimeout, H2PoolError
from .channel import Channel, H2Channel
from .http11 import H11Channel, StreamProtocol
from .outgoing import CONNECTION, Observer

__all__ = ["ChannelSettings", "FirstBytes", "classify_first_bytes", "open_channel"]

logger = logging.getLogger("h2pool.pool")


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
        http1_fallback: Over cleartext, speak HTTP/1.1 to a peer that does
            not answer HTTP/2's preface as HTTP/2 (False: HTTP/2 only).
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
    http1_fallback: bool = True


class FirstBytes(enum.Enum):
    """What a cleartext peer's first bytes, in answer to HTTP/2's preface, say it speaks."""

    UNDECIDED = "undecided"  #: too few bytes yet
    HTTP2 = "HTTP/2"  #: a SETTINGS frame header, as RFC 9113 section 3.4 requires first
    TLS = "TLS"  #: a TLS record: an alert (0x15) or a handshake (0x16)
    OTHER = "other"  #: anything else, such as ``HTTP/1.1 400 Bad Request``
    NOTHING = "nothing"  #: the peer closed (or reset) the connection before sending a byte


_SETTINGS = 0x04
_TLS_RECORDS = (0x15, 0x16)  # alert, handshake (RFC 8446 section 5.1)


def classify_first_bytes(data: bytes, closed: bool) -> FirstBytes:
    """What the first bytes a cleartext server sent say it speaks.

    A server speaking HTTP/2 starts with a SETTINGS frame (RFC 9113 section
    3.4): a 3-byte length no larger than 16,384 (so its first byte is 0),
    then the type 0x04. Only the frame header's start is checked; h2 checks
    the rest.

    Args:
        data: Every byte received so far.
        closed: Whether the peer closed its side (nothing more will come).
    """
    if not data:
        return FirstBytes.NOTHING if closed else FirstBytes.UNDECIDED
    if data[0] in _TLS_RECORDS:
        return FirstBytes.TLS
    if data[0] != 0:
        return FirstBytes.OTHER
    if len(data) < 4:
        return FirstBytes.OTHER if closed else FirstBytes.UNDECIDED
    return FirstBytes.HTTP2 if data[3] == _SETTINGS else FirstBytes.OTHER


class _Sniffer(asyncio.Protocol):
    """Holds a cleartext connection's first received bytes until they say what the peer speaks.

    Then it steps aside (the transport goes to the HTTP/2 protocol with
    those bytes) or, for a peer that does not speak HTTP/2, closes the
    connection and keeps the verdict for :func:`open_channel`.
    """

    def __init__(self, target: H2Protocol, transport: asyncio.BaseTransport) -> None:
        self._target = target
        self._transport = transport
        self._received = b""
        self.verdict = FirstBytes.UNDECIDED

    def data_received(self, data: bytes) -> None:
        self._received += data
        self.verdict = classify_first_bytes(self._received, closed=False)
        if self.verdict is FirstBytes.HTTP2:
            self._transport.set_protocol(self._target)
            self._target.data_received(self._received)
        elif self.verdict is not FirstBytes.UNDECIDED:
            self._transport.close()

    def eof_received(self) -> bool | None:
        self.verdict = classify_first_bytes(self._received, closed=True)
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.verdict is FirstBytes.UNDECIDED:
            # Most servers that refuse the preface close with it unread,
            # which makes a reset rather than a clean close.
            self.verdict = classify_first_bytes(self._received, closed=True)
        self._target.connection_lost(exc)

    def pause_writing(self) -> None:
        self._target.pause_writing()

    def resume_writing(self) -> None:
        self._target.resume_writing()


class _Switch(asyncio.Protocol):
    """Hands a fresh connection to HTTP/2 or HTTP/1.1, as ALPN (or the caller) says."""

    def __init__(self, settings: ChannelSettings, http1: bool, ping_interval: float | None) -> None:
        self._settings = settings
        self._http1 = http1
        self._ping_interval = ping_interval
        self.target: H2Protocol | StreamProtocol | None = None
        self.sniffer: _Sniffer | None = None

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
        if ssl_object is None and isinstance(target, H2Protocol):
            self.sniffer = _Sniffer(target, transport)
            transport.set_protocol(self.sniffer)
        else:
            transport.set_protocol(target)
        target.connection_made(transport)
        self.target = target


class _Handshake(asyncio.Protocol):
    """A TLS connection's protocol until ALPN, once the handshake is over, picks the real one.

    asyncio hands it the server's first bytes as soon as the handshake
    completes, before ``start_tls()`` returns: it keeps them (and a loss of
    the connection) for the protocol that takes over.
    """

    def __init__(self) -> None:
        self._received = bytearray()
        self._lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self._received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = (exc,)

    def hand_over(self, target: asyncio.Protocol) -> None:
        """Give ``target`` (now the transport's protocol) what arrived before it."""
        if self._received:
            target.data_received(bytes(self._received))
        if self._lost is not None:
            target.connection_lost(self._lost[0])


async def _tell(observer: Observer | None, layer: str, event: str, info: dict[str, Any]) -> None:
    """Tell ``observer`` of a step of opening a connection; what it raises is only logged.

    The connection is the pool's, for every request: a failing observer of
    the request that asked for it must not fail it.
    """
    if observer is None:
        return
    try:
        await observer(layer, event, info)
    except Exception:
        logger.warning("the trace observer raised on %s; ignored", event, exc_info=True)


async def _open_transport(
    address: str,
    host: str,
    port: int,
    settings: ChannelSettings,
    switch: _Switch,
    timeout: float | None,
    observer: Observer | None,
) -> None:
    """TCP, then TLS when the pool speaks it; ``switch`` then holds the protocol chosen.

    Each step is told to ``observer`` with httpcore's arguments; a failed
    one with the error raised here.
    """
    loop = asyncio.get_running_loop()
    context = settings.ssl
    step = "connect_tcp"
    try:
        async with connect_errors(address, timeout):
            await _tell(
                observer,
                CONNECTION,
                "connect_tcp.started",
                {
                    "host": host,
                    "port": port,
                    "local_address": None,
                    "timeout": timeout,
                    "socket_options": None,
                },
            )
            handshake = _Handshake()
            transport, _ = await loop.create_connection(
                (lambda: switch) if context is None else (lambda: handshake), host, port
            )
            try:
                set_tcp_keepalive(transport, settings.tcp_keepalive)
                connected = {"return_value": transport}
                await _tell(observer, CONNECTION, "connect_tcp.complete", connected)
                if context is None:
                    return
                step = "start_tls"
                name = settings.server_hostname
                await _tell(
                    observer,
                    CONNECTION,
                    "start_tls.started",
                    {"ssl_context": context, "server_hostname": name, "timeout": timeout},
                )
                # On failure start_tls() closes the TCP transport itself.
                tls = await loop.start_tls(transport, handshake, context, server_hostname=name)
            except BaseException:
                transport.close()
                raise
            if tls is None:  # the connection was lost during the handshake
                raise ConnectionResetError(f"{address} closed the connection during TLS")
            try:
                switch.connection_made(tls)
                assert switch.target is not None
                handshake.hand_over(switch.target)
                await _tell(observer, CONNECTION, "start_tls.complete", {"return_value": tls})
            except BaseException:
                tls.abort()  # not close(): that waits for the server's close_notify
                raise
    except (ConnectError, ConnectTimeout) as exc:
        error = exc
        if isinstance(exc, ConnectError) and _cleartext_answer(exc):
            error = ConnectError(
                f"TLS handshake with {address} failed: the server answered without TLS"
                " (it speaks cleartext): use an http:// URL, not https://"
            )
            error.__cause__ = exc
        await _tell(observer, CONNECTION, f"{step}.failed", {"exception": error})
        if error is exc:
            raise
        raise error from exc


async def open_channel(
    address: str,
    host: str,
    port: int,
    settings: ChannelSettings,
    *,
    http1: bool,
    connect_timeout: float | None,
    ping_interval: float | None,
    observer: Observer | None = None,
) -> Channel:
    """Connect to ``host:port`` and return a ready channel.

    An HTTP/2 channel is returned only once the peer has proven it is alive
    (its SETTINGS arrived and a PING was answered), so that a blackholed
    endpoint never takes a request. Over cleartext, a peer that does not
    speak HTTP/2 gets an HTTP/1.1 channel instead (see the module's
    docstring) unless ``settings.http1_fallback`` is False.

    Args:
        address: The endpoint's ``"host:port"``, for messages.
        host: Address to connect to.
        port: TCP port.
        settings: The pool's connection settings.
        http1: Speak HTTP/1.1 unless ALPN chooses HTTP/2.
        connect_timeout: Bound on TCP and TLS set-up.
        ping_interval: Silence before a health PING (per peer).
        observer: Told of each step (TCP, TLS, the start of HTTP/2), or None.

    Raises:
        ConnectError: TCP, TLS or ALPN failed (``CertificateVerifyError``
            when the certificate did), or the scheme does not match what
            the server speaks (the message says which to use).
        ConnectTimeout: ``connect_timeout`` ran out.
        H2ConnectionError: The HTTP/2 peer gave no proof of life.
    """
    switch = _Switch(settings, http1, ping_interval)
    await _open_transport(address, host, port, settings, switch, connect_timeout, observer)
    target = switch.target
    if isinstance(target, StreamProtocol):
        return H11Channel(target, address, settings.scheme, host, port, settings.authority.encode())
    assert target is not None
    channel = H2Channel(target, address, settings.scheme.encode(), settings.authority.encode())
    try:
        # The preface went out as the protocol took the transport (RFC 9113 section 3.4).
        await _tell(observer, "HTTP/2", "send_connection_init.started", {})
        await _tell(observer, "HTTP/2", "send_connection_init.complete", {"return_value": None})
        await target.wait_functional()
    except H2PoolError as exc:
        target.close_connection()
        verdict = switch.sniffer.verdict if switch.sniffer is not None else FirstBytes.HTTP2
        if verdict not in (FirstBytes.HTTP2, FirstBytes.UNDECIDED):
            await _check_cleartext(address, host, port, verdict, settings, connect_timeout, exc)
            return await open_channel(
                address,
                host,
                port,
                settings,
                http1=True,
                connect_timeout=connect_timeout,
                ping_interval=ping_interval,
                observer=observer,
            )
        if isinstance(exc, ConnectError):
            raise  # e.g. ALPN chose neither h2 nor http/1.1
        # Nothing was sent yet: a connection that fails here failed to open
        # (for example a server refusing the client certificate under TLS 1.3).
        raise ConnectError(f"{address}: the connection failed while opening: {exc}") from exc
    except BaseException:
        target.close_connection()
        raise
    return channel


async def _check_cleartext(
    address: str,
    host: str,
    port: int,
    verdict: FirstBytes,
    settings: ChannelSettings,
    timeout: float | None,
    error: H2PoolError,
) -> None:
    """Raise the ConnectError of a cleartext peer that does not speak HTTP/2, if it is one.

    The peer's first bytes (``verdict``) were no HTTP/2: it expects TLS (it
    answered with a TLS record, or it closed at once and completes a TLS
    handshake), or it speaks HTTP/1.1, which the pool may be told not to.
    Returns when HTTP/1.1 may be tried.
    """
    if verdict is FirstBytes.TLS or (
        verdict is FirstBytes.NOTHING
        and await _speaks_tls(host, port, _probe_timeout(timeout, settings.functional_timeout))
    ):
        why = (
            "it answered HTTP/2's preface with a TLS record"
            if verdict is FirstBytes.TLS
            else "it closed a cleartext connection at once and accepts a TLS handshake"
        )
        raise ConnectError(
            f"{address} expects TLS: use an https:// URL, not http:// ({why})"
        ) from error
    if not settings.http1_fallback:
        answer = "closed" if verdict is FirstBytes.NOTHING else "answered as no HTTP/2 peer"
        raise ConnectError(
            f"{address} does not speak HTTP/2 over cleartext: it {answer} to the HTTP/2"
            " preface, and HTTP/1.1 is turned off"
        ) from error


def _probe_timeout(connect_timeout: float | None, functional_timeout: float) -> float:
    """Bound on the TLS probe: a live TLS server answers a ClientHello at once.

    No longer than the silence after which the pool declares a peer dead.
    """
    if connect_timeout is None:
        return functional_timeout
    return min(connect_timeout, functional_timeout)


def _cleartext_answer(error: ConnectError) -> bool:
    """Whether a failed TLS handshake got bytes that are no TLS record (OpenSSL's verdict)."""
    cause = error.__cause__
    return isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER"


async def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificate unchecked).

    Asked only of a cleartext peer that closed at once without a byte, as
    TLS servers do when they receive HTTP/2's preface.
    """
    context = client_ssl_context(verify=False, alpn=("h2", "http/1.1"))
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await asyncio.get_running_loop().create_connection(
                asyncio.Protocol, host, port, ssl=context
            )
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        return False
    # Aborted, not closed: close() would first wait for the server's
    # close_notify, up to asyncio's 30 s, and a probe must not outlive its pool.
    transport.abort()
    return True
