"""Message compression: the codecs of ``grpc-encoding`` (gRPC's ``doc/compression.md``)."""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

from .errors import RpcError
from .status import StatusCode

__all__ = ["ACCEPT_ENCODING", "Codec", "Compression", "codec_for", "codec_named"]


class Compression(enum.IntEnum):
    """A compression of messages; the values of ``grpc.Compression``, so either converts."""

    NoCompression = 0
    Deflate = 1
    Gzip = 2


@dataclass(frozen=True, slots=True)
class Codec:
    """One message encoding.

    Attributes:
        name: The ``grpc-encoding`` token, ``b"gzip"`` or ``b"deflate"``.
        wbits: zlib's window bits selecting the container: gzip (31) or, for
            ``deflate``, the zlib format (15), as gRPC's deflate is.
    """

    name: bytes
    wbits: int

    def compress(self, data: bytes) -> bytes:
        """``data`` compressed."""
        return zlib.compress(data, wbits=self.wbits)

    def decompress(self, data: bytes, max_size: int | None) -> bytes:
        """``data`` decompressed, never more than ``max_size`` bytes of it held.

        Raises:
            RpcError: RESOURCE_EXHAUSTED when the message is larger than
                ``max_size`` once decompressed; INTERNAL when ``data`` is not a
                complete stream of this encoding.
        """
        decoder = zlib.decompressobj(wbits=self.wbits)
        try:
            # max_length bounds the output: a small bomb stops at max_size + 1.
            message = decoder.decompress(data, 0 if max_size is None else max_size + 1)
        except zlib.error as exc:
            raise RpcError(
                StatusCode.INTERNAL, f"Failed to decompress a {self.name.decode()} message: {exc}"
            ) from exc
        if max_size is not None and len(message) > max_size:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"Received message larger than max once decompressed (over {max_size} bytes)",
            )
        if not decoder.eof or decoder.unused_data:
            raise RpcError(
                StatusCode.INTERNAL,
                f"Failed to decompress a {self.name.decode()} message: "
                + ("trailing data" if decoder.eof else "truncated data"),
            )
        return message


GZIP = Codec(b"gzip", 31)
DEFLATE = Codec(b"deflate", 15)
_BY_COMPRESSION = {Compression.Gzip: GZIP, Compression.Deflate: DEFLATE}
_BY_NAME = {"gzip": GZIP, "deflate": DEFLATE}

# Sent as grpc-accept-encoding: every encoding this client decodes, in grpc's order.
ACCEPT_ENCODING = b"identity,deflate,gzip"


def codec_for(compression: Compression | int | None) -> Codec | None:
    """The codec that sends with ``compression``; None for no compression.

    Raises:
        ValueError: ``compression`` is no :class:`Compression`.
    """
    if not compression:
        return None
    return _BY_COMPRESSION[Compression(compression)]


def codec_named(name: str) -> Codec | None:
    """The codec of a received ``grpc-encoding``; None for ``identity``.

    Raises:
        RpcError: UNIMPLEMENTED for an encoding this client does not have.
    """
    codec = _BY_NAME.get(name) or _BY_NAME.get(name.strip().lower())
    if codec is None and name.strip().lower() != "identity":
        raise RpcError(StatusCode.UNIMPLEMENTED, f"Message compression {name!r} not supported")
    return codec
