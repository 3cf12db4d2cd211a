"""A grpcio server with the ``test.Echo`` service, in a thread."""

from __future__ import annotations

import threading
from typing import Any, Unpack

import grpc

from .grpc_server import ServerKeywords, ThreadedGrpcServer


def _identity(data: bytes) -> bytes:
    """Serializer and deserializer for raw-bytes messages."""
    return data


class GrpcEchoServer(ThreadedGrpcServer):
    """A grpcio server on 127.0.0.1 with a raw-bytes ``test.Echo`` service and no health service.

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

    ``stop(grace)`` does not release ``Slow`` calls: use ``release()`` for that.

    Attributes:
        SERVICE: The gRPC service name.
        SLOW_MAX_SECONDS: Upper bound on how long a ``Slow`` call can wait.
    """

    SERVICE = "test.Echo"
    SLOW_MAX_SECONDS = 30.0
    serves_health = False  # so that a client's health check meets UNIMPLEMENTED

    def __init__(self, **kwargs: Unpack[ServerKeywords]) -> None:
        """Prepare, but do not start, the server (4 handler threads unless ``max_workers``).

        Args:
            **kwargs: ``ThreadedGrpcServer``'s keywords.
        """
        kwargs.setdefault("max_workers", 4)
        super().__init__(**kwargs)
        self._condition = threading.Condition()
        self._released = False
        self._slow_started = 0

    def _add_services(self, server: Any) -> None:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=_identity, response_serializer=_identity
            )
            for name, method in (("Unary", self._unary), ("Slow", self._slow))
        }
        self._released = False
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(self.SERVICE, handlers)]
        )

    def _release(self) -> None:
        self.release()

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
