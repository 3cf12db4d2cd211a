"""Length-Prefixed-Message framing (gRPC's ``doc/PROTOCOL-HTTP2.md``).

Each message is a 1-byte Compressed-Flag, a 4-byte big-endian length and the
message; messages split and join freely across DATA frames.
"""

from __future__ import annotations

import struct

from .compression import Codec
from .errors import RpcError
from .status import StatusCode

__all__ = ["MessageDecoder", "encode_message"]

_PREFIX = struct.Struct(">BI")
_PREFIX_SIZE = _PREFIX.size
_pack_prefix = _PREFIX.pack
_unpack_prefix = _PREFIX.unpack_from


def encode_message(message: bytes, codec: Codec | None, max_size: int | None) -> bytes:
    """``message`` framed, and compressed with ``codec`` if any.

    Raises:
        RpcError: RESOURCE_EXHAUSTED when ``message`` is longer than
            ``max_size`` (the uncompressed size counts, as in grpc).
    """
    if max_size is not None and len(message) > max_size:
        raise RpcError(
            StatusCode.RESOURCE_EXHAUSTED,
            f"Sent message larger than max ({len(message)} vs. {max_size})",
            never_processed=True,
        )
    if codec is None:
        return _pack_prefix(0, len(message)) + message
    body = codec.compress(message)
    return _pack_prefix(1, len(body)) + body


class MessageDecoder:
    """The messages of a stream of DATA, fed as it arrives (sans-I/O).

    Bytes are held only while a message is incomplete, in one bytearray that
    grows and shrinks at its front in amortised constant time, so many tiny
    chunks and one huge message both cost linear time.
    """

    __slots__ = ("_buffer", "_codec", "_max_size")

    def __init__(self, codec: Codec | None, max_size: int | None) -> None:
        """A decoder for a response.

        Args:
            codec: The response's ``grpc-encoding``, for messages flagged as
                compressed; None when it sent none (or ``identity``).
            max_size: The largest message taken, in bytes, or None for any.
        """
        self._codec = codec
        self._max_size = max_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data``, decompressed, in order.

        Raises:
            RpcError: RESOURCE_EXHAUSTED for a message longer than the
                maximum, as soon as its prefix arrives; INTERNAL for an invalid
                Compressed-Flag or a message that does not decompress.
        """
        buffer = self._buffer
        source: bytes | bytearray
        if buffer:
            buffer += data
            source = buffer
        else:
            source = data
        size = len(source)
        offset = 0
        messages = []
        while size - offset >= _PREFIX_SIZE:
            flag, length = _unpack_prefix(source, offset)
            if self._max_size is not None and length > self._max_size:
                raise RpcError(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"Received message larger than max ({length} vs. {self._max_size})",
                )
            start = offset + _PREFIX_SIZE
            end = start + length
            if end > size:
                break
            if source is buffer:
                with memoryview(buffer) as view:
                    message = bytes(view[start:end])
            else:
                message = data[start:end]
            if flag:
                message = self._decompress(flag, message)
            messages.append(message)
            offset = end
        if source is buffer:
            del buffer[:offset]
        elif offset < size:
            buffer += memoryview(source)[offset:]
        return messages

    def _decompress(self, flag: int, message: bytes) -> bytes:
        if flag != 1:
            raise RpcError(StatusCode.INTERNAL, f"Invalid Compressed-Flag {flag} in a message")
        if self._codec is None:
            raise RpcError(StatusCode.INTERNAL, "Compressed message received without grpc-encoding")
        return self._codec.decompress(message, self._max_size)

    def finish(self) -> None:
        """Check that the stream ended between messages.

        Raises:
            RpcError: INTERNAL when a message is incomplete.
        """
        if self._buffer:
            raise RpcError(
                StatusCode.INTERNAL,
                f"Stream ended inside a message: truncated message ({len(self._buffer)} bytes)",
            )
