"""Calls of the gRPC client, shaped like grpc.aio's: what every call offers, and unary calls.

A call starts as soon as it is made (as in grpc.aio) and ends exactly once,
with a :class:`~.responses.Status`: from the server's trailers, from an
answer that was not gRPC, from a failure of the pool, from its deadline, or
from a cancellation. Attempts follow gRFC A6: calls the server never
processed are retried by the pool itself (GOAWAY above the stream,
REFUSED_STREAM, a connection that failed before the request left); a
``retryPolicy`` of the service config retries statuses it names, until the
response headers are committed to the caller (:func:`~.retry.decide_rpc_retry`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from .._exceptions import H2PoolError, RequestTimeout
from .._messages import fields_of
from .._pool.pool import Pool
from .._pool.response import Response
from .._pool.timeouts import Timeouts
from .compression import Codec, codec_named
from .config import MethodRetry
from .errors import RpcError
from .framing import MessageDecoder, encode_message
from .metadata import Metadata, decode_metadata, encode_timeout
from .responses import Status, final_status, header_value, opening_status
from .retry import RetryThrottle, decide_rpc_retry, refused_by_stopping_server
from .status import StatusCode, status_from_error

__all__ = ["Call", "DoneCallback", "Invocation", "UnaryUnaryCall"]

logger = logging.getLogger("h2pool.rpc")

#: What grpc.aio says of a call its application cancelled.
CANCELLED_DETAILS = "Locally cancelled by application!"
DEADLINE_DETAILS = "Deadline Exceeded"

#: The pool's timeouts of an attempt without a deadline (made once: calls are many).
UNBOUNDED = Timeouts(total=None)

DoneCallback = Callable[["Call"], None]
Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]


@dataclass(slots=True)
class Invocation:
    """Everything a call needs, decided by its multi-callable when it is made.

    Attributes:
        pool: The pool the call goes through.
        method: ``"/package.Service/Method"``.
        headers: Per-call header fields: metadata, ``grpc-encoding``.
        deadline: Event-loop time by which the call must end, or None.
        wait_for_ready: Wait for an endpoint when every one is failing.
        codec: Compression of the request messages, or None.
        max_send: Largest request message, or None.
        max_receive: Largest response message, or None.
        retry: The method's retry policy (service config), or None.
        throttle: The channel's retry throttle, or None.
        serializer: Request message to bytes (None: messages are bytes).
        deserializer: Bytes to response message (None: messages are bytes).
    """

    pool: Pool
    method: str
    headers: list[tuple[bytes, bytes]]
    deadline: float | None
    wait_for_ready: bool
    codec: Codec | None
    max_send: int | None
    max_receive: int | None
    retry: MethodRetry | None
    throttle: RetryThrottle | None
    serializer: Serializer | None
    deserializer: Deserializer | None

    def serialize(self, message: Any) -> bytes:
        """The request message as bytes, framed; errors become a status (nothing sent)."""
        try:
            data = message if self.serializer is None else self.serializer(message)
        except Exception as exc:
            raise RpcError(
                StatusCode.INTERNAL, f"serializing the request failed: {exc!r}", method=self.method
            ) from exc
        if not isinstance(data, bytes | bytearray | memoryview):
            raise RpcError(
                StatusCode.INTERNAL,
                f"a request message must serialize to bytes, not {type(data).__name__}",
                method=self.method,
            )
        return encode_message(bytes(data), self.codec, self.max_send)

    def deserialize(self, data: bytes) -> Any:
        """A response message from its bytes."""
        if self.deserializer is None:
            return data
        try:
            return self.deserializer(data)
        except Exception as exc:
            raise RpcError(
                StatusCode.INTERNAL,
                f"deserializing the response failed: {exc!r}",
                method=self.method,
            ) from exc

    def attempt_headers(self, now: float) -> list[tuple[bytes, bytes]]:
        """The call's header fields for an attempt starting at ``now``."""
        if self.deadline is None:
            return self.headers
        return [(b"grpc-timeout", encode_timeout(self.deadline - now)), *self.headers]

    def decoder(self, fields: list[tuple[str, str]]) -> MessageDecoder:
        """A decoder of the response messages, in the encoding the server chose."""
        encoding = header_value(fields, "grpc-encoding")
        codec = codec_named(encoding) if encoding else None
        return MessageDecoder(codec, self.max_receive)


