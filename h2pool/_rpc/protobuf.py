"""The messages of the standard health service, ``grpc.health.v1``, without protobuf.

``HealthCheckRequest`` is ``string service = 1``; ``HealthCheckResponse`` is
``ServingStatus status = 1`` (grpc/grpc ``src/proto/grpc/health/v1/health.proto``).
Both are written and read in protobuf's wire format by hand: two fields do
not justify a dependency.
"""

from __future__ import annotations

import enum

from .errors import RpcError
from .status import StatusCode

__all__ = ["HealthStatus", "decode_health_response", "encode_health_request"]


class HealthStatus(enum.IntEnum):
    """``HealthCheckResponse.ServingStatus``."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3


# Wire types (protobuf encoding guide): what follows a field's key.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _START_GROUP, _END_GROUP, _FIXED32 = range(6)
_STATUS_KEY = 1 << 3 | _VARINT  # field 1, a varint
_SERVICE_KEY = 1 << 3 | _LENGTH_DELIMITED  # field 1, length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_health_request(service: str) -> bytes:
    """A ``HealthCheckRequest`` for ``service`` (``""``, the server as a whole, is ``b""``)."""
    if not service:
        return b""  # proto3 leaves out a field at its default
    name = service.encode()
    return bytes((_SERVICE_KEY,)) + _varint(len(name)) + name


def _malformed(what: str) -> RpcError:
    return RpcError(StatusCode.INTERNAL, f"Malformed HealthCheckResponse: {what}")


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """The varint at ``offset`` and the offset after it."""
    value = 0
    for shift in range(0, 70, 7):
        if offset >= len(data):
            raise _malformed("truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
    raise _malformed("varint longer than 10 bytes")


# Nesting of groups skipped at most (protobuf's own recursion limit is 100).
_MAX_DEPTH = 64


def _skip(data: bytes, offset: int, wire_type: int, field_number: int, depth: int = 0) -> int:
    """The offset after the value of an unknown field."""
    if wire_type == _VARINT:
        return _read_varint(data, offset)[1]
    if wire_type == _FIXED64:
        end = offset + 8
    elif wire_type == _FIXED32:
        end = offset + 4
    elif wire_type == _LENGTH_DELIMITED:
        length, offset = _read_varint(data, offset)
        end = offset + length
    elif wire_type == _START_GROUP:
        # A group runs to the END_GROUP of the same field, nested groups skipped.
        if depth >= _MAX_DEPTH:
            raise _malformed("groups nested too deep")
        while True:
            if offset >= len(data):
                raise _malformed("truncated group")
            key, offset = _read_varint(data, offset)
            if key & 7 == _END_GROUP:
                if key >> 3 != field_number:
                    raise _malformed("mismatched end of group")
                return offset
            offset = _skip(data, offset, key & 7, key >> 3, depth + 1)
    else:
        raise _malformed(f"invalid wire type {wire_type}")
    if end > len(data):
        raise _malformed("truncated field")
    return end


def decode_health_response(data: bytes) -> HealthStatus:
    """The status in a ``HealthCheckResponse``; UNKNOWN for a number it does not know.

    Raises:
        RpcError: INTERNAL when ``data`` is not a valid message.
    """
    status = 0
    offset = 0
    while offset < len(data):
        key, offset = _read_varint(data, offset)
        field_number, wire_type = key >> 3, key & 7
        if field_number == 0:
            raise _malformed("field number 0")
        if key == _STATUS_KEY:
            status, offset = _read_varint(data, offset)  # the last one wins, as protobuf's
        # Field 1 of another wire type is an unknown field, as protobuf (upb) reads it.
        elif wire_type == _END_GROUP:
            raise _malformed("end of group outside a group")
        else:
            offset = _skip(data, offset, wire_type, field_number)
    try:
        return HealthStatus(status)
    except ValueError:
        return HealthStatus.UNKNOWN
