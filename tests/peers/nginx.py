"""nginx serving a directory over HTTP/1.1 only, cleartext or TLS."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .certs import Certificates
from .documents import DocrootServer
from .process import HOST

# Where Debian's nginx-light puts the binary; /usr/sbin is not on every user's PATH.
_NGINX_FALLBACK = Path("/usr/sbin/nginx")

# The temporary-file directories of the http modules nginx-light is built with. Each must be
# set, or nginx tries to create its compiled-in default under /var/lib/nginx.
_NGINX_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def _nginx_executable() -> str:
    """Return the path of the nginx binary.

    Raises:
        FileNotFoundError: nginx is not installed.
    """
    path = shutil.which("nginx")
    if path is not None:
        return path
    if os.access(_NGINX_FALLBACK, os.X_OK):
        return str(_NGINX_FALLBACK)
    raise FileNotFoundError(
        "nginx is not installed; the nginx peer tests need the Debian package nginx-light "
        "(see scripts/setup), or deselect them with -m 'not peer'"
    )


def _nginx_string(value: object) -> str:
    """Quote ``value`` as an nginx configuration string.

    Quoting keeps spaces, ``;`` and braces in paths from ending the directive. ``$`` is still
    expanded by directives that take variables (``root``), so paths must not contain one.
    """
    text = str(value)
    if "$" in text:
        raise ValueError(f"nginx would expand '$' in {text!r}")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class Nginx(DocrootServer):
    """nginx serving a directory on 127.0.0.1 over HTTP/1.1 only, cleartext or TLS.

    This is the peer for "the server does not speak HTTP/2": nothing enables ``http2``, so
    (observed with nginx 1.22.1 from Debian 12 and OpenSSL 3.0):

    * Over TLS, ALPN picks ``http/1.1`` from ``h2,http/1.1`` (``curl --http2`` falls back to
      HTTP/1.1). A client that offers *only* ``h2`` fails the handshake: nginx (since 1.21.4)
      sends a fatal ``no_application_protocol`` alert (120) rather than completing without ALPN.
    * In cleartext, the h2c upgrade (``curl --http2``) is ignored and answered in HTTP/1.1, and
      the HTTP/2 connection preface gets ``HTTP/1.1 400 Bad Request`` with ``Connection: close``.

    It runs as a single process (``master_process off``): SIGTERM ends the one process that
    serves, nothing is left behind, and ``setpriv --pdeathsig`` covers it. That also means it
    never switches to the ``user`` directive's account (``nobody`` by default for root), which
    could not read pytest's private temporary directories. Everything it writes, the
    configuration included, lives in ``log_dir``, which is also its prefix (``-p``): the pid
    file, ``error.log``, ``access.log`` (one line per request, in the ``combined`` format) and
    the ``*_temp`` directories. Keep-alive is on (75 s, 1000 requests per connection), and it
    sets SO_REUSEADDR, so ``restart()`` and ``start()`` after ``close()`` keep the port.

    Attributes:
        docroot: The directory served.
        certificates: The TLS certificate, or None for cleartext.
        server_directives: Extra directives placed in the ``server`` block.
        returncode: Exit status once stopped (0 after a normal ``close()``).
    """

    _name = "nginx"

    def __init__(
        self,
        docroot: Path,
        *,
        certificates: Certificates | None = None,
        server_directives: str = "",
        log_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        """Prepare, but do not start, an nginx process.

        Args:
            docroot: Directory to serve (``index.html`` answers ``/``).
            certificates: Serve TLS (HTTP/1.1 over ALPN) with this certificate; cleartext if
                None.
            server_directives: nginx directives added to the ``server`` block, e.g.
                ``'location = /status { return 200 "ok\\n"; }'`` or ``"keepalive_requests 5;"``.
            log_dir: Directory for the configuration, logs, pid file and temporary files (e.g.
                pytest's ``tmp_path``, which pytest keeps for inspection); if None, a temporary
                directory removed by ``close()``.
            port: Port to listen on; a free one is picked if None.
            startup_timeout: Seconds to wait for the port to accept connections.
        """
        super().__init__(
            docroot, certificates, log_dir=log_dir, port=port, startup_timeout=startup_timeout
        )
        self.server_directives = server_directives

    @property
    def config_path(self) -> Path:
        """The configuration file passed with ``-c``."""
        return self.log_dir / "nginx.conf"

    @property
    def error_log_path(self) -> Path:
        """nginx's error log (startup failures are also on stderr, ``stderr_path``)."""
        return self.log_dir / "error.log"

    @property
    def access_log_path(self) -> Path:
        """nginx's access log, a line per request."""
        return self.log_dir / "access.log"

    @property
    def pid_path(self) -> Path:
        """nginx's pid file; it exists only while nginx runs."""
        return self.log_dir / "nginx.pid"

    def config_text(self, port: int) -> str:
        """Return the configuration that makes nginx listen on ``port``."""
        directory = self.log_dir.resolve()
        # "ssl" without "http2": ALPN can then only select http/1.1.
        listen = f"listen {HOST}:{port}" + ("" if self.certificates is None else " ssl")
        server = [f"{listen};", f"root {_nginx_string(self.docroot.resolve())};"]
        if self.certificates is not None:
            server += [
                f"ssl_certificate {_nginx_string(self.certificates.cert_pem.resolve())};",
                f"ssl_certificate_key {_nginx_string(self.certificates.key_pem.resolve())};",
            ]
        if self.server_directives:
            server.append(self.server_directives)
        http = [
            # Our own small table rather than an include from /etc/nginx.
            "types { text/html html; text/plain txt; }",
            "default_type application/octet-stream;",
            f"access_log {_nginx_string(self.access_log_path.resolve())} combined;",
            *(
                f"{name}_temp_path {_nginx_string(directory / f'{name}_temp')};"
                for name in _NGINX_TEMP_PATHS
            ),
            "server {",
            *(f"    {line}" for line in server),
            "}",
        ]
        main = [
            "daemon off;",
            "master_process off;",
            f"pid {_nginx_string(self.pid_path.resolve())};",
            f"lock_file {_nginx_string(directory / 'nginx.lock')};",
            # info, not the default error: it also records closed keep-alive connections and
            # failed TLS handshakes, which is what one wants to see when a test fails.
            f"error_log {_nginx_string(self.error_log_path.resolve())} info;",
            "events { worker_connections 256; }",
            "http {",
            *(f"    {line}" for line in http),
            "}",
        ]
        return "".join(f"{line}\n" for line in main)

    def command(self, port: int) -> list[str]:
        """Return the nginx command line; the port is in ``config_path``, written by start."""
        return [
            _nginx_executable(),
            "-p",
            f"{self.log_dir.resolve()}/",
            "-c",
            str(self.config_path.resolve()),
            # Before it reads the configuration, nginx would open its compiled-in error log.
            "-e",
            str(self.error_log_path.resolve()),
        ]

    def _spawn_and_wait(self, port: int) -> None:
        # The port is part of the configuration, and start() only knows it per attempt.
        self.config_path.write_text(self.config_text(port))
        super()._spawn_and_wait(port)