def error_status(error: H2PoolError) -> Status:
    """How a call ends when the pool fails it."""
    if isinstance(error, RpcError):
        return Status(error.code(), error.details(), metadata=error.trailing_metadata())
    if isinstance(error, RequestTimeout):
        return Status(StatusCode.DEADLINE_EXCEEDED, DEADLINE_DETAILS)
    return Status(status_from_error(error), str(error))


class Call:
    """What every call offers (grpc.aio's ``Call``): metadata, status, cancellation.

    Not made directly: a multi-callable of :class:`~h2pool.rpc.Channel` makes
    them. The response headers and the status are kept as they come; futures
    are made only for those who wait for them (most callers never do).
    """

    def __init__(self, invocation: Invocation) -> None:
        self._invocation = invocation
        self._loop = asyncio.get_running_loop()
        self._status: Status | None = None
        self._headers: list[tuple[str, str]] | None = None
        self._initial: Metadata | None = None
        self._waiters: list[asyncio.Future[None]] | None = None
        self._callbacks: list[DoneCallback] | None = None
        self._cancelled = False
        self._attempts = 0
        self._never_processed = False
        self._stop_retried = False
        self.endpoint: str | None = None

    # -- grpc.aio's RpcContext ---------------------------------------------

    def cancelled(self) -> bool:
        """Whether the call was cancelled by this side."""
        return self._cancelled

    def done(self) -> bool:
        """Whether the call has ended (its status is known)."""
        return self._status is not None

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (never below 0), or None without one."""
        deadline = self._invocation.deadline
        return None if deadline is None else max(0.0, deadline - self._loop.time())

    def cancel(self) -> bool:
        """Cancel the call (RST_STREAM CANCEL); False if it had already ended."""
        if self._status is not None:
            return False
        self._cancelled = True
        self._finish(Status(StatusCode.CANCELLED, CANCELLED_DETAILS))
        self._abort()
        return True

    def add_done_callback(self, callback: DoneCallback) -> None:
        """Call ``callback(call)`` when the call ends (at once if it has)."""
        if self._status is not None:
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    # -- grpc.aio's Call ---------------------------------------------------

    async def _wait(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()`` (checked whenever the call makes progress)."""
        while not ready():
            waiter = self._loop.create_future()
            if self._waiters is None:
                self._waiters = [waiter]
            else:
                self._waiters.append(waiter)
            await waiter

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def initial_metadata(self) -> Metadata:
        """The response headers' metadata (empty if the call ended without them)."""
        await self._wait(lambda: self._headers is not None or self._status is not None)
        if self._initial is None:
            self._initial = decode_metadata(self._headers or ())
        return self._initial

    async def _ended(self) -> Status:
        await self._wait(self.done)
        assert self._status is not None
        return self._status

    async def trailing_metadata(self) -> Metadata:
        """The trailers' metadata, once the call has ended."""
        return (await self._ended()).trailing_metadata

    async def code(self) -> StatusCode:
        """The status code, once the call has ended."""
        return (await self._ended()).code

    async def details(self) -> str:
        """The status details, once the call has ended."""
        return (await self._ended()).details

    async def wait_for_connection(self) -> None:
        """Wait until the response headers arrived (or the call ended)."""
        await self._wait(lambda: self._headers is not None or self._status is not None)

    # -- progress and ending -------------------------------------------------

    def _opened(self, headers: list[tuple[str, str]]) -> None:
        """The response headers arrived."""
        self._headers = headers
        if self._waiters is not None:
            self._wake()

    def _finish(self, status: Status) -> None:
        """End the call with ``status``, once; later endings are ignored."""
        if self._status is not None:
            return
        self._status = status
        invocation = self._invocation
        if (
            status.code is StatusCode.OK
            and invocation.throttle is not None
            and invocation.retry is not None
        ):
            # A6: a success gives tokens back (_retry_delay records the failures).
            invocation.throttle.record_success()
        if self._waiters is not None:
            self._wake()
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                logger.exception("%s: a done callback raised", self._invocation.method)

    def _abort(self) -> None:
        """Stop whatever still runs for the call, after it ended early."""

    def _watch(self, task: asyncio.Task[Any]) -> None:
        """``task``, working for the call, is done: a cancelled one cancels the call.

        It may have been cancelled with the task awaiting the call before it
        ever ran (so its own handlers never did). Its error is marked as
        seen: an unawaited failed call is no error of asyncio's.
        """
        if task.cancelled():
            self.cancel()
        else:
            task.exception()

    def _error(self, status: Status) -> RpcError:
        """The error a caller gets for a call that ended with ``status``."""
        initial = None
        if self._headers is not None:
            initial = self._initial or decode_metadata(self._headers)
        return RpcError(
            status.code,
            status.details,
            method=self._invocation.method,
            endpoint=self.endpoint,
            initial_metadata=initial,
            trailing_metadata=status.trailing_metadata,
            debug=f"attempts: {self._attempts}",
            never_processed=self._never_processed,
        )

    def _fail(self, status: Status) -> RpcError:
        """End with ``status`` (unless ended already) and give the error to raise."""
        self._finish(status)
        assert self._status is not None
        return self._error(self._status)

    def _attempt_failed(self, error: H2PoolError) -> Status:
        """An attempt failed in the pool: remember where, whether it was processed,
        and the response headers if they had arrived (the initial metadata)."""
        self._never_processed = error.never_processed
        self.endpoint = error.endpoint or self.endpoint
        if error.response_headers is not None:
            self._opened(error.response_headers)
        return error_status(error)

    def _answered(self, response: Response) -> Status | None:
        """An attempt got response headers: None when they open the response (it is
        committed, and they are the initial metadata), else how the attempt ended."""
        self.endpoint = response.endpoint
        fields = fields_of(response.headers)
        opened = opening_status(response.status_code, fields)
        if opened is None:
            self._opened(fields)
        elif response.status_code == 200:
            self._count_unavailable(opened)
        return opened

    def _count_unavailable(self, status: Status) -> None:
        """A status from the server in an HTTP 200 answer: UNAVAILABLE counts as a
        gateway error of its endpoint (the pool's outlier detection)."""
        if status.code is StatusCode.UNAVAILABLE and self.endpoint is not None:
            self._invocation.pool._unavailable(self.endpoint)

    def _retry_delay(self, status: Status) -> float | None:
        """Seconds before the next attempt of a call whose attempt ended with ``status``.

        None once the response headers were given to the caller (committed,
        gRFC A6), even when the attempt failed after them.
        """
        invocation = self._invocation
        policy = invocation.retry
        if policy is None:
            return None
        throttle = invocation.throttle
        if throttle is not None:
            if status.code in policy.retryable:
                throttle.record_failure()
            else:
                throttle.record_success()
        return decide_rpc_retry(
            status.code,
            committed=self._headers is not None,
            attempts=self._attempts,
            policy=policy,
            throttle=throttle,
            pushback=status.pushback,
            now=self._loop.time(),
            deadline=invocation.deadline,
        )

    def _judged(self, status: Status, response: Response, *, replayable: bool) -> Status | None:
        """The status of an answer that opened no gRPC response; None: send the call again now.

        A stopping server's CANCELLED for a call it never ran
        (:func:`~.retry.refused_by_stopping_server`) gets one transparent
        retry if the request can be sent again; otherwise the call ends with
        UNAVAILABLE, never processed (this side cancelled nothing).
        """
        self._never_processed = False
        if self._cancelled or not refused_by_stopping_server(
            status.code, draining=response.draining
        ):
            return status
        self._never_processed = True
        if replayable and not self._stop_retried:
            self._stop_retried = True
            logger.info(
                "%s: %s sent again: the server was stopping and never ran it",
                response.endpoint,
                self._invocation.method,
                extra={
                    "h2pool_endpoint": response.endpoint,
                    "h2pool_request": self._invocation.method,
                },
            )
            return None
        return Status(
            StatusCode.UNAVAILABLE,
            f"the server was stopping and never ran the call ({status.details or 'CANCELLED'})",
            metadata=status.trailing_metadata,
        )

    def _remaining(self) -> float | None:
        """Seconds left for an attempt; DEADLINE_EXCEEDED when none are (nothing sent)."""
        deadline = self._invocation.deadline
        if deadline is None:
            return None
        remaining = deadline - self._loop.time()
        if remaining <= 0:
            if not self._attempts:  # passed before the first attempt (h2pool.deadline)
                self._never_processed = True
            raise self._fail(Status(StatusCode.DEADLINE_EXCEEDED, DEADLINE_DETAILS))
        return remaining

    def _completed(
        self, response: Response, content: bytes, *, unary: bool
    ) -> tuple[list[bytes], Status]:
        """The messages of a whole response body, and the trailers' OK status.

        Raises:
            RpcError: The status is not OK, a message broke a limit, or a
                unary response did not carry exactly one message (the call
                has ended).
        """
        trailers = fields_of(response.trailers)
        status = final_status(trailers)
        if status.code is not StatusCode.OK:
            self._count_unavailable(status)
            raise self._fail(status)
        try:
            decoder = self._invocation.decoder(fields_of(response.headers))
            messages = decoder.feed(content)
            decoder.finish()
        except RpcError as exc:
            raise self._fail(error_status(exc)) from exc
        if unary and len(messages) != 1:
            raise self._fail(
                Status(
                    StatusCode.INTERNAL,
                    f"a unary response must carry one message, not {len(messages)}",
                    trailers,
                )
            )
        return messages, status

    def _deliver(self, message: bytes, status: Status | None) -> Any:
        """``message`` deserialized; the call ends with ``status`` (if given) once it is."""
        try:
            result = self._invocation.deserialize(message)
        except RpcError as exc:
            raise self._fail(error_status(exc)) from exc
        if status is not None:
            self._finish(status)
        return result

    def __repr__(self) -> str:
        state = "done" if self.done() else "active"
        return f"<{type(self).__name__} {self._invocation.method} {state}>"


