"""``GrpcTestServer`` in a child process, to be killed (SIGKILL) or stopped gracefully.

For failover tests: a replica that crashes must take its connections down with it, which a
server in the test's own process cannot do. The child is ``python -m tests.peers.grpc_child``;
it prints ``{"port": N}`` once listening, then obeys one JSON command per line on its stdin and
answers each on its stdout:

* ``{"stop": grace}``: ``server.stop(grace)``, wait for it, exit 0 (no answer).
* ``{"health": [service, status]}``: ``set_health``; answers ``{"ok": true}``.
* ``{"stats": true}``: answers ``CallLog.snapshot()``.
* ``{"wait_for_calls": [method, count, timeout]}``: answers ``{"ok": true}`` once ``count``
  calls of ``method`` (null: any) have reached a handler, or ``{"error": "..."}`` on timeout.

End of input (the parent closed the pipe, or died) stops the server at once.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Self

import grpc

from . import grpc_child
from .certs import Certificates
from .grpc_child import COMPRESSIONS
from .grpc_server import DEFAULT_MAX_WORKERS, HealthStatus
from .process import _STOP_TIMEOUT, HOST, LocalServer, PeerExitedError, _guarded

_REPO_ROOT = Path(__file__).resolve().parents[2]


class GrpcServerProcess(LocalServer):
    """A ``GrpcTestServer`` (``test.Rpc`` and health) in a subprocess on 127.0.0.1.

    ``kill()`` is a crash: SIGKILL, connections reset by the kernel. ``stop(grace)`` is
    grpcio's graceful stop, started without waiting (an async test keeps its loop running
    while calls in flight finish); ``wait()`` then reaps the process. ``start()`` again (after
    ``kill()`` or a stop) listens on the same port, so clients see the same replica come back.
    Counters live in the child: ``stats()`` fetches them.
    """

    _name = "the gRPC server process"

    def __init__(
        self,
        *,
        certificates: Certificates | None = None,
        options: Sequence[tuple[str, int | str]] = (),
        compression: grpc.Compression | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        startup_timeout: float = 15.0,
    ) -> None:
        """Prepare, but do not start, the child.

        Args:
            certificates: Serve TLS with this certificate; insecure h2c if None.
            options: grpcio channel arguments (int or str values).
            compression: ``Gzip`` or ``Deflate`` for the server's responses, or None.
            max_workers: Handler threads in the child.
            startup_timeout: Seconds for the child to report its port.
        """
        self.certificates = certificates
        self._options = list(options)
        self._compression = compression
        self._max_workers = max_workers
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._lines: queue.Queue[bytes] = queue.Queue()
        self.returncode: int | None = None

    def command(self) -> list[str]:
        """The child's command line."""
        argv = [sys.executable, "-m", grpc_child.__name__, "--port", str(self._port or 0)]
        argv += ["--max-workers", str(self._max_workers)]
        for key, value in self._options:
            kind = "int" if isinstance(value, int) else "str"
            argv += ["--option", f"{key}={kind}:{value}"]
        if self._compression is not None:
            name = next(n for n, c in COMPRESSIONS.items() if c == self._compression)
            argv += ["--compression", name]
        if self.certificates is not None:
            argv += ["--cert", str(self.certificates.cert_pem)]
            argv += ["--key", str(self.certificates.key_pem)]
        return argv

    @property
    def pid(self) -> int | None:
        """The process id of the running (or last) child."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the child was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the child and wait until it listens.

        Raises:
            PeerExitedError: The child exited during startup (its stderr is in the message).
            TimeoutError: It did not report its port within ``startup_timeout``.
        """
        if self.running:
            raise RuntimeError("the gRPC server process is already running")
        # Lives as long as the child; read in error messages, closed when it is reaped.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            _guarded(self.command()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=_REPO_ROOT,
        )
        self.returncode = None
        self._lines = queue.Queue()
        threading.Thread(
            target=_pump, args=(self._process.stdout, self._lines), daemon=True
        ).start()
        try:
            self._port = int(self._reply(self._startup_timeout)["port"])
        except BaseException:
            self.kill()
            raise
        return self

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-4000:].decode(errors="replace")

    def _reply(self, timeout: float) -> dict[str, Any]:
        """The child's next line on stdout, as JSON."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the gRPC server process said nothing in {timeout:g} s") from None
        if not line:
            assert self._process is not None
            returncode = self._process.wait(_STOP_TIMEOUT)
            stderr = self._stderr_text()
            raise PeerExitedError(
                f"the gRPC server process exited with status {returncode}; stderr:\n{stderr}",
                returncode,
                stderr,
            )
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _command(self, command: dict[str, Any]) -> None:
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("the gRPC server process is not running")
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        self._process.stdin.flush()

    def set_health(self, service: str, status: HealthStatus, timeout: float = 5.0) -> None:
        """Set what the child's health service answers for ``service``."""
        self._command({"health": [service, status]})
        self._reply(timeout)

    def stats(self, timeout: float = 5.0) -> dict[str, dict[str, int]]:
        """The child's ``CallLog.snapshot()``: calls started and cancelled per method path."""
        self._command({"stats": True})
        return self._reply(timeout)

    def wait_for_calls(self, method: str | None, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` calls of ``method`` (None: any) have reached the child's
        handlers in total (from async code: through ``asyncio.to_thread``).

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds.
        """
        self._command({"wait_for_calls": [method, count, timeout]})
        reply = self._reply(timeout + _STOP_TIMEOUT)
        if "error" in reply:
            raise TimeoutError(reply["error"])

    def stop(self, grace: float | None) -> None:
        """Start grpcio's graceful stop in the child and return at once; ``wait()`` reaps it.

        Args:
            grace: Seconds for in-flight calls, or None to cancel them at once.
        """
        self._command({"stop": grace})

    def wait(self, timeout: float = _STOP_TIMEOUT) -> int:
        """Wait for the child to exit (after ``stop``) and return its exit status.

        Raises:
            subprocess.TimeoutExpired: It is still running after ``timeout`` seconds.
        """
        if self._process is None:
            raise RuntimeError("the gRPC server process has not been started")
        self.returncode = self._process.wait(timeout)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the child and reap it, as a crash; a no-op if it is not running."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self.returncode = self._process.wait(_STOP_TIMEOUT)
            self._close_pipes()

    def _close_pipes(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # the child is gone: nothing to flush
                process.stdin.close()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        """Stop the child at once (end of its input), kill it if it lingers, reap it."""
        if self._process is None:
            return
        if self._process.poll() is None:
            try:
                self._process.stdin.close()  # type: ignore[union-attr]
                self.returncode = self._process.wait(_STOP_TIMEOUT)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self._process.kill()
        self.kill()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<GrpcServerProcess {HOST}:{self._port or '?'} pid={self.pid} {state}>"


def _pump(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
    """Move the child's stdout lines to a queue; an empty line marks its end."""
    for line in stream:
        lines.put(line)
    lines.put(b"")
