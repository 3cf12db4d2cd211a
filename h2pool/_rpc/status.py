"""gRPC status codes, and the status of a call that ended without one from the server.

The codes and their numbers are gRPC's (grpc/grpc ``doc/statuscodes.md``).
When no ``grpc-status`` arrives, the status comes from what did: an HTTP
status (``doc/http-grpc-status-mapping.md``), an RST_STREAM (the table in
``doc/PROTOCOL-HTTP2.md``), or an error of the pool.
"""

from __future__ import annotations

import enum

from h2.errors import ErrorCodes

from .._exceptions import (
    ConnectTimeout,
    H2ConnectionError,
    H2PoolError,
    H2ProtocolError,
    H2TimeoutError,
    PoolClosed,
    PoolOverloaded,
    PoolTimeout,
    StreamRefused,
    StreamReset,
)

__all__ = [
    "StatusCode",
    "parse_status",
    "status_from_error",
    "status_from_http",
    "status_from_reset",
]


class StatusCode(enum.IntEnum):
    """A gRPC status code: gRPC's names and numbers (``doc/statuscodes.md``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def coerce(cls, value: object) -> StatusCode:
        """The member for ``value``: a member, its number, its name, or a ``grpc.StatusCode``.

        Names are taken in any case, as service configs spell them
        (``"unavailable"``). A ``grpc.StatusCode`` is recognised by its value,
        a tuple starting with the number, so grpc need not be imported.

        Raises:
            ValueError: ``value`` names no status code.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value in _BY_NUMBER:
                return _BY_NUMBER[value]
        elif isinstance(value, str):
            member = cls.__members__.get(value.upper())
            if member is not None:
                return member
        else:
            number = getattr(value, "value", None)
            if isinstance(number, tuple) and number and type(number[0]) is int:
                return cls.coerce(number[0])
        raise ValueError(f"not a gRPC status code: {value!r}")


_BY_NUMBER = {code.value: code for code in StatusCode}
# grpc-status as the server sends it: the decimal number, looked up without parsing.
_BY_TEXT = {str(code.value): code for code in StatusCode}


def parse_status(value: str | None) -> StatusCode:
    """The status in a ``grpc-status`` field; UNKNOWN when it is missing or not a known code."""
    if value is None:
        return StatusCode.UNKNOWN
    code = _BY_TEXT.get(value)
    if code is not None:
        return code
    # Leading zeros and surrounding spaces: lenient, as a number is what is meant.
    stripped = value.strip(" \t")
    if stripped.isascii() and stripped.isdigit():
        return _BY_NUMBER.get(int(stripped), StatusCode.UNKNOWN)
    return StatusCode.UNKNOWN


# doc/http-grpc-status-mapping.md: the status of a response that is not gRPC.
_BY_HTTP_STATUS = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}


def status_from_http(status: int) -> StatusCode:
    """The status of a response without ``grpc-status`` (``doc/http-grpc-status-mapping.md``)."""
    return _BY_HTTP_STATUS.get(status, StatusCode.UNKNOWN)


# doc/PROTOCOL-HTTP2.md "Errors": RST_STREAM codes as statuses. NO_ERROR ends a
# stream early (no status arrived) so it is INTERNAL; STREAM_CLOSED has no
# mapping (no open stream) and falls to INTERNAL as unknown codes do.
_BY_RESET_CODE: dict[int, StatusCode] = {
    ErrorCodes.REFUSED_STREAM: StatusCode.UNAVAILABLE,
    ErrorCodes.CANCEL: StatusCode.CANCELLED,
    ErrorCodes.ENHANCE_YOUR_CALM: StatusCode.RESOURCE_EXHAUSTED,
    ErrorCodes.INADEQUATE_SECURITY: StatusCode.PERMISSION_DENIED,
}


def status_from_reset(error_code: int) -> StatusCode:
    """The status of a stream the server reset with ``error_code`` (PROTOCOL-HTTP2.md)."""
    return _BY_RESET_CODE.get(error_code, StatusCode.INTERNAL)


def status_from_error(error: H2PoolError) -> StatusCode:
    """The status of a call that failed with an error of the pool.

    A connection that failed, closed or could not be had means the service
    was unavailable; a closed pool cancels the call (grpc.aio cancels the
    calls of a closed channel); other timeouts are the deadline.
    """
    if isinstance(error, StreamReset) and error.error_code is not None:
        return status_from_reset(error.error_code)
    # A refused stream never reached the server: REFUSED_STREAM, or a GOAWAY
    # above it whose error_code is the GOAWAY's (often NO_ERROR, which as a
    # reset code would read INTERNAL).
    if isinstance(
        error, StreamRefused | H2ConnectionError | PoolOverloaded | PoolTimeout | ConnectTimeout
    ):
        return StatusCode.UNAVAILABLE
    if isinstance(error, PoolClosed):
        return StatusCode.CANCELLED
    if isinstance(error, H2TimeoutError):
        return StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, H2ProtocolError):
        return StatusCode.INTERNAL
    return StatusCode.UNKNOWN
