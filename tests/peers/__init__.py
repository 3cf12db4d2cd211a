"""Real third-party HTTP/2 peers for the test suite, started and stopped on 127.0.0.1.

A helper library, one module per peer, whose fixtures (``fixtures.py``) ``tests/conftest.py``
registers through ``pytest_plugins``, so that they are available to every test:

* ``docroot`` (session): a directory with ``index.html``, ``small.txt`` and a 16 MiB ``big.bin``.
* ``big_bin_sha256`` (session): the hex SHA-256 of ``big.bin``.
* ``certificates`` (session): a trustme CA and a server certificate for localhost/127.0.0.1.
* ``nghttpd_h2c`` / ``nghttpd_tls`` (function): nghttpd serving ``docroot``.
* ``grpc_echo_server`` (function): a grpcio server with the ``test.Echo`` service.
* ``hypercorn_factory`` (function): starts hypercorn (h2c, ``tests.asgi_app``) on demand.

Every wait has a deadline, and every process started here is terminated, killed if it ignores
that, and reaped, including when the test using it fails. Peers are started, where possible,
with ``setpriv --pdeathsig KILL`` so that they also die if pytest itself is killed.
"""

from __future__ import annotations

from .certs import Certificates, client_ssl_context, make_certificates, server_ssl_context
from .commands import H2loadResult, run_command, run_curl, run_h2load
from .documents import BIG_BIN_SIZE, INDEX_HTML, SMALL_TXT, make_docroot
from .fixtures import (
    big_bin_sha256,
    certificates,
    docroot,
    grpc_echo_server,
    hypercorn_factory,
    nghttpd_h2c,
    nghttpd_tls,
    nginx_http1,
    nginx_http1_tls,
)
from .grpc_echo import GrpcEchoServer
from .hypercorn import Hypercorn, HypercornFactory, HypercornOption
from .nghttpd import Nghttpd
from .nginx import Nginx
from .process import HOST, PeerExitedError, free_port, require_executable, wait_for_port

__all__ = [
    "BIG_BIN_SIZE",
    "HOST",
    "INDEX_HTML",
    "SMALL_TXT",
    "Certificates",
    "GrpcEchoServer",
    "H2loadResult",
    "Hypercorn",
    "HypercornFactory",
    "HypercornOption",
    "Nghttpd",
    "Nginx",
    "PeerExitedError",
    "big_bin_sha256",
    "certificates",
    "client_ssl_context",
    "docroot",
    "free_port",
    "grpc_echo_server",
    "hypercorn_factory",
    "make_certificates",
    "make_docroot",
    "nghttpd_h2c",
    "nghttpd_tls",
    "nginx_http1",
    "nginx_http1_tls",
    "require_executable",
    "run_command",
    "run_curl",
    "run_h2load",
    "server_ssl_context",
    "wait_for_port",
]
