"""Peer processes: finding executables, free ports, waiting for a port, stopping."""

from __future__ import annotations

import abc
import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

HOST = "127.0.0.1"
"""The address every peer listens on."""
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


class LocalServer(abc.ABC):
    """A server on 127.0.0.1 that keeps its port once started.

    Use it as a context manager, or call ``start()`` and ``close()``.
    """

    _name: ClassVar[str]
    """What messages call the server."""

    _port: int | None = None

    @abc.abstractmethod
    def start(self) -> Self:
        """Start the server and wait until it listens; returns self, for chaining."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the server and release what it holds (threads, processes, files); idempotent."""

    @property
    def port(self) -> int:
        """The port the server listens on; only valid once started."""
        if self._port is None:
            raise RuntimeError(f"{self._name} has not been started")
        return self._port

    @property
    def target(self) -> str:
        """``host:port`` to connect to: a gRPC target, an HTTP authority, a pool endpoint."""
        return f"{HOST}:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ServerProcess(LocalServer):
    """The lifecycle of a third-party server run as a subprocess on 127.0.0.1.

    Subclasses say what differs: the command line, files it reads, the URL scheme and how long
    the server may take to exit after SIGTERM.

    Logs go to files in ``log_dir`` rather than pipes: nobody drains a pipe, and a full one would
    block the server. Once started, the server keeps its port: ``start()`` after ``close()`` or
    ``kill()`` (or ``restart()``) listens on the same port again, so a client sees the same
    server go away and come back; that relies on the server setting SO_REUSEADDR.

    Attributes:
        returncode: Exit status once stopped, None while running or before the first start.
    """

    _name: ClassVar[str]
    """The program's name: in messages, and the stem of the log files and temporary directory."""

    _port: int | None

    _cwd: ClassVar[Path | None] = None
    """Working directory for the process; None inherits ours."""

    def __init__(self, *, log_dir: Path | None, port: int | None, startup_timeout: float) -> None:
        """Prepare, but do not start, the process.

        Args:
            log_dir: Directory for the logs (and any configuration file); if None, a temporary
                directory removed by ``close()``.
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
        """Seconds ``close()`` waits after SIGTERM before SIGKILL, and again after SIGKILL."""
        return _STOP_TIMEOUT

    def _config_files(self) -> dict[Path, str]:
        """Files the command line refers to, and their text; ``start()`` writes them first."""
        return {}

    def _repr_detail(self) -> str:
        """What ``repr()`` shows between the URL and the state."""
        return ""

    def url(self, path: str = "/") -> str:
        """Return the URL of ``path`` (which must start with ``/``) on this server."""
        return f"{self._url_scheme}://{self.target}{path}"

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

    def close(self) -> None:
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

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        state = "running" if self.running else "stopped"
        return (
            f"<{type(self).__name__} {self._url_scheme}://{HOST}:{port} "
            f"{self._repr_detail()} {state}>"
        )
