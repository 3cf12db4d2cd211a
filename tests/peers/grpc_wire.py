"""A raw gRPC call over h2c with the ``h2`` package: what a server puts on the wire.

grpcio's own client hides the framing (Trailers-Only or not, which messages were compressed);
``raw_grpc_call`` shows it, to prove what the test servers send.
"""

from __future__ import annotations

import dataclasses
import gzip
import socket
import struct
import zlib
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events

from .process import HOST

_PREFIX = struct.Struct(">BI")  # compressed flag, message length


@dataclasses.dataclass(frozen=True)
class WireMessage:
    """One length-prefixed message as received.

    Attributes:
        compressed: The compressed-flag byte was 1.
        payload: The message, decompressed with the response's ``grpc-encoding``.
    """

    compressed: bool
    payload: bytes


@dataclasses.dataclass(frozen=True)
class WireResponse:
    """A gRPC response as it came over HTTP/2.

    Attributes:
        header_blocks: Every header block of the stream, in order, as ``(name, value)`` text.
        messages: The length-prefixed messages of the DATA frames.
        reset_code: The error code of a RST_STREAM from the server, or None.
    """

    header_blocks: tuple[tuple[tuple[str, str], ...], ...]
    messages: tuple[WireMessage, ...]
    reset_code: int | None

    @property
    def trailers_only(self) -> bool:
        """A single header block, carrying ``grpc-status``: gRPC's Trailers-Only response."""
        return len(self.header_blocks) == 1 and "grpc-status" in dict(self.header_blocks[0])

    @property
    def headers(self) -> dict[str, str]:
        """The first header block."""
        return dict(self.header_blocks[0]) if self.header_blocks else {}

    @property
    def trailers(self) -> dict[str, str]:
        """The last header block (the same as ``headers`` for Trailers-Only)."""
        return dict(self.header_blocks[-1]) if self.header_blocks else {}


def frame_message(payload: bytes, *, compress: bool = False) -> bytes:
    """Length-prefix ``payload`` as gRPC does; gzip it first if ``compress``."""
    data = gzip.compress(payload) if compress else payload
    return _PREFIX.pack(int(compress), len(data)) + data


def _decompress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    raise ValueError(f"unknown grpc-encoding {encoding!r}")


def _split_messages(data: bytes, encoding: str) -> tuple[WireMessage, ...]:
    messages = []
    while data:
        flag, length = _PREFIX.unpack_from(data)
        payload = data[_PREFIX.size : _PREFIX.size + length]
        data = data[_PREFIX.size + length :]
        messages.append(
            WireMessage(bool(flag), _decompress(encoding, payload) if flag else payload)
        )
    return tuple(messages)


def raw_grpc_call(
    port: int,
    method: str,
    messages: Sequence[bytes] = (b"",),
    *,
    metadata: Sequence[tuple[str, str]] = (),
    compress: bool = False,
    accept_encoding: str = "identity,deflate,gzip",
    timeout: float = 10.0,
) -> WireResponse:
    """Make one gRPC call on a new h2c connection and return what came back, frame by frame.

    Args:
        port: The server's port on 127.0.0.1.
        method: The path, e.g. ``"/test.Rpc/Unary"``.
        messages: Request messages, sent in one DATA frame each, then END_STREAM.
        metadata: Extra request headers (text values; base64 ``-bin`` values yourself).
        compress: Send the messages gzip-compressed (``grpc-encoding: gzip``).
        accept_encoding: The ``grpc-accept-encoding`` sent.
        timeout: Seconds for the whole call (a socket timeout).

    Returns:
        The header blocks, messages and any RST_STREAM code.
    """
    connection = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding="utf-8"))
    connection.initiate_connection()
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", f"{HOST}:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-accept-encoding", accept_encoding),
            *([("grpc-encoding", "gzip")] if compress else []),
            *metadata,
        ]
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(stream_id, headers)
        for message in messages:
            connection.send_data(stream_id, frame_message(message, compress=compress))
        connection.end_stream(stream_id)
        sock.sendall(connection.data_to_send())
        blocks: list[tuple[tuple[str, str], ...]] = []
        body = bytearray()
        reset_code: int | None = None
        ended = False
        while not ended:
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    blocks.append(tuple((str(k), str(v)) for k, v in event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    reset_code = int(event.error_code)
                    ended = True
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(connection.data_to_send())
    encoding = dict(blocks[0]).get("grpc-encoding", "identity") if blocks else "identity"
    return WireResponse(tuple(blocks), _split_messages(bytes(body), encoding), reset_code)
