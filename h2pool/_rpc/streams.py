"""Calls that stream messages one way or both, on one ``Pool.stream()`` exchange each.

The response is read as the caller reads it: messages are decoded from the
body chunk by chunk, so a slow reader leaves the rest in the HTTP/2 window
and the server waits (bounded memory). Requests go through an
:class:`~.outbox.Outbox` that the pool's body sender drains: a fast writer
waits for window. Reads and writes are independent, so bidirectional calls
interleave them freely.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from .._exceptions import H2PoolError
from .._messages import fields_of
from .._pool.response import Response
from .call import DEADLINE_DETAILS, UNBOUNDED, Call, Invocation, error_status
from .errors import EOF, RpcError
from .framing import MessageDecoder
from .outbox import Outbox, OutboxClosed
from .responses import Status, final_status
from .status import StatusCode

__all__ = ["StreamStreamCall", "StreamUnaryCall", "UnaryStreamCall"]

RequestIterator = Iterable[Any] | AsyncIterable[Any]


class _StreamingCall(Call):
    """One exchange whose request or response (or both) is a stream of messages.

    Args:
        invocation: What the multi-callable decided for the call.
        request: The one request message (unary requests), or None.
        requests: An iterable of request messages to send (stream
            requests), or None: the caller writes them with ``write()``.
        request_streaming: Whether the request is a stream.
        response_streaming: Whether the response is a stream.
    """

    def __init__(
        self,
        invocation: Invocation,
        request: Any,
        requests: RequestIterator | None,
        *,
        request_streaming: bool,
        response_streaming: bool,
    ) -> None:
        super().__init__(invocation)
        self._response_streaming = response_streaming
        self._outbox: Outbox | None = Outbox() if request_streaming else None
        self._body: bytes | None = None
        self._exchange: AbstractAsyncContextManager[Response] | None = None
        self._response: Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._decoder: MessageDecoder | None = None
        self._messages: deque[bytes] = deque()
        self._received = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        if not request_streaming:
            try:
                self._body = invocation.serialize(request)
            except RpcError as exc:
                self._finish(error_status(exc))
        if invocation.deadline is not None and not self.done():
            self._timer = self._loop.call_at(invocation.deadline, self._expire)
        self._opening = self._spawn(self._open())
        self._pump: asyncio.Task[None] | None = None
        if requests is not None:
            self._pump = self._spawn(self._consume(requests))

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._finish(error_status(RpcError(StatusCode.INTERNAL, repr(task.exception()))))

    # -- ending ---------------------------------------------------------------

    def _finish(self, status: Status) -> None:
        if self._status is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._outbox is not None:
            self._outbox.fail(OutboxClosed(f"{self._invocation.method}: the call has ended"))
        super()._finish(status)

    def _expire(self) -> None:
        self._timer = None
        self._finish(Status(StatusCode.DEADLINE_EXCEEDED, DEADLINE_DETAILS))
        self._abort()

    def _abort(self) -> None:
        self._opening.cancel()
        if self._pump is not None:
            self._pump.cancel()
        if self._response is not None:
            self._response.reset()  # the slot is free when cancel() returns
        if self._exchange is not None:
            self._spawn(self._release())

    async def _release(self) -> None:
        """Leave the exchange: an unfinished stream is reset (RST_STREAM CANCEL)."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            with contextlib.suppress(H2PoolError):
                await exchange.__aexit__(None, None, None)

    # -- the attempts, until the response headers -------------------------

    async def _open(self) -> None:
        invocation = self._invocation
        outbox = self._outbox
        content: bytes | Outbox | None = outbox if outbox is not None else self._body
        if content is None or self.done():
            return
        while True:
            try:
                timeout = self._remaining()
            except RpcError:
                return
            if self._attempts and outbox is not None:
                outbox.rewind()
            self._attempts += 1
            exchange = invocation.pool.stream(
                "POST",
                invocation.method,
                headers=invocation.attempt_headers(self._loop.time()),
                content=content,
                timeout=UNBOUNDED if timeout is None else timeout,
                wait_for_ready=invocation.wait_for_ready,
            )
            try:
                response = await exchange.__aenter__()
            except H2PoolError as exc:
                status = self._attempt_failed(exc)
            else:
                opened = self._answered(response)
                if opened is None:
                    self._committed(exchange, response)
                    return
                await exchange.__aexit__(None, None, None)
                judged = self._judged(
                    opened, response, replayable=outbox is None or outbox.rewindable
                )
                if judged is None:
                    continue
                status = judged
            delay = self._retry_delay(status)
            if delay is None or (outbox is not None and not outbox.rewindable):
                self._finish(status)
                return
            await asyncio.sleep(delay)

    def _committed(
        self, exchange: AbstractAsyncContextManager[Response], response: Response
    ) -> None:
        """The response headers arrived: the call is the caller's now (gRFC A6)."""
        self._exchange = exchange
        self._response = response
        self._chunks = response.aiter_bytes()
        if self._outbox is not None:
            self._outbox.commit()
        try:
            self._decoder = self._invocation.decoder(fields_of(response.headers))
        except RpcError as exc:
            self._finish(error_status(exc))
            self._abort()
            return

    # -- reading -------------------------------------------------------------

    async def _next_message(self) -> bytes | None:
        """The next response message, or None at the end of an OK call.

        Raises:
            RpcError: The call ended with another status.
        """
        try:
            if not self._opening.done():
                # Not awaited directly: an opening cancelled by the deadline
                # ends the call with a status, which is what the reader gets.
                await asyncio.wait((self._opening,))
            while not self._messages:
                if self._status is not None:
                    status = self._status
                    if status.code is StatusCode.OK:
                        return None
                    raise self._outcome_error(status)
                await self._receive()
        except asyncio.CancelledError:
            self.cancel()
            raise
        return self._messages.popleft()

    async def _receive(self) -> None:
        """Read one chunk of the body and decode it; at the end, take the status."""
        chunks, decoder, response = self._chunks, self._decoder, self._response
        assert chunks is not None
        assert decoder is not None
        assert response is not None
        try:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                decoder.finish()
                self._end(final_status(fields_of(response.trailers)))
                await self._release()
                return
            messages = decoder.feed(chunk)
        except H2PoolError as exc:
            if self._status is None:
                self._finish(error_status(exc))
                self._abort()
            return
        self._received += len(messages)
        if not self._response_streaming and self._received > 1:
            self._finish(
                Status(StatusCode.INTERNAL, "a unary response must carry one message, not more")
            )
            self._abort()
            return
        self._messages.extend(messages)

    def _end(self, status: Status) -> None:
        """The body ended with ``status``; a unary response must have had its message."""
        self._count_unavailable(status)
        if status.code is StatusCode.OK and not self._response_streaming and self._received != 1:
            status = Status(
                StatusCode.INTERNAL,
                f"a unary response must carry one message, not {self._received}",
                metadata=status.trailing_metadata,
            )
        self._finish(status)

    def _deliver(self, message: bytes, status: Status | None) -> Any:
        try:
            return super()._deliver(message, status)
        except RpcError:
            self._abort()
            raise

    # -- writing ---------------------------------------------------------------

    async def _write(self, request: Any) -> None:
        outbox = self._outbox
        assert outbox is not None
        if self._status is not None:
            raise self._ended_error()
        try:
            frame = self._invocation.serialize(request)
        except RpcError as exc:
            status = error_status(exc)
            self._finish(status)
            self._abort()
            raise self._error(status) from None
        try:
            await outbox.write(frame)
        except OutboxClosed:
            if self._status is None:
                raise  # done_writing() was called: the call goes on
            raise self._ended_error() from None
        except asyncio.CancelledError:
            self.cancel()
            raise

    def _ended_error(self) -> BaseException:
        status = self._status
        assert status is not None
        if status.code is StatusCode.OK:
            return OutboxClosed(f"{self._invocation.method}: the call has ended with OK")
        return self._outcome_error(status)

    def _outcome_error(self, status: Status) -> BaseException:
        """What reading or writing raises once the call ended without OK.

        As grpc.aio: a call cancelled on this side raises ``CancelledError``,
        any other ending its ``RpcError``.
        """
        if self._cancelled:
            return asyncio.CancelledError()
        return self._error(status)

    async def _consume(self, requests: RequestIterator) -> None:
        """Send the messages of the caller's iterable, then end the request stream."""
        outbox = self._outbox
        assert outbox is not None
        try:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    await self._write(request)
            else:
                for request in requests:
                    await self._write(request)
        except H2PoolError:
            return  # the call has ended; its status says why
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._finish(Status(StatusCode.CANCELLED, f"the request iterator raised {exc!r}"))
            self._abort()
            return
        outbox.end()


