"""The pure wire modules of h2pool's gRPC client: statuses, errors, metadata, compression, framing.

grpcio is installed for the peer tests; its ``grpc.StatusCode``,
``grpc.Compression`` and ``grpc.aio.Metadata`` are the references checked here.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import pickle
import zlib
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import grpc
import pytest
from grpc.aio import Metadata as GrpcMetadata
from h2.errors import ErrorCodes
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._rpc.compression import ACCEPT_ENCODING, Compression, codec_for, codec_named
from h2pool._rpc.errors import EOF, EOFType, RpcError
from h2pool._rpc.framing import MessageDecoder, encode_message
from h2pool._rpc.metadata import (
    Metadata,
    decode_metadata,
    encode_metadata,
    encode_timeout,
    parse_timeout,
    quote_message,
    unquote_message,
)
from h2pool._rpc.status import (
    StatusCode,
    parse_status,
    status_from_error,
    status_from_http,
    status_from_reset,
)

GZIP = codec_for(Compression.Gzip)
DEFLATE = codec_for(Compression.Deflate)


# status.py


def test_status_codes_are_grpcs() -> None:
    assert [code.name for code in StatusCode] == [code.name for code in grpc.StatusCode]
    for theirs in grpc.StatusCode:
        assert StatusCode[theirs.name].value == theirs.value[0]
        assert StatusCode.coerce(theirs) is StatusCode[theirs.name]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (StatusCode.ABORTED, StatusCode.ABORTED),
        (14, StatusCode.UNAVAILABLE),
        (0, StatusCode.OK),
        ("UNAVAILABLE", StatusCode.UNAVAILABLE),
        ("unavailable", StatusCode.UNAVAILABLE),
        ("Deadline_Exceeded", StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_coerce(value: object, expected: StatusCode) -> None:
    assert StatusCode.coerce(value) is expected


@pytest.mark.parametrize("value", [17, -1, "NOPE", "", True, None, 1.0, (14, "x"), b"OK"])
def test_coerce_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="not a gRPC status code"):
        StatusCode.coerce(value)


def test_parse_status() -> None:
    for code in StatusCode:
        assert parse_status(str(code.value)) is code
    assert parse_status(None) is StatusCode.UNKNOWN
    assert parse_status("") is StatusCode.UNKNOWN
    assert parse_status("17") is StatusCode.UNKNOWN
    assert parse_status("-1") is StatusCode.UNKNOWN
    assert parse_status("abc") is StatusCode.UNKNOWN
    assert parse_status("1.0") is StatusCode.UNKNOWN
    assert parse_status("\u0661") is StatusCode.UNKNOWN  # an Arabic-Indic digit one
    assert parse_status("014") is StatusCode.UNAVAILABLE
    assert parse_status(" 5 ") is StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, StatusCode.INTERNAL),
        (401, StatusCode.UNAUTHENTICATED),
        (403, StatusCode.PERMISSION_DENIED),
        (404, StatusCode.UNIMPLEMENTED),
        (429, StatusCode.UNAVAILABLE),
        (502, StatusCode.UNAVAILABLE),
        (503, StatusCode.UNAVAILABLE),
        (504, StatusCode.UNAVAILABLE),
        (200, StatusCode.UNKNOWN),
        (500, StatusCode.UNKNOWN),
        (302, StatusCode.UNKNOWN),
    ],
)
def test_status_from_http(status: int, expected: StatusCode) -> None:
    assert status_from_http(status) is expected


RESET_STATUSES = {
    ErrorCodes.NO_ERROR: StatusCode.INTERNAL,
    ErrorCodes.PROTOCOL_ERROR: StatusCode.INTERNAL,
    ErrorCodes.INTERNAL_ERROR: StatusCode.INTERNAL,
    ErrorCodes.FLOW_CONTROL_ERROR: StatusCode.INTERNAL,
    ErrorCodes.SETTINGS_TIMEOUT: StatusCode.INTERNAL,
    ErrorCodes.STREAM_CLOSED: StatusCode.INTERNAL,
    ErrorCodes.FRAME_SIZE_ERROR: StatusCode.INTERNAL,
    ErrorCodes.REFUSED_STREAM: StatusCode.UNAVAILABLE,
    ErrorCodes.CANCEL: StatusCode.CANCELLED,
    ErrorCodes.COMPRESSION_ERROR: StatusCode.INTERNAL,
    ErrorCodes.CONNECT_ERROR: StatusCode.INTERNAL,
    ErrorCodes.ENHANCE_YOUR_CALM: StatusCode.RESOURCE_EXHAUSTED,
    ErrorCodes.INADEQUATE_SECURITY: StatusCode.PERMISSION_DENIED,
    ErrorCodes.HTTP_1_1_REQUIRED: StatusCode.INTERNAL,
}


@pytest.mark.parametrize("code", list(ErrorCodes), ids=lambda code: code.name)
def test_status_from_reset(code: ErrorCodes) -> None:
    assert status_from_reset(code) is RESET_STATUSES[code]
    assert status_from_reset(int(code)) is RESET_STATUSES[code]


def test_status_from_an_unknown_reset_code() -> None:
    assert status_from_reset(0xFF) is StatusCode.INTERNAL


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (h2pool.StreamReset("r", error_code=ErrorCodes.CANCEL), StatusCode.CANCELLED),
        (
            h2pool.StreamReset("r", error_code=ErrorCodes.ENHANCE_YOUR_CALM),
            StatusCode.RESOURCE_EXHAUSTED,
        ),
        (h2pool.StreamReset("r", error_code=ErrorCodes.INTERNAL_ERROR), StatusCode.INTERNAL),
        (h2pool.StreamReset("r"), StatusCode.UNKNOWN),
        (h2pool.StreamRefused("r", error_code=ErrorCodes.REFUSED_STREAM), StatusCode.UNAVAILABLE),
        # Refused by a GOAWAY(NO_ERROR) above the stream: never processed, not INTERNAL.
        (h2pool.StreamRefused("g", error_code=ErrorCodes.NO_ERROR), StatusCode.UNAVAILABLE),
        (h2pool.StreamRefused("g"), StatusCode.UNAVAILABLE),
        (h2pool.ConnectionLost("x"), StatusCode.UNAVAILABLE),
        (h2pool.ConnectionDead("x"), StatusCode.UNAVAILABLE),
        (h2pool.ConnectionClosed("x"), StatusCode.UNAVAILABLE),
        (h2pool.ConnectError("x"), StatusCode.UNAVAILABLE),
        (h2pool.CertificateVerifyError("x"), StatusCode.UNAVAILABLE),
        (h2pool.DrainInterrupted("x"), StatusCode.UNAVAILABLE),
        (h2pool.PoolOverloaded("x"), StatusCode.UNAVAILABLE),
        (h2pool.PoolTimeout("x"), StatusCode.UNAVAILABLE),
        (h2pool.ConnectTimeout("x"), StatusCode.UNAVAILABLE),
        (h2pool.PoolClosed("x"), StatusCode.CANCELLED),
        (h2pool.ReadTimeout("x"), StatusCode.DEADLINE_EXCEEDED),
        (h2pool.WriteTimeout("x"), StatusCode.DEADLINE_EXCEEDED),
        (h2pool.RequestTimeout("x"), StatusCode.DEADLINE_EXCEEDED),
        (h2pool.H2ProtocolError("x", error_code=1), StatusCode.INTERNAL),
        (h2pool.StreamClosed("x"), StatusCode.UNKNOWN),
        (h2pool.ResponseNotRead("x"), StatusCode.UNKNOWN),
        (h2pool.H2PoolError("x"), StatusCode.UNKNOWN),
    ],
    ids=lambda value: type(value).__name__,
)
def test_status_from_error(error: h2pool.H2PoolError, expected: StatusCode) -> None:
    assert status_from_error(error) is expected


# errors.py


def test_rpc_error_message() -> None:
    error = RpcError(
        StatusCode.UNAVAILABLE,
        "connection lost",
        method="/pkg.Svc/Method",
        endpoint="127.0.0.1:50051",
    )
    assert str(error) == (
        "/pkg.Svc/Method to 127.0.0.1:50051: UNAVAILABLE: connection lost (may have been processed)"
    )
    assert isinstance(error, h2pool.H2PoolError)
    assert not error.never_processed
    refused = RpcError(StatusCode.UNAVAILABLE, "GOAWAY", method="/a/b", never_processed=True)
    assert str(refused) == "/a/b: UNAVAILABLE: GOAWAY (never processed)"
    assert refused.never_processed
    assert str(RpcError(StatusCode.NOT_FOUND, "no such user", endpoint="h:1")) == (
        "h:1: NOT_FOUND: no such user"
    )
    assert str(RpcError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")) == (
        "DEADLINE_EXCEEDED: Deadline Exceeded (may have been processed)"
    )


def test_rpc_error_accessors() -> None:
    initial = Metadata(("a", "1"))
    trailing = Metadata(("grpc-status-details-bin", b"\x01"))
    error = RpcError(
        StatusCode.INTERNAL,
        "boom",
        method="/a/b",
        endpoint="h:1",
        initial_metadata=initial,
        trailing_metadata=trailing,
        debug="stream 3 reset by the peer (INTERNAL_ERROR)",
    )
    assert error.code() is StatusCode.INTERNAL
    assert error.details() == "boom"
    assert error.initial_metadata() is initial
    assert error.trailing_metadata() is trailing
    assert error.method == "/a/b"
    assert error.endpoint == "h:1"
    debug = error.debug_error_string()
    assert "grpc_status:13" in debug
    assert "'boom'" in debug
    assert "'h:1'" in debug
    assert debug.endswith("stream 3 reset by the peer (INTERNAL_ERROR)")
    bare = RpcError(StatusCode.CANCELLED, "Locally cancelled")
    assert bare.initial_metadata() == Metadata()
    assert bare.trailing_metadata() == Metadata()
    assert (
        bare.debug_error_string() == "CANCELLED: {grpc_status:1, grpc_message:'Locally cancelled'}"
    )


def test_rpc_error_copies_and_pickles() -> None:
    error = RpcError(
        StatusCode.UNAVAILABLE,
        "lost",
        method="/a/b",
        trailing_metadata=Metadata(("k", "v")),
        never_processed=True,
    )
    for other in (error.copy(), copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert type(other) is RpcError
        assert str(other) == str(error)
        assert other.code() is StatusCode.UNAVAILABLE
        assert other.details() == "lost"
        assert other.method == "/a/b"
        assert other.trailing_metadata() == Metadata(("k", "v"))
        assert other.never_processed
    contextual = error.in_context("while retrying")
    assert contextual.code() is StatusCode.UNAVAILABLE
    assert str(contextual).startswith("while retrying: /a/b: UNAVAILABLE: lost")


def test_eof() -> None:
    assert repr(EOF) == "h2pool.rpc.EOF"
    assert EOFType() is EOF
    assert pickle.loads(pickle.dumps(EOF)) is EOF
    assert copy.copy(EOF) is EOF
    assert EOF != b""


# metadata.py: the Metadata collection against grpc.aio.Metadata

KEYS = st.sampled_from(["a", "b", "c-bin", "d"])
VALUES = st.sampled_from(["1", "2", "x", b"\x00"])
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "add",
                "getitem",
                "setitem",
                "delitem",
                "delete_all",
                "get",
                "get_all",
                "contains",
                "set_all",
            ]
        ),
        KEYS,
        VALUES,
    ),
    max_size=30,
)


def apply(metadata: Any, operation: str, key: str, value: str | bytes) -> object:
    """Run one operation; its result, or the type of the exception it raised."""
    actions: dict[str, Callable[[], object]] = {
        "add": lambda: metadata.add(key, value),
        "getitem": lambda: metadata[key],
        "setitem": lambda: metadata.__setitem__(key, value),
        "delitem": lambda: metadata.__delitem__(key),
        "delete_all": lambda: metadata.delete_all(key),
        "get": lambda: metadata.get(key, "default"),
        "get_all": lambda: list(metadata.get_all(key)),
        "contains": lambda: key in metadata,
        "set_all": lambda: metadata.set_all(key, [value, value]),
    }
    try:
        return actions[operation]()
    except Exception as exc:
        return type(exc)


def state(metadata: Any) -> object:
    return (
        tuple(metadata),
        len(metadata),
        bool(metadata),
        list(metadata.keys()),
        [list(values) for values in metadata.values()],
        [(key, list(values)) for key, values in metadata.items()],
        repr(metadata),
    )


@given(st.lists(st.tuples(KEYS, VALUES), max_size=6), OPERATIONS)
def test_metadata_behaves_like_grpc_aio(
    initial: list[tuple[str, str | bytes]],
    operations: list[tuple[str, str, str | bytes]],
) -> None:
    ours, theirs = Metadata(*initial), GrpcMetadata(*initial)
    assert state(ours) == state(theirs)
    assert state(Metadata.from_tuple(tuple(initial))) == state(GrpcMetadata.from_tuple(initial))
    for operation, key, value in operations:
        assert apply(ours, operation, key, value) == apply(theirs, operation, key, value)
        assert state(ours) == state(theirs)
        assert ours == tuple(theirs)
    assert (ours == Metadata(*theirs)) is True
    extra = (("e", "5"),)
    assert state(ours + extra) == state(theirs + extra)
    assert state(ours + Metadata(("e", "5"))) == state(theirs + GrpcMetadata(("e", "5")))


def test_metadata_equality() -> None:
    metadata = Metadata(("a", "1"), ("a", "2"), ("b", "3"))
    assert metadata == (("a", "1"), ("a", "2"), ("b", "3"))
    assert metadata != (("a", "1"),)
    assert metadata != [("a", "1"), ("a", "2"), ("b", "3")]  # as grpc.aio: tuples only
    assert metadata == Metadata(("a", "1"), ("a", "2"), ("b", "3"))
    assert metadata != Metadata(("a", "2"), ("a", "1"), ("b", "3"))
    assert Metadata.from_tuple(None) == Metadata()
    assert 1 not in metadata
    with pytest.raises(TypeError):
        hash(metadata)


def test_get_all_returns_a_copy() -> None:
    metadata = Metadata(("a", "1"))
    metadata.get_all("a").append("2")
    assert metadata.get_all("a") == ["1"]


# metadata.py: to and from header fields


def test_encode_no_metadata() -> None:
    assert encode_metadata(None) == []
    assert encode_metadata(()) == []
    assert encode_metadata([]) == []
    assert encode_metadata(Metadata()) == []


def test_encode_metadata() -> None:
    metadata = Metadata(("x-id", "42"), ("trace-bin", b"\x00\x01\xfe"), ("x-id", "43"))
    assert encode_metadata(metadata) == [
        (b"x-id", b"42"),
        (b"x-id", b"43"),
        (b"trace-bin", b"AAH+"),
    ]
    # Unpadded base64 (PROTOCOL-HTTP2.md), str values of -bin keys as UTF-8.
    assert encode_metadata([("a-bin", b"\x01"), ("b-bin", "é"), ("c.d_e", " x y ".strip())]) == [
        (b"a-bin", b"AQ"),
        (b"b-bin", b"w6k"),
        (b"c.d_e", b"x y"),
    ]
    assert encode_metadata([("empty", ""), ("e-bin", b"")]) == [(b"empty", b""), (b"e-bin", b"")]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "metadata key is empty"),
        ("X-Id", "uppercase"),
        ("x id", "outside 0-9 a-z _ - ."),
        ("x/id", "outside 0-9 a-z _ - ."),
        ("clé", "outside 0-9 a-z _ - ."),
        (":authority", "outside 0-9 a-z _ - ."),
        ("grpc-timeout", "reserved"),
        ("grpc-status-details-bin", "reserved"),
        ("content-type", "reserved"),
        ("te", "reserved"),
        ("host", "reserved"),
        ("connection", "reserved"),
        ("keep-alive", "reserved"),
        ("proxy-connection", "reserved"),
        ("transfer-encoding", "reserved"),
        ("upgrade", "reserved"),
        ("user-agent", "grpc.primary_user_agent"),
    ],
)
def test_encode_refuses_keys(key: str, message: str) -> None:
    with pytest.raises(h2pool.LocalProtocolError, match=message) as info:
        encode_metadata([("ok", "1"), (key, "v")])
    assert "\n" not in str(info.value)
    if key:
        assert repr(key) in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a\nb", "printable ASCII"),
        ("a\tb", "printable ASCII"),
        ("\x7f", "printable ASCII"),
        ("é", "printable ASCII"),
        (" a", "leading or trailing"),
        ("a ", "leading or trailing"),
    ],
)
def test_encode_refuses_values(value: str, message: str) -> None:
    with pytest.raises(h2pool.LocalProtocolError, match=message) as info:
        encode_metadata([("x-key", value)])
    assert "'x-key'" in str(info.value)


@pytest.mark.parametrize(
    "pair", [("x-key", b"bytes"), ("x-key", 1), ("x-bin", 1), ("x-bin", None), (b"x", "v")]
)
def test_encode_refuses_types(pair: tuple[Any, Any]) -> None:
    with pytest.raises(TypeError, match="x"):
        encode_metadata([pair])


def test_decode_metadata() -> None:
    fields = [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-encoding", "gzip"),
        ("grpc-accept-encoding", "gzip"),
        ("te", "trailers"),
        ("x-id", "1"),
        ("grpc-status", "5"),
        ("grpc-message", "no"),
        ("grpc-status-details-bin", "CAUSAm5v"),
        ("x-id", "2"),
        ("padded-bin", "AQ=="),
        ("unpadded-bin", "AQ"),
        ("broken-bin", "not base64!"),
        ("grpc-retry-pushback-ms", "10"),
    ]
    assert decode_metadata(fields) == (
        ("x-id", "1"),
        ("x-id", "2"),
        ("grpc-status-details-bin", b"\x08\x05\x12\x02no"),
        ("padded-bin", b"\x01"),
        ("unpadded-bin", b"\x01"),
        ("broken-bin", b"not base64!"),
        ("grpc-retry-pushback-ms", "10"),
    )
    assert decode_metadata([]) == Metadata()


BIN_KEYS = st.from_regex(r"[a-z0-9_.\-]{1,10}-bin", fullmatch=True)
ASCII_KEYS = st.from_regex(r"[a-z0-9_.\-]{1,12}", fullmatch=True).filter(
    lambda key: (
        not key.startswith("grpc-")
        and not key.endswith("-bin")
        and key not in {"te", "host", "connection", "keep-alive", "upgrade", "user-agent"}
        and key not in {"content-type", "proxy-connection", "transfer-encoding"}
    )
)
ASCII_VALUES = st.from_regex(r"([!-~]([ -~]*[!-~])?)?", fullmatch=True)
PAIRS = st.lists(
    st.one_of(st.tuples(ASCII_KEYS, ASCII_VALUES), st.tuples(BIN_KEYS, st.binary(max_size=40))),
    max_size=8,
)


@given(PAIRS)
def test_metadata_round_trip(pairs: list[tuple[str, str | bytes]]) -> None:
    fields = encode_metadata(pairs)
    for name, value in fields:
        if name.endswith(b"-bin"):
            assert not value.endswith(b"=")
    received = [(name.decode(), value.decode()) for name, value in fields]
    assert decode_metadata(received) == Metadata(*pairs)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, b"1n"),
        (-5, b"1n"),
        (1e-9, b"1n"),
        (4e-10, b"1n"),
        (1.5e-9, b"2n"),
        (0.05, b"50000000n"),
        (0.1, b"100000u"),
        (1, b"1000000u"),
        (99.999999, b"99999999u"),
        (100, b"100000m"),
        (100_000, b"100000S"),
        (86400 * 365 * 1000, b"8760000H"),
        (3600 * 99_999_999, b"99999999H"),
        (1e300, b"99999999H"),
        (float("inf"), b"99999999H"),
    ],
)
def test_encode_timeout(seconds: float, expected: bytes) -> None:
    assert encode_timeout(seconds) == expected


def test_encode_timeout_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        encode_timeout(float("nan"))


UNIT_NANOSECONDS = {"n": 1, "u": 10**3, "m": 10**6, "S": 10**9, "M": 60 * 10**9, "H": 3600 * 10**9}


@given(st.floats(min_value=1e-12, max_value=3600 * 99_999_998, allow_nan=False))
def test_encode_timeout_never_announces_less_time(seconds: float) -> None:
    text = encode_timeout(seconds).decode()
    digits, unit = text[:-1], text[-1]
    assert 1 <= len(digits) <= 8
    assert digits.isdigit()
    announced = int(digits) * UNIT_NANOSECONDS[unit]
    # Never less than remains, to a float's precision; the rest of the
    # checks are on the product as computed (the float nearest the exact one).
    assert announced >= Fraction(seconds) * 10**9 * (1 - Fraction(1, 2**52))
    exact = Fraction(seconds * 1e9)
    assert announced >= exact
    # The finest unit that fits: one unit less would be too little time,
    # and no finer unit holds the time in eight digits.
    assert (int(digits) - 1) * UNIT_NANOSECONDS[unit] < exact
    units = list(UNIT_NANOSECONDS)
    if unit != "n":
        finer = UNIT_NANOSECONDS[units[units.index(unit) - 1]]
        assert -(-exact // finer) > 99_999_999
    parsed = parse_timeout(text)
    assert parsed is not None
    assert parsed == pytest.approx(announced / 10**9)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1n", 1e-9),
        ("250u", 250e-6),
        ("100m", 0.1),
        ("3S", 3.0),
        ("2M", 120.0),
        ("1H", 3600.0),
        ("99999999H", 99_999_999 * 3600.0),
        ("0S", 0.0),
    ],
)
def test_parse_timeout(value: str, expected: float) -> None:
    assert parse_timeout(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value", ["", "S", "1", "1s", "1h", "-1S", "+1S", "1.5S", "123456789S", " 1S", "1 S", "\u0661S"]
)
def test_parse_timeout_refuses(value: str) -> None:
    assert parse_timeout(value) is None


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("ok", "ok"),
        ("spaces and ~!#$&'()*+,/:;=?@[]^_`{|} stay", "spaces and ~!#$&'()*+,/:;=?@[]^_`{|} stay"),
        ("100%", "100%25"),
        ("é", "%C3%A9"),
        ("a\nb\tc", "a%0Ab%09c"),
        ("\x7f", "%7F"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
    ],
)
def test_quote_message(text: str, quoted: str) -> None:
    assert quote_message(text) == quoted
    assert unquote_message(quoted) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("%", "%"),
        ("50%", "50%"),
        ("%zz%4", "%zz%4"),
        ("%C3", "\ufffd"),
        ("%ff%41", "\ufffdA"),
        ("a+b", "a+b"),
        ("%c3%a9", "é"),
    ],
)
def test_unquote_message_is_lenient(value: str, text: str) -> None:
    assert unquote_message(value) == text


@given(st.text())
def test_quote_round_trip(text: str) -> None:
    quoted = quote_message(text)
    assert all(0x20 <= ord(char) <= 0x7E for char in quoted)
    assert unquote_message(quoted) == text


# compression.py


def test_compression_values_are_grpcs() -> None:
    for theirs in grpc.Compression:
        assert Compression(theirs) is Compression[theirs.name]
        assert Compression(theirs) == theirs


def test_codecs() -> None:
    assert codec_for(None) is None
    assert codec_for(0) is None
    assert codec_for(Compression.NoCompression) is None
    assert GZIP is not None
    assert DEFLATE is not None
    assert codec_for(2) is GZIP
    assert codec_for(grpc.Compression.Deflate) is DEFLATE
    assert GZIP.name == b"gzip"
    assert DEFLATE.name == b"deflate"
    with pytest.raises(ValueError, match="3"):
        codec_for(3)
    data = b"hello " * 100
    # gzip is the gzip format, deflate the zlib format, as grpc sends them.
    assert gzip.decompress(GZIP.compress(data)) == data
    assert zlib.decompress(DEFLATE.compress(data)) == data
    assert GZIP.decompress(gzip.compress(data), None) == data
    assert DEFLATE.decompress(zlib.compress(data), len(data)) == data
    assert set(ACCEPT_ENCODING.split(b",")) == {b"identity", b"gzip", b"deflate"}


def test_codec_named() -> None:
    assert codec_named("identity") is None
    assert codec_named("gzip") is GZIP
    assert codec_named("deflate") is DEFLATE
    assert codec_named("GZip") is GZIP
    with pytest.raises(RpcError, match="compression 'br' not supported") as info:
        codec_named("br")
    assert info.value.code() is StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_decompress_is_bounded(name: str) -> None:
    codec = codec_named(name)
    assert codec is not None
    bomb = codec.compress(bytes(50 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(RpcError, match="larger than max") as info:
        codec.decompress(bomb, 1024)
    assert info.value.code() is StatusCode.RESOURCE_EXHAUSTED
    assert len(codec.decompress(codec.compress(bytes(1024)), 1024)) == 1024


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_decompress_refuses_bad_data(name: str) -> None:
    codec = codec_named(name)
    assert codec is not None
    good = codec.compress(b"some message")
    for bad in (b"garbage", good[:-3], good + b"more", b""):
        with pytest.raises(RpcError, match="decompress") as info:
            codec.decompress(bad, None)
        assert info.value.code() is StatusCode.INTERNAL


# framing.py


def test_encode_message() -> None:
    assert encode_message(b"", None, None) == b"\x00\x00\x00\x00\x00"
    assert encode_message(b"abc", None, 3) == b"\x00\x00\x00\x00\x03abc"
    framed = encode_message(b"a" * 1000, GZIP, None)
    assert framed[0] == 1
    assert int.from_bytes(framed[1:5], "big") == len(framed) - 5
    assert gzip.decompress(framed[5:]) == b"a" * 1000


def test_encode_message_refuses_large_messages() -> None:
    with pytest.raises(RpcError, match=r"Sent message larger than max \(4 vs\. 3\)") as info:
        encode_message(b"abcd", None, 3)
    assert info.value.code() is StatusCode.RESOURCE_EXHAUSTED
    # The uncompressed size counts, as in grpc.
    with pytest.raises(RpcError, match=r"\(1000 vs\. 999\)"):
        encode_message(bytes(1000), GZIP, 999)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.lists(st.integers(min_value=0), max_size=20),
    st.sampled_from([None, "gzip", "deflate"]),
)
def test_framing_round_trip_over_any_chunking(
    messages: list[bytes], cuts: list[int], encoding: str | None
) -> None:
    codec = None if encoding is None else codec_named(encoding)
    stream = b"".join(encode_message(message, codec, None) for message in messages)
    decoder = MessageDecoder(codec, 300)
    received = []
    for chunk in chunked(stream, cuts):
        received += decoder.feed(chunk)
        assert decoder.buffered < 5 + 400
    decoder.finish()
    assert received == messages
    assert decoder.buffered == 0
    assert all(type(message) is bytes for message in received)


def test_decoder_takes_uncompressed_messages_with_a_codec() -> None:
    # grpc-encoding names the codec; each message says whether it used it.
    decoder = MessageDecoder(GZIP, None)
    stream = encode_message(b"plain", None, None) + encode_message(b"packed", GZIP, None)
    assert decoder.feed(stream) == [b"plain", b"packed"]


def test_decoder_refuses_a_large_message_at_its_prefix() -> None:
    decoder = MessageDecoder(None, 10)
    assert decoder.feed(encode_message(bytes(10), None, None)) == [bytes(10)]
    with pytest.raises(RpcError, match=r"Received message larger than max \(11 vs\. 10\)") as info:
        decoder.feed(b"\x00\x00\x00\x00\x0b")
    assert info.value.code() is StatusCode.RESOURCE_EXHAUSTED
    split = MessageDecoder(None, 10)
    assert split.feed(b"\x00\x00\x00") == []
    with pytest.raises(RpcError, match="larger than max"):
        split.feed(b"\x10\x00")


def test_decoder_bounds_decompressed_messages() -> None:
    decoder = MessageDecoder(GZIP, 1000)
    with pytest.raises(RpcError, match="larger than max") as info:
        decoder.feed(encode_message(bytes(100_000), GZIP, None))
    assert info.value.code() is StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("codec", "data", "message"),
    [
        (None, b"\x01\x00\x00\x00\x00", "without grpc-encoding"),
        (GZIP, b"\x02\x00\x00\x00\x00", "Compressed-Flag 2"),
        (None, b"\xff\x00\x00\x00\x00", "Compressed-Flag 255"),
        (GZIP, b"\x01\x00\x00\x00\x03abc", "decompress"),
    ],
)
def test_decoder_refuses_bad_messages(codec: Any, data: bytes, message: str) -> None:
    with pytest.raises(RpcError, match=message) as info:
        MessageDecoder(codec, None).feed(data)
    assert info.value.code() is StatusCode.INTERNAL


def test_decoder_finish() -> None:
    decoder = MessageDecoder(None, None)
    decoder.finish()
    assert decoder.feed(b"\x00\x00\x00") == []
    assert decoder.buffered == 3
    with pytest.raises(RpcError, match="truncated message") as info:
        decoder.finish()
    assert info.value.code() is StatusCode.INTERNAL
    assert decoder.feed(b"\x00\x02a") == []
    with pytest.raises(RpcError, match="truncated message"):
        decoder.finish()
    assert decoder.feed(b"b") == [b"ab"]
    decoder.finish()


def test_decoder_many_tiny_chunks() -> None:
    # 100,000 one-byte chunks: linear time (a quadratic buffer would take minutes).
    message = bytes(range(256)) * 400
    stream = encode_message(message, None, None) * 2
    decoder = MessageDecoder(None, None)
    received = []
    for index in range(len(stream)):
        received += decoder.feed(stream[index : index + 1])
    assert received == [message, message]
    assert decoder.buffered == 0


def test_decoder_one_huge_message() -> None:
    size = 64 * 1024 * 1024
    chunk = bytes(64 * 1024)
    decoder = MessageDecoder(None, size)
    assert decoder.feed(b"\x00" + size.to_bytes(4, "big")) == []
    received = []
    for _ in range(size // len(chunk)):
        received += decoder.feed(chunk)
    assert len(received) == 1
    assert len(received[0]) == size
    assert decoder.buffered == 0
