"""The one exception tree of h2pool.

Everything the package raises derives from :class:`H2PoolError`. The families
follow what a caller must decide: whether the connection is gone, whether a
stream failed, whether time ran out, and, for retries, whether the server
provably never processed the request (``never_processed``).
"""

from __future__ import annotations

import copy
from typing import Self

from ._messages import Request

__all__ = [
    "CertificateVerifyError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "ConnectionDead",
    "ConnectionLost",
    "DrainInterrupted",
    "H2ConnectionError",
    "H2PoolError",
    "H2ProtocolError",
    "H2TimeoutError",
    "LocalProtocolError",
    "PoolClosed",
    "PoolOverloaded",
    "PoolTimeout",
    "ReadTimeout",
    "RequestTimeout",
    "ResponseNotRead",
    "StreamClosed",
    "StreamError",
    "StreamRefused",
    "StreamReset",
    "WriteTimeout",
]


class H2PoolError(Exception):
    """Root of every error raised by h2pool.

    Attributes:
        error_code: The HTTP/2 error code involved (RFC 9113 section 7), if any.
        stream_id: The stream the error concerns, or None for the connection.
        never_processed: True when the peer provably did not process the
            request (GOAWAY above last_stream_id, REFUSED_STREAM, or the
            request never left this process): retrying it is always safe.
        endpoint: The ``"host:port"`` of the endpoint whose connection the
            request failed on, if it got that far (set by the pool).
        response_headers: The regular fields of the response headers, when
            the request failed after they arrived (its deadline, or a reset,
            while the body was read); None otherwise (set by the pool).
        request: The request that failed (method, URL, headers): set on
            every error a pool request raises, whose message then names the
            request, the endpoint and whether the server may have processed
            it (see :meth:`for_request`); None for errors of a connection or
            the core.
    """

    never_processed: bool = False
    endpoint: str | None = None
    request: Request | None = None
    response_headers: list[tuple[str, str]] | None = None
    _reason: str | None = None  # the message before in_context() added a context

    def __init__(
        self,
        message: str,
        *,
        error_code: int | None = None,
        stream_id: int | None = None,
        never_processed: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.stream_id = stream_id
        if never_processed is not None:
            self.never_processed = never_processed

    def in_context(self, context: str) -> Self:
        """This error, every attribute kept, with ``context`` and what the peer did in its message.

        Raise the result ``from`` this error, so that both show: an error of
        the core (which knows streams, not requests) becomes one that names
        the request and the endpoint. Put in context again (by the pool, which
        knows the request's URL), the new context replaces the old one.
        """
        error = self.copy()
        error._reason = self.reason
        processed = "never processed" if self.never_processed else "may have been processed"
        error.args = (f"{context}: {self.reason} ({processed})",)
        return error

    def for_request(self, request: Request, endpoint: str | None) -> Self:
        """This error as the end of ``request``: every error a request raises is one.

        The result carries ``request`` and ``endpoint`` (where known), and
        its message names the method, the URL, the endpoint and whether the
        server may have processed the request. Raise it ``from`` this error.
        """
        where = f" to {endpoint}" if endpoint is not None else ""
        error = self.in_context(f"{request.method} {request.url}{where}")
        error.request = request
        error.endpoint = endpoint
        return error

    @property
    def reason(self) -> str:
        """What failed, without the request and the endpoint :meth:`in_context` put around it."""
        return self._reason or str(self)

    def copy(self) -> Self:
        """A new instance with the same message and attributes, to raise ``from`` this one.

        For an error kept and raised again in many tasks (an endpoint's last
        connection error): each gets its own traceback.
        """
        return copy.copy(self)


class H2ProtocolError(H2PoolError):
    """The peer broke the HTTP/2 protocol, or the caller asked for something it forbids."""


class LocalProtocolError(H2ProtocolError, ValueError):
    """The caller asked for something HTTP forbids (an invalid header, say); nothing was sent.

    Also a ``ValueError``: it is the caller's argument that is wrong.
    """

    never_processed = True


class H2ConnectionError(H2PoolError, ConnectionError):
    """The connection is unusable: it failed, was lost, or was closed."""


class ConnectError(H2ConnectionError):
    """Opening the connection failed (TCP, TLS or ALPN); nothing was sent."""

    never_processed = True


class CertificateVerifyError(ConnectError):
    """The peer's TLS certificate failed verification; the message says why.

    Not transient: the pool does not wait for it to pass.
    """


class ConnectionLost(H2ConnectionError):
    """The transport closed or failed while the operation was pending."""


class DrainInterrupted(ConnectionLost):
    """The peer sent GOAWAY, then the connection ended before this stream finished.

    The stream was at or below the GOAWAY's last_stream_id, so the peer may
    have processed it (RFC 9113 section 6.8): only idempotent requests may be
    sent again. Servers that mishandle their own drain cause this.
    """


class ConnectionDead(H2ConnectionError):
    """The functional-timeout health check declared the connection dead."""


class ConnectionClosed(H2ConnectionError):
    """The connection was closed locally, or is draining after a GOAWAY."""


class StreamError(H2PoolError):
    """A single stream failed; the connection itself may still be usable."""


class StreamReset(StreamError):
    """The peer reset the stream with RST_STREAM; ``error_code`` says why."""


class StreamRefused(StreamError):
    """The peer refused the stream before processing it (GOAWAY or REFUSED_STREAM).

    The request never reached the application on the other side, so it can be
    retried on another connection whatever its method.
    """

    never_processed = True


class StreamClosed(StreamError):
    """The stream is closed (or unknown) for the operation that was asked."""


class H2TimeoutError(H2PoolError, TimeoutError):
    """An h2pool operation ran out of time."""


class ConnectTimeout(H2TimeoutError):
    """Opening the connection took longer than allowed; nothing was sent."""

    never_processed = True


class RequestTimeout(H2TimeoutError):
    """A pool request's total timeout ran out (retries and backoff included)."""


class ReadTimeout(H2TimeoutError):
    """No response headers or body data arrived within the read timeout."""


class WriteTimeout(H2TimeoutError):
    """A chunk of the request body could not be sent within the write timeout."""


class PoolTimeout(H2TimeoutError):
    """No connection could take the request within the pool timeout; it was never sent."""

    never_processed = True


class PoolClosed(H2PoolError):
    """The pool is closed or closing: it takes no new requests."""

    never_processed = True


class PoolOverloaded(H2PoolError):
    """Too many requests are already waiting for a connection (``max_pending``)."""

    never_processed = True


class ResponseNotRead(H2PoolError):
    """``Response.content`` was used before the body was read (``await response.aread()``)."""
