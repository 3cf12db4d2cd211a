"""The one table from HTTP/2 errors and events to h2pool errors.

Every h2pool error the core raises for something the peer or the connection
did is built here, so the mapping (and its ``never_processed`` judgement) can
be read in one place:

=====================================  =======================================
HTTP/2 happening                       h2pool error
=====================================  =======================================
RST_STREAM REFUSED_STREAM from peer    StreamRefused (never processed, 8.7)
RST_STREAM other code from peer        StreamReset
h2 reset a stream (peer broke rules)   H2ProtocolError (stream)
malformed response (8.1.1)             H2ProtocolError (stream), we reset it
GOAWAY, stream above last_stream_id    StreamRefused (never processed, 6.8)
GOAWAY, connection lost mid-drain      DrainInterrupted (streams at or below)
stream we refused by our GOAWAY        StreamRefused
peer violated HTTP/2 (connection)      H2ProtocolError
PING unanswered                        ConnectionDead
transport closed                       ConnectionLost
=====================================  =======================================
"""

from __future__ import annotations

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from .._exceptions import (
    DrainInterrupted,
    H2PoolError,
    H2ProtocolError,
    StreamError,
    StreamRefused,
    StreamReset,
)

__all__ = [
    "drain_interrupted",
    "error_name",
    "malformed",
    "peer_reset",
    "refused_by_goaway",
    "violation",
]

# Reset codes whose stream error is not a plain StreamReset.
_RESET_ERRORS: dict[int, type[StreamError]] = {ErrorCodes.REFUSED_STREAM: StreamRefused}


def error_name(code: int) -> str:
    """The RFC 9113 section 7 name of an error code, or its hex value."""
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


def peer_reset(stream_id: int, code: int, *, by_peer: bool) -> H2PoolError:
    """The error of a stream reset by the peer (``by_peer``) or by h2 for the peer's fault."""
    if not by_peer:
        return H2ProtocolError(
            f"stream {stream_id}: peer broke HTTP/2 ({error_name(code)}); stream reset",
            stream_id=stream_id,
            error_code=code,
        )
    kind = _RESET_ERRORS.get(code, StreamReset)
    how = "refused" if kind is StreamRefused else "reset"
    return kind(
        f"stream {stream_id} {how} by the peer ({error_name(code)})",
        stream_id=stream_id,
        error_code=code,
    )


def malformed(stream_id: int, problem: str) -> H2ProtocolError:
    """A malformed message on one stream (RFC 9113 section 8.1.1): a stream error."""
    return H2ProtocolError(
        f"stream {stream_id}: malformed response from the peer: {problem}; stream reset",
        stream_id=stream_id,
        error_code=ErrorCodes.PROTOCOL_ERROR,
    )


def refused_by_goaway(stream_id: int, last_stream_id: int, code: int) -> StreamRefused:
    """A stream above a received GOAWAY's last_stream_id: never processed (section 6.8)."""
    return StreamRefused(
        f"stream {stream_id} not processed: GOAWAY last_stream_id={last_stream_id}",
        stream_id=stream_id,
        error_code=code,
    )


def drain_interrupted(error: H2PoolError, last_stream_id: int, stream_id: int) -> DrainInterrupted:
    """A stream the peer promised to finish (GOAWAY) when the connection ended first."""
    return DrainInterrupted(
        f"{error}; the peer had sent GOAWAY(last_stream_id={last_stream_id})"
        f" and did not finish stream {stream_id}",
        stream_id=stream_id,
    )


def violation(exc: H2Error) -> H2ProtocolError:
    """The peer broke HTTP/2 in a way that ends the connection (h2 raised)."""
    code = getattr(exc, "error_code", None) or ErrorCodes.PROTOCOL_ERROR
    return H2ProtocolError(f"peer violated HTTP/2: {exc}", error_code=code)
