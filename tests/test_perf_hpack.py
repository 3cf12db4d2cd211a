"""The connection's HPACK caches give exactly what hpack alone gives.

``h2compat`` gives each connection an encoder and a decoder that answer a
header list (or block) seen before from a cache while their dynamic table
has not changed. Walked here against hpack's own encoder and decoder, step
by step, through random header lists, indexing choices and table size
changes.
"""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple, OversizedHeaderListError
from hypothesis import given, settings
from hypothesis import strategies as st

from h2pool._core.config import H2Config
from h2pool._core.h2compat import Connection
from h2pool._core.hpackcache import (
    CACHED_BLOCK_BYTES,
    CACHED_BLOCKS,
    CachingDecoder,
    CachingEncoder,
)

_NAMES = [b":method", b":path", b"x-a", b"x-b", b"cookie", b"date"]
_VALUES = [b"GET", b"/", b"/small", b"1", b"22", b"v" * 40, b"v" * 900]

_field = st.builds(
    lambda name, value, never: NeverIndexedHeaderTuple(name, value) if never else (name, value),
    st.sampled_from(_NAMES),
    st.sampled_from(_VALUES),
    st.booleans(),
)
# A step: encode a header list (often one seen before), or change the table size.
_step = st.one_of(
    st.lists(_field, min_size=1, max_size=5).map(tuple),
    st.sampled_from([0, 256, 1024, 4096]),
)


def _decoded(decoder: Decoder, block: bytes) -> object:
    """What ``decoder`` makes of ``block``: the header list, or the error it raised."""
    try:
        return decoder.decode(block, raw=True)
    except Exception as exc:
        return type(exc), str(exc)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(range(4)), min_size=1, max_size=40), st.lists(_step, max_size=8))
def test_caches_match_hpack(order: list[int], steps: list[object]) -> None:
    plain_encoder, cached_encoder = Encoder(), CachingEncoder()
    plain_decoder, cached_decoder = Decoder(), CachingDecoder()
    lists = [step for step in steps if isinstance(step, tuple)] or [((b":method", b"GET"),)]
    sizes = [step for step in steps if isinstance(step, int)]
    for index in order:
        # Repeat lists often (that is what the cache serves), resize now and then.
        if sizes and index == 3:
            size = sizes.pop()
            plain_encoder.header_table_size = cached_encoder.header_table_size = size
            continue
        headers = list(lists[index % len(lists)])
        block = plain_encoder.encode(headers)
        assert cached_encoder.encode(headers) == block
        # hpack 4.2's encoder can emit a block its own decoder refuses (table sizes
        # 256, 0, 256, 256 set in turn lose the last size update): the caches must
        # then fail exactly as hpack does, not differ.
        assert _decoded(cached_decoder, block) == _decoded(plain_decoder, block)
        tables = cached_decoder.header_table, plain_decoder.header_table
        assert tables[0].dynamic_entries == tables[1].dynamic_entries


def test_repeated_request_is_served_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder, decoder = CachingEncoder(), CachingDecoder()
    headers = [(b":method", b"GET"), (b":path", b"/small"), (b"x-a", b"1")]
    first = encoder.encode(headers)  # adds :path and x-a to the table
    second = encoder.encode(headers)  # all indexed now: kept
    assert decoder.decode(first, raw=True) == decoder.decode(second, raw=True)
    encoded: list[object] = []
    decoded: list[object] = []
    monkeypatch.setattr(Encoder, "encode", lambda *args: encoded.append(args))
    monkeypatch.setattr(Decoder, "decode", lambda *args, **kwargs: decoded.append(args))
    assert encoder.encode(headers) == second
    assert decoder.decode(second, raw=True) == headers
    assert encoded == decoded == []  # neither went to hpack again


def test_never_indexed_fields_are_not_confused_with_plain_ones() -> None:
    # Equal as tuples, different on the wire: the cache must tell them apart.
    encoder = CachingEncoder()
    secret = [NeverIndexedHeaderTuple(b"cookie", b"short")]
    plain = [(b"cookie", b"short")]
    never_indexed = encoder.encode(secret)
    assert encoder.encode(secret) == never_indexed  # the table did not change
    assert encoder.encode(plain) == Encoder().encode(plain) != never_indexed


def test_cached_block_still_checks_the_header_list_limit() -> None:
    encoder, decoder = Encoder(), CachingDecoder()
    headers = [(b"x-a", b"v" * 900)]
    decoder.decode(encoder.encode(headers), raw=True)  # added to the table
    block = encoder.encode(headers)  # indexed: decoding it changes nothing
    assert decoder.decode(block, raw=True) == headers  # cached...
    assert decoder.decode(block, raw=True) == headers  # ...and served
    decoder.max_header_list_size = 100
    with pytest.raises(OversizedHeaderListError):
        decoder.decode(block, raw=True)


def test_connection_uses_the_caching_coders() -> None:
    conn = Connection(client_side=True, config=H2Config(), concurrency=10, outbound_open=lambda: 0)
    assert isinstance(conn.encoder, CachingEncoder)
    assert isinstance(conn.decoder, CachingDecoder)
    assert conn.decoder.max_header_list_size == H2Config().max_header_list_size


def test_a_peer_sending_large_distinct_blocks_fills_no_cache() -> None:
    # Literals without indexing leave the table alone, so each block could be
    # kept: only small ones are, and at most CACHED_BLOCKS of them.
    encoder, decoder = Encoder(), CachingDecoder()
    for index in range(3 * CACHED_BLOCKS):
        field = NeverIndexedHeaderTuple(b"x-big", b"%d" % index + b"v" * 2000)
        block = encoder.encode([field])
        assert len(block) > CACHED_BLOCK_BYTES
        assert decoder.decode(block, raw=True) == [field]
        assert decoder._blocks == {}
    for index in range(3 * CACHED_BLOCKS):
        field = NeverIndexedHeaderTuple(b"x-small", b"%d" % index)
        assert decoder.decode(encoder.encode([field]), raw=True) == [field]
        assert len(decoder._blocks) <= CACHED_BLOCKS