class _RequestWriter(_StreamingCall):
    """``write()`` and ``done_writing()`` of calls with a request stream."""

    async def write(self, request: Any) -> None:
        """Send one request message; returns once it is on its way (flow control).

        Raises:
            RpcError: The call has ended with a status other than OK.
            H2PoolError: The call has ended, or ``done_writing()`` was called.
        """
        if self._pump is not None:
            raise OutboxClosed("this call sends its request iterator: write() cannot be mixed in")
        await self._write(request)

    async def done_writing(self) -> None:
        """No more request messages: the request stream ends (END_STREAM)."""
        if self._pump is not None:
            raise OutboxClosed("this call sends its request iterator: it ends the stream itself")
        assert self._outbox is not None
        self._outbox.end()


class _ResponseReader(_StreamingCall):
    """``read()`` and ``async for`` of calls with a response stream."""

    async def read(self) -> Any:
        """The next response message, or ``h2pool.rpc.EOF`` after the last one.

        Raises:
            RpcError: The call ended with a status other than OK.
        """
        message = await self._next_message()
        if message is None:
            return EOF
        return self._deliver(message, None)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while (message := await self._next_message()) is not None:
            yield self._deliver(message, None)


class _UnaryResponse(_StreamingCall):
    """``response = await call`` of calls with a request stream and one response."""

    _result: asyncio.Task[Any] | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        if self._result is None:
            self._result = self._loop.create_task(self._response_message())
            self._result.add_done_callback(self._watch)
        return self._result.__await__()

    async def _response_message(self) -> Any:
        message = await self._next_message()
        assert message is not None  # _end() turns an empty OK response into an error
        result = self._deliver(message, None)
        while await self._next_message() is not None:
            pass  # up to the status: _receive() refuses a second message
        return result


class UnaryStreamCall(_ResponseReader):
    """One request, a stream of responses: ``async for response in call``."""

    def __init__(self, invocation: Invocation, request: Any) -> None:
        super().__init__(
            invocation, request, None, request_streaming=False, response_streaming=True
        )


class StreamUnaryCall(_UnaryResponse, _RequestWriter):
    """A stream of requests, one response: ``await call``."""

    def __init__(self, invocation: Invocation, requests: RequestIterator | None) -> None:
        super().__init__(
            invocation, None, requests, request_streaming=True, response_streaming=False
        )


class StreamStreamCall(_ResponseReader, _RequestWriter):
    """Streams both ways: ``write()``/``read()`` in any order, or ``async for``."""

    def __init__(self, invocation: Invocation, requests: RequestIterator | None) -> None:
        super().__init__(
            invocation, None, requests, request_streaming=True, response_streaming=True
        )
