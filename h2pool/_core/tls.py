"""TLS contexts for HTTP/2: ALPN ``h2``, certifi's CA bundle by default."""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence

import certifi

__all__ = ["client_ssl_context", "server_ssl_context"]


def client_ssl_context(
    *,
    verify: bool = True,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    alpn: Sequence[str] = ("h2",),
) -> ssl.SSLContext:
    """A client TLS context offering ALPN ``h2`` (TLS 1.2 or later).

    Args:
        verify: Verify the server's certificate and host name. False accepts
            any certificate: only for tests against servers you control.
        cafile: CA bundle to trust. Without it, the ``SSL_CERT_FILE`` and
            ``SSL_CERT_DIR`` environment variables are honoured, as by
            OpenSSL, httpx and requests; without those, certifi's bundle.
        certfile: Client certificate chain, for mutual TLS.
        keyfile: Private key of ``certfile``.
        alpn: Protocols offered with ALPN, most preferred first; the pool
            offers ``("h2", "http/1.1")`` to fall back to HTTP/1.1.
    """
    capath: str | None = None
    if cafile is None:
        # The environment of an internal deployment names its own CA.
        cafile = os.environ.get("SSL_CERT_FILE") or None
        capath = os.environ.get("SSL_CERT_DIR") or None
        if cafile is None and capath is None:
            cafile = certifi.where()
    context = ssl.create_default_context(cafile=cafile, capath=capath)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 section 9.2
    context.set_alpn_protocols(list(alpn))
    return context


def server_ssl_context(
    certfile: str, keyfile: str | None = None, *, client_cafile: str | None = None
) -> ssl.SSLContext:
    """A server TLS context selecting ALPN ``h2``.

    Args:
        certfile: Server certificate chain (PEM).
        keyfile: Its private key, if not in ``certfile``.
        client_cafile: Require client certificates signed by this CA (mTLS).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cafile is not None:
        context.load_verify_locations(client_cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    return context
