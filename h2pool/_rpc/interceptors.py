"""Client interceptors, as grpc.aio defines them.

An interceptor gets ``(continuation, client_call_details, request)``;
``await continuation(details, request)`` makes the call (through the next
interceptor, then the channel) and returns it. The interceptor returns that
call, another call, or for a unary response the response itself. The caller
holds an :class:`InterceptedCall` at once; it forwards to whatever the chain
produced once the chain has run. Interceptors written for grpc.aio work
unchanged: they are recognised by their ``intercept_*`` method.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from typing import Any, NamedTuple

from .errors import EOF, RpcError
from .metadata import Metadata, MetadataIn
from .status import StatusCode

__all__ = [
    "ClientCallDetails",
    "ClientInterceptor",
    "InterceptedCall",
    "StreamStreamClientInterceptor",
    "StreamUnaryClientInterceptor",
    "UnaryStreamClientInterceptor",
    "UnaryUnaryClientInterceptor",
]


class ClientCallDetails(NamedTuple):
    """What an interceptor may change about a call (``details._replace(metadata=...)``).

    Interceptors get the fields as grpc.aio gives them, since interceptors
    written for it (tracing, auth) rely on that: ``method`` as bytes (they
    call ``details.method.decode()``) and ``metadata`` as a :class:`Metadata`,
    never None (they call ``details.metadata.add(...)``). Details passed on
    may hold the method as str or bytes, and metadata as any pairs.

    Attributes:
        method: ``b"/package.Service/Method"``.
        timeout: Seconds the call may take, or None.
        metadata: The call's metadata.
        credentials: Call credentials (not supported: must stay None).
        wait_for_ready: The call's ``wait_for_ready``, or None for the default.
    """

    method: bytes | str
    timeout: float | None
    metadata: MetadataIn | None
    credentials: Any
    wait_for_ready: bool | None


class ClientInterceptor(abc.ABC):  # noqa: B024 - a marker base, as grpc.aio's
    """Base of the four interceptor kinds."""


Continuation = Callable[[ClientCallDetails, Any], Awaitable[Any]]


class UnaryUnaryClientInterceptor(ClientInterceptor):
    """Intercepts unary-unary calls."""

    @abc.abstractmethod
    async def intercept_unary_unary(
        self, continuation: Continuation, client_call_details: ClientCallDetails, request: Any
    ) -> Any:
        """Return ``await continuation(client_call_details, request)`` (or a response)."""


class UnaryStreamClientInterceptor(ClientInterceptor):
    """Intercepts unary-stream calls."""

    @abc.abstractmethod
    async def intercept_unary_stream(
        self, continuation: Continuation, client_call_details: ClientCallDetails, request: Any
    ) -> Any:
        """Return ``await continuation(client_call_details, request)`` (or an async iterator)."""


class StreamUnaryClientInterceptor(ClientInterceptor):
    """Intercepts stream-unary calls."""

    @abc.abstractmethod
    async def intercept_stream_unary(
        self,
        continuation: Continuation,
        client_call_details: ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        """Return ``await continuation(client_call_details, request_iterator)``."""


class StreamStreamClientInterceptor(ClientInterceptor):
    """Intercepts stream-stream calls."""

    @abc.abstractmethod
    async def intercept_stream_stream(
        self,
        continuation: Continuation,
        client_call_details: ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        """Return ``await continuation(client_call_details, request_iterator)``."""


#: The method an interceptor of each kind implements.
HOOKS = {
    "unary_unary": "intercept_unary_unary",
    "unary_stream": "intercept_unary_stream",
    "stream_unary": "intercept_stream_unary",
    "stream_stream": "intercept_stream_stream",
}


def interceptors_for(kind: str, interceptors: Sequence[Any]) -> list[Any]:
    """Those of ``interceptors`` that intercept calls of ``kind`` (duck-typed, as grpc.aio's)."""
    hook = HOOKS[kind]
    return [interceptor for interceptor in interceptors if hasattr(interceptor, hook)]


class _Ended:
    """The status of a call that ended without a call object to ask."""

    def __init__(
        self,
        code: StatusCode,
        details: str = "",
        initial_metadata: Metadata | None = None,
        trailing_metadata: Metadata | None = None,
    ) -> None:
        self._code = code
        self._details = details
        self._initial_metadata = initial_metadata or Metadata()
        self._trailing_metadata = trailing_metadata or Metadata()

    @classmethod
    def of(cls, error: RpcError) -> _Ended:
        """The status an error carries."""
        return cls(
            error.code(), error.details(), error.initial_metadata(), error.trailing_metadata()
        )

    async def initial_metadata(self) -> Metadata:
        return self._initial_metadata

    async def trailing_metadata(self) -> Metadata:
        return self._trailing_metadata

    async def code(self) -> StatusCode:
        return self._code

    async def details(self) -> str:
        return self._details


class _Answered(_Ended):
    """The call an interceptor stands for when it returned a response, not a call."""

    def __init__(self, response: Any) -> None:
        super().__init__(StatusCode.OK)
        self._response = response

    def __await__(self) -> Generator[Any, None, Any]:
        if False:  # pragma: no cover - makes this a generator
            yield None
        return self._response

    def __aiter__(self) -> AsyncIterator[Any]:
        return aiter(self._response)

    async def read(self) -> Any:
        if not hasattr(self, "_iterator"):
            self._iterator = aiter(self._response)
        try:
            return await anext(self._iterator)
        except StopAsyncIteration:
            return EOF

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)


