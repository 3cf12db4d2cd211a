"""Real third-party HTTP/2 peers for the test suite, started and stopped on 127.0.0.1.

The module is both a helper library and a pytest plugin (``tests/conftest.py`` loads it through
``pytest_plugins``), so its fixtures are available to every test:

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

import abc
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import grpc
import pytest
import trustme

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
    "require_executable",
    "run_command",
    "run_curl",
    "run_h2load",
    "server_ssl_context",
    "wait_for_port",
]

HOST = "127.0.0.1"
"""The address every peer listens on."""

INDEX_HTML = b"hello world\n"
"""Contents of ``index.html`` in the docroot."""

SMALL_TXT = b"abcdefghi\n" * 10
"""Contents of ``small.txt`` in the docroot (100 bytes)."""

BIG_BIN_SIZE = 16 * 1024 * 1024
"""Size of ``big.bin`` in the docroot: large enough to exhaust default flow-control windows."""

# Fixed seed: a failure involving big.bin can be reproduced byte for byte.
_BIG_BIN_SEED = 0x5EED

# How long a peer may take to exit after SIGTERM, and again after SIGKILL.
_STOP_TIMEOUT = 5.0

# How many fresh ports to try if another process takes ours between free_port() and bind().
_BIND_ATTEMPTS = 3

# Cap on how much of a log is quoted in an error message.
_LOG_TAIL_CHARS = 4000


class PeerExitedError(RuntimeError):
    """A peer process exited while we were waiting for it to start listening.

    Attributes:
        returncode: The process's exit status (negative for a signal).
        stderr: The process's standard error, or its tail if long.
    """

    def __init__(self, message: str, returncode: int, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


def require_executable(name: str) -> str:
    """Return the absolute path of an executable, or fail with a hint about how to install it.

    Args:
        name: The program name, e.g. ``"nghttpd"``.

    Returns:
        The absolute path found on ``PATH``.

    Raises:
        FileNotFoundError: The program is not installed.
    """
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"{name!r} is not on PATH; peer tests need the Debian packages nghttp2-server, "
            "nghttp2-client and curl (see .ci/run), or deselect them with -m 'not peer'"
        )
    return path


def _guarded(argv: Sequence[str]) -> list[str]:
    """Prefix a command so the kernel kills it if the test process dies without cleaning up.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process, so it
    is only used from the main thread; elsewhere (e.g. ``asyncio.to_thread``) it would kill the
    peer as soon as the worker thread retired.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


def _tail(text: str) -> str:
    """Return the end of ``text``, short enough to quote in an error message."""
    if len(text) <= _LOG_TAIL_CHARS:
        return text
    return "[...]\n" + text[-_LOG_TAIL_CHARS:]


def _read_log(path: Path | None) -> str:
    """Return the tail of a log file, or an empty string if there is none."""
    if path is None:
        return ""
    try:
        return _tail(path.read_text(errors="replace"))
    except FileNotFoundError:
        return ""


