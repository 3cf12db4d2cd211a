"""HPACK coders that answer a header list or block seen before from a cache.

A client repeats the same requests and a server the same responses: each
connection's encoder and decoder (given by :class:`~h2pool._core.h2compat.Connection`)
keep the blocks they made while their dynamic table stood still. That relies
on how hpack changes its table (``HeaderTable.add`` and the ``maxsize``
setter, checked in hpack 4.x, the versions h2 4.x requires); with another
hpack (``HPACK_CHECKED`` false), hpack's own coders are used.
"""

from __future__ import annotations

from typing import Any, cast

import hpack
from hpack import Decoder, Encoder, HeaderTuple
from hpack.table import HeaderTable

__all__ = [
    "CACHED_BLOCKS",
    "CACHED_BLOCK_BYTES",
    "HPACK_CHECKED",
    "CachingDecoder",
    "CachingEncoder",
]

_MAXSIZE = cast("property", HeaderTable.__dict__["maxsize"])
#: Whether the installed hpack is one whose table changes _CountingTable sees.
HPACK_CHECKED = hpack.__version__.split(".")[0] == "4"


class _CountingTable(HeaderTable):
    """An HPACK dynamic table that counts its changes.

    ``add`` and the ``maxsize`` setter are the only ways hpack changes a
    table (entries added or evicted, a size changed). While ``changes``
    stands, the table is what it was, so encoding the same header list (or
    decoding the same block) gives the same result as before.
    """

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize  # as hpack's getter (read for every block decoded)

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.changes += 1
        _MAXSIZE.fset(self, value)  # type: ignore[misc]


# Blocks kept per connection and direction; past this the cache starts over.
# Only small blocks are kept (requests and responses repeated by a client
# are), so a peer sending large distinct blocks costs at most 64 KiB here.
CACHED_BLOCKS = 64
CACHED_BLOCK_BYTES = 1024


class CachingEncoder(Encoder):
    """hpack's encoder, answering a header list it encoded before from a cache.

    HPACK's output for a header list depends only on the list (names,
    values, whether each may be indexed), the Huffman choice and the
    dynamic table, which changes only when a field is added or the size
    changes (RFC 7541 section 4). A block is kept only if encoding it left
    the table unchanged (every field already indexed, or sent without
    indexing) and is served only while the table has not changed since: the
    bytes are then exactly what encoding again would produce. A client
    repeating a request finds all its fields indexed from the second time on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table = self._table = table = _CountingTable()
        self._blocks: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
        self._valid_at = table.changes

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self._table
        if table.changes != self._valid_at or len(self._blocks) >= CACHED_BLOCKS:
            self._blocks.clear()
            self._valid_at = table.changes
        if isinstance(headers, dict) or not huffman or table.resized:
            return bytes(super().encode(headers, huffman))
        key = tuple(headers)
        block = self._blocks.get(key)
        # A HeaderTuple compares equal to a plain tuple but may forbid indexing:
        # only plain (name, value) pairs are cached.
        if block is not None or not all(type(field) is tuple for field in key):
            return block if block is not None else bytes(super().encode(key, huffman))
        block = bytes(super().encode(key, huffman))
        if table.changes == self._valid_at and len(block) <= CACHED_BLOCK_BYTES:
            self._blocks[key] = block
        return block


class CachingDecoder(Decoder):
    """hpack's decoder, answering a block it decoded before from a cache.

    Decoding a block that adds nothing to the dynamic table (only indexed
    fields and literals without indexing) leaves the table as it was, so the
    same bytes decode to the same fields while the table stands (see
    :class:`CachingEncoder`). The checks that depend on more than the bytes
    and the table run on every block: the header list limit (the cache
    starts over when it changes) and the table size allowed by our settings.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table = self._table = table = _CountingTable()
        self._blocks: dict[bytes, list[HeaderTuple]] = {}
        self._valid_at = table.changes
        self._limit = self.max_header_list_size

    def decode(self, data: bytes, raw: bool = False) -> Any:
        if not raw:
            return super().decode(data, raw)
        table = self._table
        if (
            table.changes != self._valid_at
            or self._limit != self.max_header_list_size
            or len(self._blocks) >= CACHED_BLOCKS
        ):
            self._blocks.clear()
            self._valid_at = table.changes
            self._limit = self.max_header_list_size
        key = bytes(data)
        fields = self._blocks.get(key)
        if fields is not None:
            self._assert_valid_table_size()
            return list(fields)
        decoded = list(super().decode(key, raw=True))
        if table.changes == self._valid_at and len(key) <= CACHED_BLOCK_BYTES:
            self._blocks[key] = decoded
            return list(decoded)
        return decoded
