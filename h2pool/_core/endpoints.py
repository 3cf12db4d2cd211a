"""Opening client connections and starting servers (TCP and Unix sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .._exceptions import CertificateVerifyError, ConnectError, ConnectTimeout, H2PoolError
from .config import H2Config, check_duration
from .health import DEFAULT_PING_BUDGET, PingBudget
from .protocol import ConnectedCallback, H2Protocol
from .tls import client_ssl_context

__all__ = [
    "connect_errors",
    "open_connection",
    "open_unix_connection",
    "set_tcp_keepalive",
    "start_server",
    "start_unix_server",
    "tcp_keepalive_options",
]

SSLArg = ssl_module.SSLContext | bool | None

# Unanswered keepalive probes before the kernel gives up (TCP_KEEPCNT).
_KEEPALIVE_PROBES = 3
# The socket options, by platform name: macOS calls TCP_KEEPIDLE TCP_KEEPALIVE.
_KEEPALIVE_IDLE = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
_KEEPALIVE_INTERVAL = getattr(socket, "TCP_KEEPINTVL", None)
_KEEPALIVE_COUNT = getattr(socket, "TCP_KEEPCNT", None)
_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux


def tcp_keepalive_options(seconds: float) -> tuple[int, int, int]:
    """TCP keepalive (idle, interval, probes) noticing a dead peer host within about ``seconds``.

    The kernel sends the first probe after ``idle`` seconds without traffic,
    then one every ``interval`` seconds, and gives up after ``probes``
    unanswered ones: ``idle + interval * probes`` seconds in all, which is
    ``seconds`` rounded down to whole seconds, and at least 4. Half of it is
    idle time, the other half probing, so that one lost probe is no verdict.
    """
    interval = max(1, int(seconds // (2 * _KEEPALIVE_PROBES)))
    idle = max(1, int(seconds) - interval * _KEEPALIVE_PROBES)
    return idle, interval, _KEEPALIVE_PROBES


def set_tcp_keepalive(transport: asyncio.BaseTransport, seconds: float | None) -> None:
    """Turn on TCP keepalive of a TCP connection (None: leave the OS default).

    Sets SO_KEEPALIVE and, where the platform has them, TCP_KEEPIDLE,
    TCP_KEEPINTVL and TCP_KEEPCNT from :func:`tcp_keepalive_options`, and
    TCP_USER_TIMEOUT (Linux) to the same total, so that data left unacknowledged
    (which suspends keepalive probes) is bounded alike. Keepalive probes are
    answered by the peer's kernel: they notice a dead or unreachable host,
    never a hung process.

    Raises:
        OSError: The socket refused an option; the transport is closed.
    """
    sock = transport.get_extra_info("socket")
    if seconds is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle, interval, probes = tcp_keepalive_options(seconds)
    options = (
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, _KEEPALIVE_IDLE, idle),
        (socket.IPPROTO_TCP, _KEEPALIVE_INTERVAL, interval),
        (socket.IPPROTO_TCP, _KEEPALIVE_COUNT, probes),
        (socket.IPPROTO_TCP, _USER_TIMEOUT, (idle + interval * probes) * 1000),
    )
    try:
        for level, option, value in options:
            if option is not None:
                sock.setsockopt(level, option, value)
    except OSError:
        transport.close()
        raise


def _client_context(ssl: SSLArg) -> ssl_module.SSLContext | None:
    if ssl is True:
        return client_ssl_context()
    if ssl is False or ssl is None:
        return None
    return ssl


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextlib.asynccontextmanager
async def connect_errors(what: str, timeout: float | None) -> AsyncIterator[None]:
    """Bound a connection set-up by ``timeout`` and turn its failures into h2pool errors.

    Raises:
        ConnectTimeout: ``timeout`` ran out.
        CertificateVerifyError: The peer's certificate failed verification.
        ConnectError: TCP or TLS failed otherwise.
        ValueError: ``timeout`` is NaN, infinite or not positive.
        TypeError: ``timeout`` is not a number.
    """
    check_duration("connect_timeout", timeout)
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError:
        raise ConnectTimeout(f"connecting to {what} timed out after {timeout}s") from None
    except ssl_module.SSLCertVerificationError as exc:
        raise CertificateVerifyError(
            f"TLS certificate verification failed for {what}: {exc.verify_message}"
        ) from exc
    except ssl_module.SSLError as exc:
        raise ConnectError(f"TLS handshake with {what} failed: {exc}") from exc
    except OSError as exc:
        reason = str(exc) or type(exc).__name__  # ConnectionResetError() has no text
        raise ConnectError(f"cannot connect to {what}: {reason}") from exc


def _protocol_factory(
    client_side: bool,
    functional_timeout: float | None,
    concurrency: int,
    config: H2Config | None,
    **options: Any,
) -> Callable[[], H2Protocol]:
    """What makes the protocol of each connection (``options``: side-specific arguments)."""
    return functools.partial(
        H2Protocol,
        client_side=client_side,
        functional_timeout=functional_timeout,
        concurrency=concurrency,
        config=config,
        **options,
    )


async def _open_client(
    what: str,
    create: Callable[..., Awaitable[tuple[asyncio.BaseTransport, H2Protocol]]],
    factory: Callable[[], H2Protocol],
    ssl: SSLArg,
    tls_name: str,
    connect_timeout: float | None,
    tcp_keepalive: float | None,
    kwargs: dict[str, Any],
) -> H2Protocol:
    """Connect with ``create`` (a loop method), mapping every failure to an h2pool error."""
    context = _client_context(ssl)
    if context is not None:
        kwargs["server_hostname"] = tls_name
    async with connect_errors(what, connect_timeout):
        transport, protocol = await create(factory, ssl=context, **kwargs)
        set_tcp_keepalive(transport, tcp_keepalive)
    if not protocol.functional:  # e.g. ALPN chose another protocol
        try:
            await protocol.wait_functional()
        except H2PoolError as exc:
            raise ConnectError(f"{what}: {exc}") from None
    return protocol


async def open_connection(
    host: str,
    port: int,
    *,
    ssl: SSLArg = None,
    server_hostname: str | None = None,
    functional_timeout: float | None = None,
    concurrency: int = 100,
    config: H2Config | None = None,
    connect_timeout: float | None = None,
    ping_interval: float | None = None,
    ping_budget: PingBudget | None = DEFAULT_PING_BUDGET,
    tcp_keepalive: float | None = None,
    **kwargs: Any,
) -> H2Protocol:
    """Open an HTTP/2 client connection over TCP.

    Args:
        host: Host name or address to connect to.
        port: TCP port.
        ssl: None or False for cleartext h2c (prior knowledge), True for TLS
            with certifi's CAs, or an ``ssl.SSLContext`` (offer ALPN ``h2``;
            see :func:`h2pool.client_ssl_context`).
        server_hostname: TLS SNI and certificate name, and the default
            ``:authority``, when they differ from ``host``.
        functional_timeout: See :class:`H2Protocol`; None disables the
            health check.
        concurrency: Local cap on open streams (the peer's limit also applies).
        config: Window sizes and other settings.
        connect_timeout: Bound on TCP and TLS set-up, in seconds.
        ping_interval: Silence before a health PING, if not functional_timeout.
        ping_budget: PINGs allowed while the peer sends no HEADERS or DATA
            (see :class:`h2pool.PingBudget`; on by default so that gRPC
            servers accept the health check), or None for no limit.
        tcp_keepalive: Seconds within which TCP keepalive notices a dead
            peer host (see :func:`set_tcp_keepalive`), or None (the default)
            to leave the operating system's setting.
        **kwargs: Passed to ``loop.create_connection`` (e.g. ``local_addr``).

    Raises:
        ConnectError: TCP, TLS or ALPN failed.
        ConnectTimeout: ``connect_timeout`` ran out.
        ValueError: A duration is NaN, infinite or not positive.
        TypeError: A duration is not a number.
    """
    check_duration("tcp_keepalive", tcp_keepalive)
    authority = _authority(server_hostname or host, port)
    options = {"ping_interval": ping_interval, "ping_budget": ping_budget, "authority": authority}
    factory = _protocol_factory(True, functional_timeout, concurrency, config, **options)
    create = functools.partial(asyncio.get_running_loop().create_connection, host=host, port=port)
    tls_name = server_hostname or host
    return await _open_client(
        authority, create, factory, ssl, tls_name, connect_timeout, tcp_keepalive, kwargs
    )


async def open_unix_connection(
    path: str,
    *,
    ssl: SSLArg = None,
    server_hostname: str | None = None,
    functional_timeout: float | None = None,
    concurrency: int = 100,
    config: H2Config | None = None,
    connect_timeout: float | None = None,
    ping_interval: float | None = None,
    ping_budget: PingBudget | None = DEFAULT_PING_BUDGET,
    authority: str = "localhost",
    **kwargs: Any,
) -> H2Protocol:
    """Open an HTTP/2 client connection over a Unix socket.

    Same arguments as :func:`open_connection`, with ``path`` instead of host
    and port, and ``authority`` for the default ``:authority`` of requests
    (no ``tcp_keepalive``: there is no TCP).
    """
    authority = server_hostname or authority
    options = {"ping_interval": ping_interval, "ping_budget": ping_budget, "authority": authority}
    factory = _protocol_factory(True, functional_timeout, concurrency, config, **options)
    create = functools.partial(asyncio.get_running_loop().create_unix_connection, path=path)
    return await _open_client(path, create, factory, ssl, authority, connect_timeout, None, kwargs)


def _server_factory(
    client_connected_cb: ConnectedCallback,
    concurrency: int,
    functional_timeout: float | None,
    config: H2Config | None,
) -> Callable[[], H2Protocol]:
    # Checked here, at start, rather than by each connection's protocol.
    check_duration("functional_timeout", functional_timeout)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    return _protocol_factory(
        False, functional_timeout, concurrency, config, on_connected=client_connected_cb
    )


async def start_server(
    client_connected_cb: ConnectedCallback,
    host: str | None = None,
    port: int | None = None,
    *,
    ssl: ssl_module.SSLContext | None = None,
    concurrency: int = 100,
    functional_timeout: float | None = None,
    config: H2Config | None = None,
    **kwargs: Any,
) -> asyncio.Server:
    """Start an HTTP/2 server on TCP.

    Args:
        client_connected_cb: Called with the server-side :class:`H2Protocol`
            of each new connection. It may be an async function (run as a
            task) or a plain callable (for example one that creates a task).
        host: Address to listen on (``"127.0.0.1"`` for local only).
        port: TCP port; 0 picks a free one.
        ssl: A server context offering ALPN ``h2`` (see
            :func:`h2pool.server_ssl_context`), or None for h2c.
        concurrency: MAX_CONCURRENT_STREAMS advertised; excess streams are
            refused with REFUSED_STREAM.
        functional_timeout: Health check of each connection, as for clients.
        config: Window sizes and other settings.
        **kwargs: Passed to ``loop.create_server``.
    """
    loop = asyncio.get_running_loop()
    factory = _server_factory(client_connected_cb, concurrency, functional_timeout, config)
    return await loop.create_server(factory, host, port, ssl=ssl, **kwargs)


async def start_unix_server(
    client_connected_cb: ConnectedCallback,
    path: str | None = None,
    *,
    ssl: ssl_module.SSLContext | None = None,
    concurrency: int = 100,
    functional_timeout: float | None = None,
    config: H2Config | None = None,
    **kwargs: Any,
) -> asyncio.Server:
    """Start an HTTP/2 server on a Unix socket; see :func:`start_server`."""
    loop = asyncio.get_running_loop()
    factory = _server_factory(client_connected_cb, concurrency, functional_timeout, config)
    return await loop.create_unix_server(factory, path, ssl=ssl, **kwargs)