def _command_text(args: object) -> str:
    """Render ``Popen.args`` as a shell-like string for messages."""
    if isinstance(args, list | tuple):
        return shlex.join(str(arg) for arg in args)
    return str(args)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process may take it before the caller binds it; ``Nghttpd`` and ``Hypercorn``
    retry for that reason.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _listener_owner_matches(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port``.

    A successful connect alone does not prove that our server is up: if another process took
    the port between free_port() and the server's bind(), we would reach that process while our
    server is still on its way to failing with "Address already in use".

    Returns:
        True or False from Linux's /proc; None where /proc cannot tell.
    """
    try:
        fd_dir = Path(f"/proc/{pid}/fd")
        inodes = set()
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):  # the fd may close while we look
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        return None
    # /proc/net/tcp prints the address as a native-endian u32 and the port in hex.
    address = int.from_bytes(socket.inet_aton(HOST), sys.byteorder)
    local = f"{address:08X}:{port:04X}"
    listen_state = "0A"
    for line in table.splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == listen_state:
            return fields[9] in inodes
    return False


def wait_for_port(
    port: int,
    timeout: float = 10.0,
    *,
    process: subprocess.Popen[bytes] | None = None,
    stderr_path: Path | None = None,
) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port``.

    If ``process`` is given, it is watched while waiting, so a server that fails to start (bad
    flag, port taken, unreadable key) raises at once with its stderr rather than after a timeout.
    On Linux it must also be ``process`` that owns the listening socket, not a stranger.

    Args:
        port: The port to connect to.
        timeout: Seconds to wait in total.
        process: The server expected to listen on ``port``.
        stderr_path: File holding that server's stderr, quoted in errors.

    Raises:
        PeerExitedError: ``process`` exited before the port accepted a connection.
        TimeoutError: The port did not accept a connection within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        if process is not None and process.poll() is not None:
            stderr = _read_log(stderr_path)
            raise PeerExitedError(
                f"{_command_text(process.args)} exited with status {process.returncode} "
                f"before listening on {HOST}:{port}; stderr:\n{stderr or '(empty)'}",
                process.returncode,
                stderr,
            )
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((HOST, port), timeout=max(min(remaining, 1.0), 0.01)):
                pass
        except OSError as exc:
            problem = str(exc)
        else:
            if process is None or _listener_owner_matches(process.pid, port) is not False:
                return
            problem = f"the listener is not process {process.pid}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stderr = _read_log(stderr_path)
            detail = f"; stderr so far:\n{stderr}" if stderr else ""
            raise TimeoutError(
                f"nothing accepted connections on {HOST}:{port} within {timeout:g} s "
                f"(last problem: {problem}){detail}"
            )
        if process is None:
            time.sleep(min(pause, remaining))
        else:
            # Waiting on the process rather than sleeping notices a crash immediately.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(min(pause, remaining))
        pause = min(pause * 2, 0.1)


def _stop_process(process: subprocess.Popen[bytes], timeout: float = _STOP_TIMEOUT) -> int:
    """Terminate a process, kill it if it ignores SIGTERM, and reap it.

    Args:
        process: The process; it may already have exited.
        timeout: Seconds to wait after SIGTERM, and again after SIGKILL.

    Returns:
        The exit status.

    Raises:
        subprocess.TimeoutExpired: The process survived SIGKILL for ``timeout`` seconds.
    """
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout)


# --- Documents -----------------------------------------------------------------------------------


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


# --- TLS -----------------------------------------------------------------------------------------


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


# --- Server processes ----------------------------------------------------------------------------


class _ServerProcess(abc.ABC):
    """The lifecycle of a third-party server run as a subprocess on 127.0.0.1.

    Subclasses say what differs: the command line, files it reads, the URL scheme and how long
    the server may take to exit after SIGTERM.

    Logs go to files in ``log_dir`` rather than pipes: nobody drains a pipe, and a full one would
    block the server. Once started, the server keeps its port: ``start()`` after ``stop()`` or
    ``kill()`` (or ``restart()``) listens on the same port again, so a client sees the same
    server go away and come back; that relies on the server setting SO_REUSEADDR.

    Attributes:
        returncode: Exit status once stopped, None while running or before the first start.
    """

    _name: ClassVar[str]
    """The program's name: in messages, and the stem of the log files and temporary directory."""

    _cwd: ClassVar[Path | None] = None
    """Working directory for the process; None inherits ours."""

    def __init__(self, *, log_dir: Path | None, port: int | None, startup_timeout: float) -> None:
        """Prepare, but do not start, the process.

        Args:
            log_dir: Directory for the logs (and any configuration file); if None, a temporary
                directory removed by ``stop()``.
            port: Port to listen on; a free one is picked if None.
            startup_timeout: Seconds to wait for the port to accept connections.
        """
        self._log_dir = log_dir
        self._own_log_dir = log_dir is None
        self._port = port
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self.returncode: int | None = None

    @abc.abstractmethod
    def command(self, port: int) -> list[str]:
        """Return the server's command line for ``port``."""

    @property
    def _url_scheme(self) -> str:
        """The scheme of ``url()``; h2c unless a subclass serves TLS."""
        return "http"

    @property
    def _stop_timeout(self) -> float:
        """Seconds ``stop()`` waits after SIGTERM before SIGKILL, and again after SIGKILL."""
        return _STOP_TIMEOUT

    def _config_files(self) -> dict[Path, str]:
        """Files the command line refers to, and their text; ``start()`` writes them first."""
        return {}

    def _repr_detail(self) -> str:
        """What ``repr()`` shows between the URL and the state."""
        return ""

    @property
    def port(self) -> int:
        """The port the server listens on; only valid once started."""
        if self._port is None:
            raise RuntimeError(f"{self._name} has not been started")
        return self._port

    @property
    def authority(self) -> str:
        """``host:port`` to connect to."""
        return f"{HOST}:{self.port}"

    def url(self, path: str = "/") -> str:
        """Return the URL of ``path`` (which must start with ``/``) on this server."""
        return f"{self._url_scheme}://{self.authority}{path}"

    @property
    def log_dir(self) -> Path:
        """Directory holding ``<name>.stdout``, ``<name>.stderr`` and any configuration file."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix=f"{self._name}-"))
        return self._log_dir

    @property
    def stdout_path(self) -> Path:
        """File receiving the server's stdout."""
        return self.log_dir / f"{self._name}.stdout"

    @property
    def stderr_path(self) -> Path:
        """File receiving the server's stderr."""
        return self.log_dir / f"{self._name}.stderr"

    @property
    def pid(self) -> int | None:
        """The process id of the running (or last) server, or None if never started."""
        return self._pid

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until its port accepts connections.

        Returns:
            self, for chaining.

        Raises:
            RuntimeError: Already running.
            PeerExitedError: The server exited during startup (its stderr is in the message).
            TimeoutError: The port did not open within ``startup_timeout``.
        """
        if self._process is not None:
            raise RuntimeError(f"{self._name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fixed_port = self._port
        attempts = 1 if fixed_port is not None else _BIND_ATTEMPTS
        try:
            for path, text in self._config_files().items():
                path.write_text(text)
            for attempt in range(1, attempts + 1):
                port = free_port() if fixed_port is None else fixed_port
                try:
                    self._spawn_and_wait(port)
                except PeerExitedError as exc:
                    if "Address already in use" in exc.stderr and attempt < attempts:
                        continue  # Lost the race for the port to another process: pick another.
                    raise
                self._port = port
                return self
            raise AssertionError("unreachable")
        except BaseException:
            self._cleanup_logs()
            raise

    def _spawn_and_wait(self, port: int) -> None:
        """Start the server on ``port`` and wait for it; reap it again if that fails."""
        # The child gets its own copies of the descriptors, so ours can be closed right away.
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                _guarded(self.command(port)),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=self._cwd,
            )
        self._process, self._pid, self.returncode = process, process.pid, None
        try:
            wait_for_port(
                port, self._startup_timeout, process=process, stderr_path=self.stderr_path
            )
        except BaseException:
            self._terminate()
            raise

    def _terminate(self) -> None:
        """SIGTERM the server (SIGKILL if it lingers) and reap it; a no-op if not running."""
        process, self._process = self._process, None
        if process is not None:
            self.returncode = _stop_process(process, self._stop_timeout)

    def _cleanup_logs(self) -> None:
        """Remove the log directory if we created it."""
        if self._own_log_dir and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers) and reap it; idempotent.

        A temporary log directory is removed; one given to the constructor is kept.
        """
        try:
            self._terminate()
        finally:
            self._cleanup_logs()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL) and reap it, e.g. to simulate a crash mid-test.

        The log directory is kept, and ``start()`` brings the server back on the same port.
        """
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            self.returncode = process.wait(_STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop the server and start it again on the same port (it sets SO_REUSEADDR)."""
        self._terminate()
        self.start()

    def stderr_text(self) -> str:
        """Return what the server has written to stderr so far."""
        return _read_log(self.stderr_path)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        state = "running" if self.running else "stopped"
        return (
            f"<{type(self).__name__} {self._url_scheme}://{HOST}:{port} "
            f"{self._repr_detail()} {state}>"
        )


