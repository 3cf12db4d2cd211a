"""What a gRPC response says, decided from its header blocks: pure functions.

PROTOCOL-HTTP2.md (grpc/grpc ``doc/``) defines a response as
``Response-Headers *Length-Prefixed-Message Trailers`` or ``Trailers-Only``
(one HEADERS frame with END_STREAM carrying ``grpc-status``); an answer that
is not gRPC at all gets a status from its HTTP status
(``doc/http-grpc-status-mapping.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .metadata import Metadata, decode_metadata, unquote_message
from .status import StatusCode, parse_status, status_from_http

__all__ = ["Status", "final_status", "header_value", "is_grpc_content_type", "opening_status"]

_GRPC = "application/grpc"


class Status:
    """How a call ended.

    Attributes:
        code: The gRPC status.
        details: The server's ``grpc-message`` (percent-decoded), or what failed.
        pushback: ``grpc-retry-pushback-ms`` as received, if any (gRFC A6).
    """

    __slots__ = ("_fields", "_metadata", "code", "details", "pushback")

    def __init__(
        self,
        code: StatusCode,
        details: str,
        fields: Sequence[tuple[str, str]] = (),
        pushback: str | None = None,
        *,
        metadata: Metadata | None = None,
    ) -> None:
        self.code = code
        self.details = details
        self.pushback = pushback
        self._fields = fields
        self._metadata = metadata

    @property
    def trailing_metadata(self) -> Metadata:
        """The metadata of the trailers (or of a Trailers-Only response), decoded once asked."""
        if self._metadata is None:
            self._metadata = decode_metadata(self._fields)
        return self._metadata

    def __repr__(self) -> str:
        return f"Status({self.code.name}, {self.details!r})"


def header_value(fields: Sequence[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name`` (lower case) among ``fields``."""
    for key, value in fields:
        if key == name:
            return value
    return None


def final_status(fields: Sequence[tuple[str, str]]) -> Status:
    """The status a block of trailers (or a Trailers-Only response) carries."""
    code: str | None = None
    message: str | None = None
    pushback: str | None = None
    for key, value in fields:
        if key == "grpc-status":
            code = value
        elif key == "grpc-message":
            message = value
        elif key == "grpc-retry-pushback-ms":
            pushback = value
    if code is None:
        # PROTOCOL-HTTP2.md: Status is mandatory in the trailers.
        return Status(StatusCode.UNKNOWN, "the server ended the call without grpc-status", fields)
    details = unquote_message(message) if message else ""
    return Status(parse_status(code), details, fields, pushback)


def is_grpc_content_type(value: str) -> bool:
    """``application/grpc``, alone or with a subtype (``+proto``) or parameters."""
    value = value.lower()
    return value == _GRPC or (value.startswith(_GRPC) and value[len(_GRPC)] in "+;")


def opening_status(http_status: int, fields: Sequence[tuple[str, str]]) -> Status | None:
    """None when the response headers open a gRPC response; else how the call ended.

    A Trailers-Only response carries its status in its only header block; an
    answer that is not gRPC (a proxy's 503, an HTML error page) is mapped
    from its HTTP status (http-grpc-status-mapping.md).
    """
    if header_value(fields, "grpc-status") is not None:
        return final_status(fields)  # Trailers-Only
    if http_status != 200:
        return Status(
            status_from_http(http_status),
            f"the server answered HTTP {http_status} without grpc-status",
        )
    content_type = header_value(fields, "content-type")
    if content_type is None or not is_grpc_content_type(content_type):
        return Status(
            StatusCode.UNKNOWN,
            f"the server answered with content-type {content_type!r}, not application/grpc",
        )
    return None
