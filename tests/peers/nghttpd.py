"""nghttpd: nghttp2's HTTP/2 server, serving a directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .certs import Certificates
from .documents import DocrootServer
from .process import HOST, require_executable


class Nghttpd(DocrootServer):
    """An nghttpd process serving a directory on 127.0.0.1, h2c or TLS.

    Use it as a context manager, or call ``start()`` and ``close()``. It is synchronous, but
    starting takes milliseconds, so it is fine to use from async tests too. Once started, it
    keeps its port: ``start()`` after ``close()`` or ``kill()`` (or ``restart()``) listens on the
    same port again (nghttpd sets SO_REUSEADDR), so a client sees the same server go away and
    come back.

    Useful ``extra_args`` (nghttpd 1.52): ``-m N`` (SETTINGS_MAX_CONCURRENT_STREAMS, default 100),
    ``-w N`` / ``--window-bits=N`` (stream initial window 2**N-1), ``-W N`` /
    ``--connection-window-bits=N`` (connection window 2**N-1), ``--echo-upload`` (echo POST/PUT
    bodies), ``--early-response``, ``--trailer='name: value'``, ``-v`` (frame log on stdout, i.e.
    in ``nghttpd.stdout``).

    Attributes:
        docroot: The directory served.
        certificates: The TLS certificate, or None for h2c.
        extra_args: Additional command-line options, placed before the port.
        returncode: Exit status once stopped (-15, i.e. -SIGTERM, after a normal ``close()``).
    """

    _name = "nghttpd"

    def __init__(
        self,
        docroot: Path,
        *,
        certificates: Certificates | None = None,
        extra_args: Sequence[str] = (),
        log_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        """Prepare, but do not start, an nghttpd process.

        Args:
            docroot: Directory to serve.
            certificates: Serve TLS with this certificate; h2c (``--no-tls``) if None.
            extra_args: Additional nghttpd options, e.g. ``["-m", "10", "--window-bits=16"]``.
            log_dir: Directory for stdout/stderr logs (e.g. pytest's ``tmp_path``, which pytest
                keeps for inspection); if None, a temporary directory removed by ``close()``.
            port: Port to listen on; a free one is picked if None.
            startup_timeout: Seconds to wait for the port to accept connections.
        """
        super().__init__(
            docroot, certificates, log_dir=log_dir, port=port, startup_timeout=startup_timeout
        )
        self.extra_args = list(extra_args)

    def command(self, port: int) -> list[str]:
        """Return the nghttpd command line for ``port``."""
        argv = [require_executable("nghttpd"), "-a", HOST, "-d", str(self.docroot)]
        argv += self.extra_args
        if self.certificates is None:
            return [*argv, "--no-tls", str(port)]
        return [*argv, str(port), str(self.certificates.key_pem), str(self.certificates.cert_pem)]
