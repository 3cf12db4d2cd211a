"""The pytest fixtures of the peers (registered by ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from .certs import Certificates, make_certificates
from .documents import make_docroot
from .grpc_echo import GrpcEchoServer
from .hypercorn import Hypercorn, HypercornFactory, HypercornOption
from .nghttpd import Nghttpd
from .nginx import Nginx

# --- Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _docroot_and_digest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    directory = tmp_path_factory.mktemp("docroot")
    return directory, make_docroot(directory)


@pytest.fixture(scope="session")
def docroot(_docroot_and_digest: tuple[Path, str]) -> Path:
    """A directory with ``index.html``, ``small.txt`` and ``big.bin``; shared, do not modify."""
    return _docroot_and_digest[0]


@pytest.fixture(scope="session")
def big_bin_sha256(_docroot_and_digest: tuple[Path, str]) -> str:
    """The hex SHA-256 of ``big.bin`` in ``docroot``."""
    return _docroot_and_digest[1]


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A trustme CA and a server certificate for localhost and 127.0.0.1."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def nghttpd_h2c(docroot: Path, tmp_path: Path) -> Iterator[Nghttpd]:
    """nghttpd serving ``docroot`` over h2c; logs in ``tmp_path / "nghttpd"``."""
    with Nghttpd(docroot, log_dir=tmp_path / "nghttpd") as server:
        yield server


@pytest.fixture
def nghttpd_tls(docroot: Path, certificates: Certificates, tmp_path: Path) -> Iterator[Nghttpd]:
    """nghttpd serving ``docroot`` over TLS with ``certificates``."""
    with Nghttpd(docroot, certificates=certificates, log_dir=tmp_path / "nghttpd-tls") as server:
        yield server


@pytest.fixture
def grpc_echo_server() -> Iterator[GrpcEchoServer]:
    """A running ``GrpcEchoServer``."""
    with GrpcEchoServer() as server:
        yield server


@pytest.fixture
def hypercorn_factory(tmp_path: Path) -> Iterator[HypercornFactory]:
    """Start ``Hypercorn`` servers on demand; all are stopped at teardown.

    Logs of the n-th server are in ``tmp_path / "hypercorn-n"``.
    """
    servers: list[Hypercorn] = []

    def make(
        *,
        keep_alive_max_requests: int = 1000,
        keep_alive_timeout: float = 5.0,
        graceful_timeout: float = 0.5,
        options: Mapping[str, HypercornOption] | None = None,
    ) -> Hypercorn:
        server = Hypercorn(
            keep_alive_max_requests=keep_alive_max_requests,
            keep_alive_timeout=keep_alive_timeout,
            graceful_timeout=graceful_timeout,
            options=options,
            log_dir=tmp_path / f"hypercorn-{len(servers) + 1}",
        )
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in reversed(servers):
            server.stop()


@pytest.fixture
def nginx_http1(docroot: Path, tmp_path: Path) -> Iterator[Nginx]:
    """nginx serving ``docroot`` over cleartext HTTP/1.1; files in ``tmp_path / "nginx"``."""
    with Nginx(docroot, log_dir=tmp_path / "nginx") as server:
        yield server


@pytest.fixture
def nginx_http1_tls(docroot: Path, certificates: Certificates, tmp_path: Path) -> Iterator[Nginx]:
    """nginx serving ``docroot`` over TLS with ``certificates``; ALPN selects only http/1.1."""
    with Nginx(docroot, certificates=certificates, log_dir=tmp_path / "nginx-tls") as server:
        yield server
