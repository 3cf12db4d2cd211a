"""grpcio servers in a thread of the test process: ``GrpcTestServer`` serves ``test.Rpc``.

``ThreadedGrpcServer`` is the lifecycle they share with ``GreeterServer`` (generated code, in
``grpc_codegen.py``) and ``GrpcEchoServer`` (``grpc_echo.py``): a synchronous grpcio server on
127.0.0.1, insecure or TLS, with the standard health service, started and stopped with deadlines.
"""

from __future__ import annotations

import abc
import concurrent.futures
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self, TypedDict, Unpack

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .certs import Certificates
from .grpc_service import CallLog, Metadata, RpcService
from .process import _STOP_TIMEOUT, HOST, LocalServer

HealthStatus = Literal["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
"""A ``grpc.health.v1.HealthCheckResponse.ServingStatus`` name."""

DEFAULT_MAX_WORKERS = 100
"""Handler threads by default: calls beyond it wait for a thread (threads start on demand)."""


class ServerKeywords(TypedDict, total=False):
    """``ThreadedGrpcServer``'s keywords, for subclasses that pass them on."""

    certificates: Certificates | None
    options: Sequence[tuple[str, Any]]
    compression: grpc.Compression | None
    max_workers: int
    port: int


class ThreadedGrpcServer(LocalServer):
    """A grpcio server on 127.0.0.1 in this process, with the standard health service.

    Use it as a context manager, or call ``start()`` and ``close()``. The health service
    answers SERVING for ``""`` (the whole server) until ``set_health`` says otherwise, and
    NOT_FOUND (the client's SERVICE_UNKNOWN) for services never set.
    """

    _name = "the gRPC server"
    serves_health: ClassVar[bool] = True
    """Whether ``start()`` adds the standard health service."""

    def __init__(
        self,
        *,
        certificates: Certificates | None = None,
        options: Sequence[tuple[str, Any]] = (),
        compression: grpc.Compression | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        port: int = 0,
    ) -> None:
        """Prepare, but do not start, the server.

        Args:
            certificates: Serve TLS (ALPN h2) with this certificate; insecure h2c if None.
            options: grpcio channel arguments, e.g. ``[("grpc.max_concurrent_streams", 2)]``.
            compression: The compression of the server's responses (grpcio's default for every
                call; a client that does not accept it gets them uncompressed).
            max_workers: Handler threads, i.e. how many calls can run at once.
            port: The port to bind; 0 lets grpcio pick a free one (no race for the port).
        """
        self._bind_port = port
        self.certificates = certificates
        self._options = list(options)
        self._compression = compression
        self._max_workers = max_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._server: Any = None
        self._port = None
        self._health = health.HealthServicer()
        self.set_health("", "SERVING")

    @abc.abstractmethod
    def _add_services(self, server: Any) -> None:
        """Register the services beside health on a new grpcio ``server``."""

    def _release(self) -> None:
        """Let handlers that are waiting return at once (the server is closing)."""

    def set_health(self, service: str, status: HealthStatus) -> None:
        """Set what the health service answers for ``service`` (``""``: the whole server)."""
        self._health.set(service, health_pb2.HealthCheckResponse.ServingStatus.Value(status))

    def _credentials(self) -> Any:
        assert self.certificates is not None
        key = self.certificates.key_pem.read_bytes()
        chain = self.certificates.cert_pem.read_bytes()
        return grpc.ssl_server_credentials([(key, chain)])

    def start(self) -> Self:
        """Start the server on its port.

        Returns:
            self, for chaining.
        """
        if self._server is not None:
            raise RuntimeError("the gRPC server is already running")
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self._max_workers, thread_name_prefix=type(self).__name__
        )
        # grpcio does not own the executor: it must be shut down separately.
        self._server = grpc.server(
            self._executor, options=self._options, compression=self._compression
        )
        self._add_services(self._server)
        if self.serves_health:
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        try:
            address = f"{HOST}:{self._bind_port}"
            port: int = (
                self._server.add_insecure_port(address)
                if self.certificates is None
                else self._server.add_secure_port(address, self._credentials())
            )
            if port == 0:
                raise RuntimeError(f"grpcio could not bind {address}")
            self._server.start()
        except BaseException:
            self.close()
            raise
        self._port = port
        return self

    def stop(self, grace: float | None) -> threading.Event:
        """Start a graceful stop, as ``grpc.Server.stop``, without waiting for it.

        New calls are refused at once; calls in flight get ``grace`` seconds to finish before
        they are cancelled (``GrpcEchoServer``'s docstring says what grpcio sends).

        Args:
            grace: Seconds for in-flight calls, or None to abort them immediately.

        Returns:
            An event set once the server has fully stopped.
        """
        if self._server is None:
            raise RuntimeError("the gRPC server has not been started")
        done: threading.Event = self._server.stop(grace)
        return done

    def close(self, grace: float | None = None) -> None:
        """Stop the server and wait for it and its threads; idempotent.

        Args:
            grace: Seconds for in-flight calls to finish; None cancels them at once.

        Raises:
            TimeoutError: The server did not stop within ``grace`` plus a margin.
        """
        server, self._server = self._server, None
        executor, self._executor = self._executor, None
        try:
            timeout = (grace or 0) + _STOP_TIMEOUT
            if server is not None and not server.stop(grace).wait(timeout):
                raise TimeoutError(f"the gRPC server did not stop within {timeout:g} s")
        finally:
            self._release()  # so that no handler thread is left waiting
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)


class GrpcTestServer(ThreadedGrpcServer):
    """A grpcio server with the raw-bytes ``test.Rpc`` service (see ``grpc_service``).

    Each call picks its behaviour through its metadata (``x-status``, ``x-sleep``, ``x-never``,
    ``x-echo-*``, ...); the counters tell a test what reached the server. The ``wait_for_*``
    methods block: from async code, call them through ``asyncio.to_thread``.
    """

    def __init__(self, **kwargs: Unpack[ServerKeywords]) -> None:
        """Prepare, but do not start, the server.

        Args:
            **kwargs: ``ThreadedGrpcServer``'s keywords.
        """
        super().__init__(**kwargs)
        self.service = RpcService()

    @property
    def log(self) -> CallLog:
        """Counts and waits: calls started and cancelled per method, last metadata."""
        return self.service.log

    def _add_services(self, server: Any) -> None:
        server.add_generic_rpc_handlers([self.service.generic_handler()])

    def _release(self) -> None:
        self.log.release()

    def calls_started(self, method: str | None = None) -> int:
        """Calls that reached a handler, of ``method`` (an ``Rpc`` path) or of all methods."""
        return self.log.calls_started(method)

    def calls_cancelled(self, method: str | None = None) -> int:
        """Calls that ended cancelled (see ``CallLog``), of ``method`` or of all methods."""
        return self.log.calls_cancelled(method)

    def messages_sent(self, method: str | None = None) -> int:
        """Response messages handed to grpcio (see ``CallLog.messages_sent``)."""
        return self.log.messages_sent(method)

    def last_metadata(self, method: str) -> Metadata:
        """The request metadata of the latest call of ``method``."""
        return self.log.last_metadata(method)

    def wait_for_calls(self, method: str | None, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` calls of ``method`` (None: any) have reached a handler."""
        self.log.wait_for_calls(method, count, timeout)

    def wait_for_cancelled(
        self, count: int, timeout: float = 10.0, method: str | None = None
    ) -> None:
        """Block until ``count`` calls (of ``method``, or any) have ended cancelled."""
        self.log.wait_for_cancelled(count, timeout, method)
