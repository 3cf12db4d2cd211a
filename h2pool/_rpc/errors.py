"""The error of a failed call, and the end-of-stream sentinel of ``read()``."""

from __future__ import annotations

from typing import Any, Final, final

from .._exceptions import H2PoolError
from .metadata import Metadata
from .status import StatusCode

__all__ = ["EOF", "EOFType", "RpcError"]

# Statuses a call gets when it was interrupted rather than answered (transport
# failures, deadlines, cancellation, resets): for these, whether the server
# ran the method is the caller's question, so the message answers it. A status
# like NOT_FOUND came from the server, which processed the call by definition.
_INTERRUPTED = frozenset(
    {
        StatusCode.CANCELLED,
        StatusCode.UNKNOWN,
        StatusCode.DEADLINE_EXCEEDED,
        StatusCode.INTERNAL,
        StatusCode.UNAVAILABLE,
    }
)


class RpcError(H2PoolError):
    """A call ended with a status other than OK (grpc.aio's ``AioRpcError`` shape).

    ``str(err)`` is one line for people:
    ``/pkg.Svc/Method to 127.0.0.1:50051: UNAVAILABLE: connection lost (may have been
    processed)``. The method and the endpoint are left out when unknown.
    ``(never processed)`` is added when the server provably never saw the call;
    ``(may have been processed)`` only for the statuses an interrupted call gets
    (CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE), where the
    caller needs to know before trying again.

    Attributes:
        method: The full method name, ``/pkg.Service/Method``, or ``""``.
        endpoint: The endpoint that answered or failed, ``host:port``, if known.
    """

    def __init__(
        self,
        code: StatusCode,
        details: str,
        *,
        method: str = "",
        endpoint: str | None = None,
        initial_metadata: Metadata | None = None,
        trailing_metadata: Metadata | None = None,
        debug: str = "",
        never_processed: bool = False,
    ) -> None:
        where = method
        if endpoint is not None:
            where = f"{where} to {endpoint}" if where else endpoint
        message = f"{where}: {code.name}: {details}" if where else f"{code.name}: {details}"
        suffix = ""
        if never_processed:
            suffix = " (never processed)"
        elif code in _INTERRUPTED:
            suffix = " (may have been processed)"
        if not message.endswith(suffix):  # a pool error's details may say it already
            message += suffix
        super().__init__(message, never_processed=never_processed)
        self.method = method
        self.endpoint = endpoint
        self._code = code
        self._details = details
        self._initial_metadata = initial_metadata
        self._trailing_metadata = trailing_metadata
        self._debug = debug

    def code(self) -> StatusCode:
        """The status of the call."""
        return self._code

    def details(self) -> str:
        """The status message: the server's ``grpc-message``, or why the call failed here."""
        return self._details

    def initial_metadata(self) -> Metadata:
        """The response headers' metadata (empty when none arrived)."""
        return Metadata() if self._initial_metadata is None else self._initial_metadata

    def trailing_metadata(self) -> Metadata:
        """The trailers' metadata (empty when none arrived)."""
        return Metadata() if self._trailing_metadata is None else self._trailing_metadata

    def debug_error_string(self) -> str:
        """Details for debugging: what the transport saw, with the status and the peer.

        Shaped like gRPC core's (``{grpc_status:14, grpc_message:"..."}``), as
        grpc.aio's ``AioRpcError.debug_error_string()``.
        """
        fields = [f"grpc_status:{self._code.value}", f"grpc_message:{self._details!r}"]
        if self.method:
            fields.append(f"method:{self.method!r}")
        if self.endpoint is not None:
            fields.append(f"peer:{self.endpoint!r}")
        text = f"{self._code.name}: {{{', '.join(fields)}}}"
        return f"{text}: {self._debug}" if self._debug else text

    def __reduce__(self) -> tuple[Any, ...]:
        # copy() and pickle rebuild from the two positional arguments, then
        # restore every attribute (the message included, as in_context() sets it).
        return (type(self), (self._code, self._details), {**self.__dict__, "args": self.args})


@final
class EOFType:
    """The type of :data:`EOF`: one instance, like ``grpc.aio.EOF``."""

    __slots__ = ()
    _instance: EOFType | None = None

    def __new__(cls) -> EOFType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "h2pool.rpc.EOF"

    def __reduce__(self) -> str:
        return "EOF"


EOF: Final = EOFType()
"""What ``await call.read()`` of a streaming-response call returns at the end of the stream."""
