"""A grpcio server with the ``test.Echo`` service, in a thread."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from .process import _STOP_TIMEOUT, HOST


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
