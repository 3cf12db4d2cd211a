"""Throwaway TLS certificates (trustme) and the SSL contexts that use them."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import trustme

from .process import HOST


@dataclasses.dataclass(frozen=True)
class Certificates:
    """PEM files for a throwaway CA and a server certificate signed by it.

    The server certificate is valid for ``localhost`` and ``127.0.0.1``.

    Attributes:
        ca_pem: The CA certificate, for clients to trust (``curl --cacert``).
        cert_pem: The server certificate chain, leaf first.
        key_pem: The server's private key (unencrypted).
    """

    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_certificates(directory: Path) -> Certificates:
    """Create a CA and a server certificate with trustme and write them to ``directory``.

    Args:
        directory: An existing directory; ``ca.pem``, ``cert.pem`` and ``key.pem`` are written.

    Returns:
        The paths of the files written.
    """
    ca = trustme.CA()
    server = ca.issue_cert("localhost", HOST)
    certs = Certificates(
        ca_pem=directory / "ca.pem",
        cert_pem=directory / "cert.pem",
        key_pem=directory / "key.pem",
    )
    ca.cert_pem.write_to_path(str(certs.ca_pem))
    certs.cert_pem.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(certs.key_pem))
    return certs


def client_ssl_context(certs: Certificates) -> ssl.SSLContext:
    """Return a client context that trusts only the test CA and offers ALPN ``h2``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs.ca_pem))
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 section 9.2
    context.set_alpn_protocols(["h2"])
    return context


def server_ssl_context(certs: Certificates) -> ssl.SSLContext:
    """Return a server context with the test certificate that selects ALPN ``h2``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 section 9.2
    context.load_cert_chain(certfile=certs.cert_pem, keyfile=certs.key_pem)
    context.set_alpn_protocols(["h2"])
    return context
