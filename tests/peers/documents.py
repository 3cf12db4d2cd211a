"""The standard test documents (``docroot``), and the base of the servers that serve them."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from .certs import Certificates
from .process import _ServerProcess

INDEX_HTML = b"hello world\n"
"""Contents of ``index.html`` in the docroot."""

SMALL_TXT = b"abcdefghi\n" * 10
"""Contents of ``small.txt`` in the docroot (100 bytes)."""

BIG_BIN_SIZE = 16 * 1024 * 1024
"""Size of ``big.bin`` in the docroot: large enough to exhaust default flow-control windows."""

# Fixed seed: a failure involving big.bin can be reproduced byte for byte.
_BIG_BIN_SEED = 0x5EED


def make_docroot(directory: Path) -> str:
    """Write the standard test documents into ``directory``.

    Args:
        directory: An existing, empty directory.

    Returns:
        The hex SHA-256 of ``big.bin``.
    """
    big = random.Random(_BIG_BIN_SEED).randbytes(BIG_BIN_SIZE)
    (directory / "index.html").write_bytes(INDEX_HTML)
    (directory / "small.txt").write_bytes(SMALL_TXT)
    (directory / "big.bin").write_bytes(big)
    return hashlib.sha256(big).hexdigest()


class DocrootServer(_ServerProcess):
    """A server process serving a directory on 127.0.0.1, cleartext or TLS (nghttpd, nginx).

    Attributes:
        docroot: The directory served.
        certificates: The TLS certificate, or None for cleartext.
    """

    def __init__(
        self,
        docroot: Path,
        certificates: Certificates | None,
        *,
        log_dir: Path | None,
        port: int | None,
        startup_timeout: float,
    ) -> None:
        super().__init__(log_dir=log_dir, port=port, startup_timeout=startup_timeout)
        self.docroot = docroot
        self.certificates = certificates

    @property
    def scheme(self) -> str:
        """``"https"`` with TLS, ``"http"`` for cleartext (h2c for nghttpd)."""
        return "http" if self.certificates is None else "https"

    @property
    def _url_scheme(self) -> str:
        return self.scheme

    def _repr_detail(self) -> str:
        return f"docroot={self.docroot}"
