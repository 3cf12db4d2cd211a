"""httpx's and httpcore's connection options as Pool options: pure mappings, checked at once.

Both adapters take the arguments their library's own transport or pool
takes, so that swapping one in changes one line. What h2pool can honour is
mapped here; what it cannot (a proxy, a Unix socket, ...) is refused when
the adapter is built, in one line naming the argument, rather than on the
first request.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any, Literal

import certifi

from .._core.tls import client_ssl_context
from .._pool.checks import check_count

__all__ = [
    "check_supported",
    "http1_option",
    "limits_options",
    "merge_options",
    "tls_context",
]

# Arguments of httpx.AsyncHTTPTransport and httpcore.AsyncConnectionPool that
# h2pool does not implement, and why: refused when given (not None).
_UNSUPPORTED: Mapping[str, str] = {
    "proxy": "h2pool connects to each origin directly (no HTTP or SOCKS proxy)",
    "uds": "h2pool's pools connect over TCP only",
    "local_address": "h2pool does not bind the local address",
    "socket_options": "h2pool sets its own socket options (see Pool's tcp_keepalive)",
    "network_backend": "h2pool runs on asyncio's own transports",
}


def check_supported(adapter: str, arguments: Mapping[str, Any]) -> None:
    """Refuse the library arguments h2pool does not implement (those given, not None).

    Raises:
        TypeError: One was given; the message names it and says why.
    """
    for name, why in _UNSUPPORTED.items():
        if arguments.get(name) is not None:
            raise TypeError(f"{adapter} does not support {name}=: {why}")


def http1_option(http1: bool, http2: bool) -> bool | Literal["never"]:
    """Pool's ``http1`` for httpx's and httpcore's ``http1`` and ``http2`` flags.

    Both (the adapters' default): HTTP/2 where the server speaks it, HTTP/1.1
    elsewhere. Only ``http1``: HTTP/1.1 unless TLS's ALPN chooses HTTP/2.
    Only ``http2``: HTTP/2 only.

    Raises:
        ValueError: Neither is True.
    """
    if http1 and http2:
        return False
    if http1:
        return True
    if http2:
        return "never"
    raise ValueError("at least one of http1 and http2 must be True")


def limits_options(
    max_connections: int | None, max_keepalive_connections: int | None
) -> dict[str, int]:
    """Pool options for httpx's ``Limits`` (and httpcore's pool arguments of the same names).

    ``max_connections`` caps the connections of each endpoint: HTTP/2 ones
    (``max_connections``: a new one is opened only when the others are full)
    and HTTP/1.1 ones (``http1_max_connections``, one request at a time
    each). ``max_keepalive_connections=0`` opens no connection ahead of
    requests (``min_connections=0``). None leaves the Pool's default.
    """
    options: dict[str, int] = {}
    if max_connections is not None:
        check_count("max_connections", max_connections, 1)
        options["max_connections"] = options["http1_max_connections"] = max_connections
    if max_keepalive_connections is not None:
        check_count("max_keepalive_connections", max_keepalive_connections, 0)
        if max_keepalive_connections == 0:
            options["min_connections"] = 0
    return options


def merge_options(mapped: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` (Pool options) with ``mapped`` (from the library's arguments) added.

    Raises:
        TypeError: Both set one option.
    """
    both = sorted(set(mapped) & set(given))
    if both:
        raise TypeError(f"{both[0]} is set twice: by a library argument (limits=?) and directly")
    return {**given, **mapped}


def tls_context(
    verify: ssl.SSLContext | str | os.PathLike[str] | bool,
    cert: str | tuple[str, str] | tuple[str, str, str] | None,
    trust_env: bool,
) -> ssl.SSLContext | bool | None:
    """The Pool's ``ssl`` for httpx's ``verify``, ``cert`` and ``trust_env``.

    ``verify``: True verifies against the CAs of ``SSL_CERT_FILE`` or
    ``SSL_CERT_DIR`` (when ``trust_env``), else certifi's; a path to a CA
    bundle (file) or a directory of hashed CA certificates verifies against
    those only; an ``ssl.SSLContext`` is used as it is; False verifies
    nothing (tests only). ``cert``: a client certificate for mutual TLS, as
    httpx takes it: the certificate file (with its key), or a tuple
    (certificate file, key file[, password]).

    Raises:
        TypeError: ``verify`` or ``cert`` has a wrong type.
        OSError: A file could not be read (``ssl.SSLError`` if it is no PEM).
    """
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is True:
        if cert is None and trust_env:
            return None  # the Pool's default: the environment's CAs, else certifi's
        context = client_ssl_context(cafile=None if trust_env else certifi.where())
    elif verify is False:
        if cert is None:
            return False
        context = client_ssl_context(verify=False)
    elif isinstance(verify, str | os.PathLike):
        path = os.fspath(verify)
        if os.path.isdir(path):
            context = ssl.create_default_context(capath=path)
            context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 section 9.2
        else:
            context = client_ssl_context(cafile=path)
    else:
        raise TypeError(
            f"verify must be a bool, a CA file or directory, or an ssl.SSLContext,"
            f" not {type(verify).__name__}"
        )
    if cert is not None:
        if isinstance(cert, str):
            context.load_cert_chain(cert)
        elif isinstance(cert, tuple) and 2 <= len(cert) <= 3:
            context.load_cert_chain(*cert)
        else:
            raise TypeError(
                "cert must be a certificate file or a (certificate, key[, password]) tuple,"
                f" not {type(cert).__name__}"
            )
    return context