# --- nghttpd -------------------------------------------------------------------------------------


class Nghttpd(_ServerProcess):
    """An nghttpd process serving a directory on 127.0.0.1, h2c or TLS.

    Use it as a context manager, or call ``start()`` and ``stop()``. It is synchronous, but
    starting takes milliseconds, so it is fine to use from async tests too. Once started, it
    keeps its port: ``start()`` after ``stop()`` or ``kill()`` (or ``restart()``) listens on the
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
        returncode: Exit status once stopped (-15, i.e. -SIGTERM, after a normal ``stop()``).
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
                keeps for inspection); if None, a temporary directory removed by ``stop()``.
            port: Port to listen on; a free one is picked if None.
            startup_timeout: Seconds to wait for the port to accept connections.
        """
        super().__init__(log_dir=log_dir, port=port, startup_timeout=startup_timeout)
        self.docroot = docroot
        self.certificates = certificates
        self.extra_args = list(extra_args)

    @property
    def scheme(self) -> str:
        """``"https"`` with TLS, ``"http"`` for h2c."""
        return "http" if self.certificates is None else "https"

    @property
    def _url_scheme(self) -> str:
        return self.scheme

    def _repr_detail(self) -> str:
        return f"docroot={self.docroot}"

    def command(self, port: int) -> list[str]:
        """Return the nghttpd command line for ``port``."""
        argv = [require_executable("nghttpd"), "-a", HOST, "-d", str(self.docroot)]
        argv += self.extra_args
        if self.certificates is None:
            return [*argv, "--no-tls", str(port)]
        return [*argv, str(port), str(self.certificates.key_pem), str(self.certificates.cert_pem)]