class UnaryUnaryCall(Call):
    """A call with one request and one response: ``response = await call``.

    The fast path: one ``Pool.request()`` per attempt, the whole response at once.
    """

    def __init__(self, invocation: Invocation, request: Any) -> None:
        super().__init__(invocation)
        self._task = self._loop.create_task(self._attempt_all(request))
        self._task.add_done_callback(self._watch)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._task.__await__()

    def _abort(self) -> None:
        self._task.cancel()

    async def _attempt_all(self, request: Any) -> Any:
        invocation = self._invocation
        try:
            body = invocation.serialize(request)
        except RpcError as exc:
            raise self._fail(error_status(exc)) from None
        pool = invocation.pool
        while True:
            timeout = self._remaining()
            self._attempts += 1
            try:
                response = await pool.request(
                    "POST",
                    invocation.method,
                    headers=invocation.attempt_headers(self._loop.time()),
                    content=body,
                    timeout=UNBOUNDED if timeout is None else timeout,
                    wait_for_ready=invocation.wait_for_ready,
                )
            except H2PoolError as exc:
                status = self._attempt_failed(exc)
            else:
                opened = self._answered(response)
                if opened is None:
                    (message,), status = self._completed(response, response.content, unary=True)
                    return self._deliver(message, status)
                judged = self._judged(opened, response, replayable=True)
                if judged is None:
                    continue
                status = judged
            delay = self._retry_delay(status)
            if delay is None:
                raise self._fail(status)
            await asyncio.sleep(delay)