class InterceptedCall:
    """A call made through interceptors: forwards to the call the chain produced.

    Args:
        kind: ``"unary_unary"``, ``"unary_stream"``, ``"stream_unary"`` or ``"stream_stream"``.
        interceptors: The interceptors of that kind, outermost first.
        details: The call's details as the caller gave them.
        request: The request message, or the request iterator (or None).
        make_call: Makes the real call from the final details and request.
    """

    def __init__(
        self,
        kind: str,
        interceptors: Sequence[Any],
        details: ClientCallDetails,
        request: Any,
        make_call: Callable[[ClientCallDetails, Any], Any],
    ) -> None:
        self._hook = HOOKS[kind]
        self._interceptors = list(interceptors)
        self._make_call = make_call
        self._callbacks: list[Callable[[Any], None]] = []
        self._cancelled = False
        self._task = asyncio.get_running_loop().create_task(self._intercept(0, details, request))
        self._task.add_done_callback(self._chained)

    async def _intercept(self, index: int, details: ClientCallDetails, request: Any) -> Any:
        if index == len(self._interceptors):
            return self._make_call(details, request)

        async def continuation(next_details: ClientCallDetails, next_request: Any) -> Any:
            return await self._intercept(index + 1, next_details, next_request)

        interceptor = self._interceptors[index]
        result = await getattr(interceptor, self._hook)(continuation, details, request)
        if hasattr(result, "add_done_callback") and hasattr(result, "code"):
            return result
        return _Answered(result)

    def _chained(self, task: asyncio.Task[Any]) -> None:
        callbacks, self._callbacks = self._callbacks, []
        if task.cancelled() or task.exception() is not None:
            for callback in callbacks:
                callback(self)
            return
        for callback in callbacks:
            task.result().add_done_callback(lambda _, callback=callback: callback(self))

    async def _call(self) -> Any:
        return await asyncio.shield(self._task)

    # -- forwarded ------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Any]:
        return self._response().__await__()

    async def _response(self) -> Any:
        call = await self._call()
        return await call

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        call = await self._call()
        async for message in call:
            yield message

    async def read(self) -> Any:
        """The next response message, or ``EOF``."""
        return await (await self._call()).read()

    async def write(self, request: Any) -> None:
        """Send one request message."""
        await (await self._call()).write(request)

    async def done_writing(self) -> None:
        """End the request stream."""
        await (await self._call()).done_writing()

    def cancel(self) -> bool:
        """Cancel the call, or the interceptors still running."""
        if not self._task.done():
            self._cancelled = True
            return self._task.cancel()
        if self._task.cancelled() or self._task.exception() is not None:
            return False
        return bool(self._task.result().cancel())

    def cancelled(self) -> bool:
        """Whether the call was cancelled by this side."""
        if self._task.done() and not self._task.cancelled() and self._task.exception() is None:
            return bool(self._task.result().cancelled())
        return self._cancelled

    def done(self) -> bool:
        """Whether the call has ended."""
        if not self._task.done():
            return False
        if self._task.cancelled() or self._task.exception() is not None:
            return True
        return bool(self._task.result().done())

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline, or None."""
        if self._task.done() and not self._task.cancelled() and self._task.exception() is None:
            remaining: float | None = self._task.result().time_remaining()
            return remaining
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(call)`` when the call ends."""
        if not self._task.done():
            self._callbacks.append(callback)
        elif self._task.cancelled() or self._task.exception() is not None:
            callback(self)
        else:
            self._task.result().add_done_callback(lambda _: callback(self))

    async def _ended(self) -> Any:
        """The call the chain produced, or a stand-in with the status it ended with.

        Raises:
            Exception: What an interceptor raised, other than RpcError (as grpc.aio).
        """
        try:
            return await self._call()
        except RpcError as exc:
            return _Ended.of(exc)
        except asyncio.CancelledError:
            return _Ended(StatusCode.CANCELLED, "cancelled while the interceptors ran")

    async def initial_metadata(self) -> Metadata:
        """The response headers' metadata."""
        metadata: Metadata = await (await self._ended()).initial_metadata()
        return metadata

    async def trailing_metadata(self) -> Metadata:
        """The trailers' metadata."""
        metadata: Metadata = await (await self._ended()).trailing_metadata()
        return metadata

    async def code(self) -> StatusCode:
        """The status code."""
        code: StatusCode = await (await self._ended()).code()
        return code

    async def details(self) -> str:
        """The status details."""
        details: str = await (await self._ended()).details()
        return details