# --- Command-line clients ------------------------------------------------------------------------


async def _drain(stream: asyncio.StreamReader | None, sink: bytearray) -> None:
    """Append everything from ``stream`` to ``sink`` until EOF.

    Reading into a caller-owned buffer keeps what arrived so far if the read is cancelled.
    """
    if stream is None:
        return
    while chunk := await stream.read(65536):
        sink += chunk


async def run_command(argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run a command without blocking the event loop, killing it if it overruns.

    Args:
        argv: The command line, e.g. ``["nghttp", "-nv", url]``.
        timeout: Seconds the command may take.

    Returns:
        ``(returncode, stdout, stderr)``.

    Raises:
        TimeoutError: The command did not finish in time; it has been killed and reaped.
    """
    process = await asyncio.create_subprocess_exec(
        *_guarded(argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = bytearray(), bytearray()

    async def finish() -> int:
        await asyncio.gather(_drain(process.stdout, stdout), _drain(process.stderr, stderr))
        return await process.wait()

    try:
        async with asyncio.timeout(timeout):
            returncode = await finish()
    except BaseException as exc:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        # Reap it and read the pipes to EOF, so no zombie or unclosed transport outlives us.
        async with asyncio.timeout(_STOP_TIMEOUT):
            await finish()
        if isinstance(exc, TimeoutError):
            output = _tail(stderr.decode(errors="replace")) or "(empty)"
            raise TimeoutError(
                f"{shlex.join(argv)} did not finish within {timeout:g} s and was killed; "
                f"stderr:\n{output}"
            ) from None
        raise
    return returncode, bytes(stdout), bytes(stderr)


async def run_curl(args: list[str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run curl with ``args`` without blocking the event loop.

    Args:
        args: Arguments after ``curl``, e.g. ``["-sS", "--http2-prior-knowledge", url]``.
        timeout: Seconds before curl is killed.

    Returns:
        ``(returncode, stdout, stderr)``.

    Raises:
        TimeoutError: curl did not finish in time (it has been killed).
    """
    return await run_command([require_executable("curl"), *args], timeout)


@dataclasses.dataclass(frozen=True)
class H2loadResult:
    """The outcome of an h2load run.

    h2load exits with status 0 even when every request failed, so check ``failed``, not
    ``returncode``. A request "fails" on any non-2xx/3xx status (so a 404 counts), "errors" on a
    connection or protocol error (an errored request is also counted as failed), and ``timeout``
    counts requests cut short by h2load's own ``-T``/``-N`` timeouts.

    Attributes:
        total: Requests asked for (``-n``).
        started: Requests sent.
        done: Requests finished, successfully or not.
        succeeded: Requests with a 2xx or 3xx response.
        failed: Requests that did not succeed.
        errored: Requests lost to connection or protocol errors.
        timeout: Requests lost to h2load's timeouts.
        status_2xx: Responses with a 2xx status.
        status_3xx: Responses with a 3xx status.
        status_4xx: Responses with a 4xx status.
        status_5xx: Responses with a 5xx status.
        returncode: h2load's exit status.
        output: h2load's stdout, verbatim.
        stderr: h2load's stderr, verbatim.
    """

    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    returncode: int
    output: str
    stderr: str

    _REQUESTS = re.compile(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout$",
        re.MULTILINE,
    )
    _STATUS = re.compile(
        r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx$", re.MULTILINE
    )

    @classmethod
    def parse(cls, returncode: int, output: str, stderr: str = "") -> H2loadResult:
        """Parse h2load's summary.

        Args:
            returncode: h2load's exit status.
            output: h2load's stdout, which holds the ``requests:`` and ``status codes:`` lines.
            stderr: h2load's stderr, kept for error messages.

        Returns:
            The parsed result.

        Raises:
            ValueError: The summary lines are missing (e.g. h2load rejected its arguments).
        """
        requests = cls._REQUESTS.search(output)
        status = cls._STATUS.search(output)
        if requests is None or status is None:
            raise ValueError(
                f"no h2load summary in its output (exit status {returncode}); "
                f"stdout:\n{_tail(output)}\nstderr:\n{_tail(stderr)}"
            )
        total, started, done, succeeded, failed, errored, timeout = map(int, requests.groups())
        s2xx, s3xx, s4xx, s5xx = map(int, status.groups())
        return cls(
            total=total,
            started=started,
            done=done,
            succeeded=succeeded,
            failed=failed,
            errored=errored,
            timeout=timeout,
            status_2xx=s2xx,
            status_3xx=s3xx,
            status_4xx=s4xx,
            status_5xx=s5xx,
            returncode=returncode,
            output=output,
            stderr=stderr,
        )


async def run_h2load(
    url: str,
    *,
    requests: int,
    clients: int,
    streams: int,
    timeout: float,
    extra_args: Sequence[str] = (),
) -> H2loadResult:
    """Load a URL with h2load without blocking the event loop.

    h2load speaks h2c with prior knowledge for ``http://`` URLs and negotiates ``h2`` via ALPN
    for ``https://``; it does not verify the server's certificate.

    Args:
        url: The URL to request.
        requests: Total number of requests (``-n``); must be at least ``clients``.
        clients: Number of concurrent connections (``-c``).
        streams: Maximum concurrent streams per connection (``-m``).
        timeout: Seconds before h2load is killed.
        extra_args: More h2load options, e.g. ``["-d", "body.bin"]`` to POST a file.

    Returns:
        The parsed summary.

    Raises:
        TimeoutError: h2load did not finish in time (it has been killed).
        ValueError: h2load printed no summary.
    """
    argv = [
        require_executable("h2load"),
        "-n",
        str(requests),
        "-c",
        str(clients),
        "-m",
        str(streams),
        *extra_args,
        url,
    ]
    returncode, stdout, stderr = await run_command(argv, timeout)
    return H2loadResult.parse(
        returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")
    )


# --- grpcio --------------------------------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    """Serializer and deserializer for raw-bytes messages."""
    return data


class GrpcEchoServer:
    """A grpcio server on 127.0.0.1 (insecure, i.e. h2c) with a raw-bytes ``test.Echo`` service.

    Methods, all unary-unary with raw bytes (no protobuf):

    * ``/test.Echo/Unary`` returns the request unchanged.
    * ``/test.Echo/Slow`` parses the request as ASCII seconds (e.g. ``b"0.5"``; empty means
      ``SLOW_MAX_SECONDS``), waits that long, or until ``release()`` is called, or until the RPC is
      cancelled, whichever is first, then returns the request. ``wait_for_slow_calls()`` tells
      when a call has reached the handler, e.g. to stop the server while a call is in flight.

    What grpcio 1.85 puts on an open connection on ``stop(grace)`` (observed with a raw client):

    1. At once, in one write: PING, then GOAWAY(NO_ERROR, last_stream_id=2**31-1, debug
       ``"Server shutdown"``).
    2. About 40 ms after the client ACKs that PING: another PING and GOAWAY(NO_ERROR) with the
       real last stream id. A client that never ACKs gets no second graceful GOAWAY.
    3. A stream opened between the two GOAWAYs is *not* run, yet is counted in the final
       last_stream_id: it gets a trailers-only 200 with ``grpc-status: 1`` (CANCELLED) and
       RST_STREAM(NO_ERROR).
    4. Calls that finish within ``grace`` complete normally; the TCP connection is closed as soon
       as the last one ends (no further GOAWAY).
    5. When ``grace`` expires (at once for ``grace=None`` or 0): GOAWAY(INTERNAL_ERROR, real last
       id, ``"Cancelling all calls"``) if the final GOAWAY was not sent yet, then each call gets a
       trailers-only 200 with ``grpc-status: 14`` (UNAVAILABLE) and RST_STREAM(NO_ERROR), and
       the TCP connection is closed.

    Attributes:
        SERVICE: The gRPC service name.
        SLOW_MAX_SECONDS: Upper bound on how long a ``Slow`` call can wait.
    """

    SERVICE = "test.Echo"
    SLOW_MAX_SECONDS = 30.0

    def __init__(self, *, max_workers: int = 4, options: Sequence[tuple[str, Any]] = ()) -> None:
        """Prepare, but do not start, the server.

        Args:
            max_workers: Handler threads, i.e. how many calls can run at once.
            options: grpcio channel arguments, e.g. ``[("grpc.max_concurrent_streams", 2)]``.
        """
        self._max_workers = max_workers
        self._options = list(options)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._server: Any = None
        self._port: int | None = None
        self._condition = threading.Condition()
        self._released = False
        self._slow_started = 0

    @property
    def port(self) -> int:
        """The port the server listens on; only valid once started."""
        if self._port is None:
            raise RuntimeError("the gRPC server has not been started")
        return self._port

    @property
    def target(self) -> str:
        """``host:port``, as passed to ``grpc.insecure_channel``."""
        return f"{HOST}:{self.port}"

    def _unary(self, request: bytes, context: Any) -> bytes:
        return request

    def _slow(self, request: bytes, context: Any) -> bytes:
        try:
            seconds = min(float(request or self.SLOW_MAX_SECONDS), self.SLOW_MAX_SECONDS)
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Slow wants ASCII seconds")
            raise  # not reached: abort() raises
        # Fires when the RPC ends for any reason (client cancel, deadline, server stop).
        context.add_callback(self._wake)
        with self._condition:
            self._slow_started += 1
            self._condition.notify_all()
            self._condition.wait_for(
                lambda: self._released or not context.is_active(), timeout=seconds
            )
        return request

    def _wake(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def release(self) -> None:
        """Let every ``Slow`` call, current and future, return at once."""
        with self._condition:
            self._released = True
            self._condition.notify_all()

    def wait_for_slow_calls(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block until at least ``count`` ``Slow`` calls have reached the handler in total.

        Args:
            count: How many calls, counted since the server was created.
            timeout: Seconds to wait.

        Raises:
            TimeoutError: Fewer calls arrived within ``timeout`` seconds.
        """
        with self._condition:
            if not self._condition.wait_for(lambda: self._slow_started >= count, timeout):
                raise TimeoutError(
                    f"{self._slow_started} of {count} Slow calls arrived within {timeout:g} s"
                )

    def start(self) -> Self:
        """Start the server on a free port.

        Returns:
            self, for chaining.
        """
        if self._server is not None:
            raise RuntimeError("the gRPC server is already running")
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=_identity, response_serializer=_identity
            )
            for name, method in (("Unary", self._unary), ("Slow", self._slow))
        }
        self._released = False
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._max_workers, thread_name_prefix="grpc-echo"
        )
        # grpcio does not own the executor: it must be shut down separately.
        self._server = grpc.server(self._executor, options=self._options)
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(self.SERVICE, handlers)]
        )
        try:
            # Binding port 0 here, not free_port(), leaves no window for another process.
            port: int = self._server.add_insecure_port(f"{HOST}:0")
            if port == 0:
                raise RuntimeError(f"grpcio could not bind {HOST}:0")
            self._server.start()
        except BaseException:
            self._shutdown(grace=None)
            raise
        self._port = port
        return self

    def stop(self, grace: float | None) -> threading.Event:
        """Start a graceful stop, as ``grpc.Server.stop``.

        New calls are refused at once; calls in flight get ``grace`` seconds to finish before
        they are cancelled. ``Slow`` calls are not released: use ``release()`` for that.

        Args:
            grace: Seconds for in-flight calls, or None to abort them immediately.

        Returns:
            An event set once the server has fully stopped.
        """
        if self._server is None:
            raise RuntimeError("the gRPC server has not been started")
        done: threading.Event = self._server.stop(grace)
        return done

    def _shutdown(self, grace: float | None) -> None:
        """Stop the server and its threads, bounded in time."""
        server, self._server = self._server, None
        executor, self._executor = self._executor, None
        self.release()  # so no handler thread is left waiting
        try:
            if server is not None and not server.stop(grace).wait(_STOP_TIMEOUT):
                raise TimeoutError(f"the gRPC server did not stop within {_STOP_TIMEOUT:g} s")
        finally:
            if executor is not None:
                # Handlers were released above, so this returns promptly.
                executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop the server immediately and wait for its threads; idempotent."""
        self._shutdown(grace=None)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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


# --- hypercorn -----------------------------------------------------------------------------------


# Root of the repository: hypercorn runs there, so that it can import ``tests.asgi_app``.
_REPO_ROOT = Path(__file__).resolve().parent.parent

# Extra seconds, beyond hypercorn's graceful_timeout, that stop() waits after SIGTERM.
_HYPERCORN_STOP_MARGIN = 2.0

HypercornOption = bool | int | float | str
"""A value for a hypercorn configuration key, as written to its TOML file."""


def _toml_value(value: HypercornOption) -> str:
    """Render a scalar as TOML; JSON's string escapes are valid TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


class Hypercorn(_ServerProcess):
    """hypercorn 0.18 serving ``tests.asgi_app:app`` over h2c on 127.0.0.1, in a subprocess.

    hypercorn accepts HTTP/2 with prior knowledge on a cleartext port (as well as HTTP/1.1 and
    the h2c upgrade), so ``curl --http2-prior-knowledge``, h2load and h2pool can talk h2c to it.
    It runs as a single process (``workers = 0``), so signals reach the server itself. Use it as
    a context manager, or call ``start()`` and ``stop()``, as with ``Nghttpd``; like nghttpd it
    sets SO_REUSEADDR, so ``restart()`` and ``start()`` after ``stop()`` keep the port.

    It is here as a *misbehaving* peer. What hypercorn 0.18 (with h2 4.x) does on the wire once
    a connection reaches ``keep_alive_max_requests`` (observed with a raw client, nghttp -nv and
    h2load; ``test_peers.py`` pins the deterministic parts):

    1. Requests 1 to N (N = ``keep_alive_max_requests``) are served normally. Receiving request
       N+1 makes it send GOAWAY(NO_ERROR) with last_stream_id = the highest stream id it has
       received so far, i.e. that request's id or higher if more requests came in the same read.
       So it drains *after* N requests, not at request N.
    2. It sends one such GOAWAY per further request that was received in the same read (nghttp
       -m 8 against N = 5 got three identical GOAWAYs; h2load -m 10 against N = 50 got ten).
    3. It finishes *none* of the streams still open at that point, although every one of them is
       at or below last_stream_id: not request N+1, and not earlier requests that were still in
       flight (e.g. ``/slow?ms=300``). Their responses are dropped silently, with no RST_STREAM:
       after its GOAWAY, h2 refuses to send anything else and hypercorn swallows the error.
    4. The next frame the client sends, of any kind (a SETTINGS ACK, PING, WINDOW_UPDATE or a
       new HEADERS), is answered with GOAWAY(PROTOCOL_ERROR, same last_stream_id) and a TCP
       close.
    5. A client that sends nothing more gets no further frame: the connection just sits there
       until ``keep_alive_timeout`` (default 5 s) closes it with a plain FIN.

    So a client that trusts last_stream_id waits for responses that never come; the streams
    must be treated as failed (retrying them elsewhere is unsafe in general: the application did
    run them). h2load, for one, counts them as errored and does not reconnect.

    Also: SIGTERM while a request is still running after ``graceful_timeout`` leaves hypercorn
    0.18 hung (it sends that response's HEADERS, then never exits). ``stop()`` waits
    ``graceful_timeout`` plus 2 s and then kills it, so such a test costs those seconds at
    teardown, not ``_STOP_TIMEOUT``.

    Attributes:
        keep_alive_max_requests: Requests served per connection before it sends GOAWAY.
        keep_alive_timeout: Seconds an idle connection is kept open.
        graceful_timeout: Seconds requests in flight get after SIGTERM.
        options: Further hypercorn configuration keys (see ``hypercorn.config.Config``).
        returncode: Exit status once stopped (0 after a normal ``stop()``).
    """

    APP = "tests.asgi_app:app"
    """The ASGI application served, imported by hypercorn from the repository root."""

    _name = "hypercorn"
    _cwd = _REPO_ROOT  # so that hypercorn can import APP

    def __init__(
        self,
        *,
        keep_alive_max_requests: int = 1000,
        keep_alive_timeout: float = 5.0,
        graceful_timeout: float = 0.5,
        options: Mapping[str, HypercornOption] | None = None,
        log_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        """Prepare, but do not start, a hypercorn process.

        Args:
            keep_alive_max_requests: hypercorn's ``keep_alive_max_requests`` (its default is
                1000).
            keep_alive_timeout: hypercorn's ``keep_alive_timeout`` in seconds (default 5).
            graceful_timeout: hypercorn's ``graceful_timeout`` in seconds; short by default
                (hypercorn's is 3) so that ``stop()`` is quick.
            options: More configuration keys, e.g. ``{"h2_max_concurrent_streams": 10}``.
            log_dir: Directory for the config file and the logs (``hypercorn.stdout`` has the
                access log, a line per request, ``hypercorn.stderr`` the error log); if None, a
                temporary directory removed by ``stop()``.
            port: Port to listen on; a free one is picked if None.
            startup_timeout: Seconds to wait for the port to accept connections (Python and
                hypercorn take a few hundred milliseconds to start).

        Raises:
            ValueError: An option is not a hypercorn configuration key (hypercorn itself would
                silently ignore it).
        """
        from hypercorn.config import Config  # only this class needs it

        super().__init__(log_dir=log_dir, port=port, startup_timeout=startup_timeout)
        self.keep_alive_max_requests = keep_alive_max_requests
        self.keep_alive_timeout = keep_alive_timeout
        self.graceful_timeout = graceful_timeout
        self.options = dict(options or {})
        unknown = sorted(key for key in self.options if not hasattr(Config, key))
        if unknown:
            raise ValueError(f"not hypercorn configuration keys: {', '.join(unknown)}")

    @property
    def config_path(self) -> Path:
        """The TOML configuration file passed with ``--config``."""
        return self.log_dir / "hypercorn.toml"

    @property
    def _stop_timeout(self) -> float:
        # Past graceful_timeout, hypercorn may never exit on its own (see the class docstring).
        return self.graceful_timeout + _HYPERCORN_STOP_MARGIN

    def _config_files(self) -> dict[Path, str]:
        return {self.config_path: self.config_text()}

    def _repr_detail(self) -> str:
        return f"keep_alive_max_requests={self.keep_alive_max_requests}"

    def config_text(self) -> str:
        """Return the TOML configuration written to ``config_path``."""
        settings: dict[str, HypercornOption] = {
            # One process: no multiprocessing child that SIGTERM/SIGKILL and pdeathsig miss.
            "workers": 0,
            "keep_alive_max_requests": self.keep_alive_max_requests,
            "keep_alive_timeout": self.keep_alive_timeout,
            "graceful_timeout": self.graceful_timeout,
            "accesslog": "-",
            "errorlog": "-",
            **self.options,
        }
        return "".join(f"{key} = {_toml_value(value)}\n" for key, value in settings.items())

    def command(self, port: int) -> list[str]:
        """Return the hypercorn command line for ``port``."""
        return [
            sys.executable,
            "-m",
            "hypercorn",
            "--config",
            str(self.config_path),
            "--bind",
            f"{HOST}:{port}",
            self.APP,
        ]


class HypercornFactory(Protocol):
    """The callable yielded by the ``hypercorn_factory`` fixture."""

    def __call__(
        self,
        *,
        keep_alive_max_requests: int = 1000,
        keep_alive_timeout: float = 5.0,
        graceful_timeout: float = 0.5,
        options: Mapping[str, HypercornOption] | None = None,
    ) -> Hypercorn:
        """Start a ``Hypercorn`` with these settings (see its constructor); it is stopped at
        teardown, and its logs are kept in the test's ``tmp_path``."""
        ...


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


# --- nginx ---------------------------------------------------------------------------------------

__all__ += ["Nginx", "nginx_http1", "nginx_http1_tls"]

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


class Nginx(_ServerProcess):
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
    sets SO_REUSEADDR, so ``restart()`` and ``start()`` after ``stop()`` keep the port.

    Attributes:
        docroot: The directory served.
        certificates: The TLS certificate, or None for cleartext.
        server_directives: Extra directives placed in the ``server`` block.
        returncode: Exit status once stopped (0 after a normal ``stop()``).
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
                directory removed by ``stop()``.
            port: Port to listen on; a free one is picked if None.
            startup_timeout: Seconds to wait for the port to accept connections.
        """
        super().__init__(log_dir=log_dir, port=port, startup_timeout=startup_timeout)
        self.docroot = docroot
        self.certificates = certificates
        self.server_directives = server_directives

    @property
    def scheme(self) -> str:
        """``"https"`` with TLS, ``"http"`` for cleartext."""
        return "http" if self.certificates is None else "https"

    @property
    def _url_scheme(self) -> str:
        return self.scheme

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

    def _repr_detail(self) -> str:
        return f"docroot={self.docroot}"

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
