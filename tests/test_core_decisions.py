"""The core module's pure decisions, tested without sockets."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import h2pool
from h2pool._core.headers import decode_headers, encode_headers, request_problem
from h2pool._core.health import HealthAction, check_health
from h2pool._core.priority import parse_priority_update

times = st.floats(min_value=0, max_value=1e6, allow_nan=False)
spans = st.floats(min_value=0.01, max_value=100, allow_nan=False)


class TestHealth:
    def test_recent_frame_means_wait_until_silence_would_begin(self) -> None:
        assert check_health(10.0, 9.5, None, 1.0, 1.0) == (HealthAction.WAIT, 10.5)

    def test_silence_sends_one_ping_and_waits_a_timeout_for_it(self) -> None:
        assert check_health(10.0, 9.0, None, 1.0, 2.0) == (HealthAction.PING, 12.0)

    def test_unanswered_ping_and_no_frame_is_dead(self) -> None:
        assert check_health(12.0, 9.0, 11.0, 1.0, 1.0)[0] is HealthAction.DEAD

    def test_any_frame_after_the_ping_extends_the_deadline(self) -> None:
        assert check_health(12.0, 11.5, 11.0, 1.0, 1.0) == (HealthAction.WAIT, 12.5)

    def test_an_early_timer_tick_does_not_spin(self) -> None:
        # Fired a hair before the deadline: act now rather than re-arm for the same instant.
        assert check_health(10.9999995, 9.0, None, 2.0, 1.0)[0] is HealthAction.PING

    @given(now=times, since=spans, interval=spans, timeout=spans)
    def test_without_ping_it_pings_exactly_when_silent_long_enough(
        self, now: float, since: float, interval: float, timeout: float
    ) -> None:
        action, deadline = check_health(now, now - since, None, interval, timeout)
        if since >= interval:
            assert action is HealthAction.PING
            assert deadline == pytest.approx(now + timeout)
        elif since < interval - 0.01:
            assert action is HealthAction.WAIT
            assert deadline > now
            assert deadline == pytest.approx(now - since + interval)

    @given(now=times, ping_age=spans, frame_age=spans, interval=spans, timeout=spans)
    def test_with_ping_outstanding_it_never_pings_again(
        self, now: float, ping_age: float, frame_age: float, interval: float, timeout: float
    ) -> None:
        action, deadline = check_health(now, now - frame_age, now - ping_age, interval, timeout)
        assert action is not HealthAction.PING
        newest = min(ping_age, frame_age)
        if newest >= timeout:
            assert action is HealthAction.DEAD
        elif newest < timeout - 0.01:
            assert action is HealthAction.WAIT
            assert deadline == pytest.approx(now - newest + timeout)


class TestPriority:
    @pytest.mark.parametrize(
        ("field", "expected"),
        [
            ("", h2pool.Priority(3, False)),
            ("u=0", h2pool.Priority(0, False)),
            ("u=5, i", h2pool.Priority(5, True)),
            ("i, u=1", h2pool.Priority(1, True)),
            ("i=?0, u=7", h2pool.Priority(7, False)),
            (b"u=2,i=?1", h2pool.Priority(2, True)),
            ("u=9", h2pool.Priority(3, False)),  # out of range: ignored
            ("u=x, i=3, foo=bar", h2pool.Priority(3, False)),  # malformed: ignored
        ],
    )
    def test_parse(self, field: str | bytes, expected: h2pool.Priority) -> None:
        assert h2pool.Priority.parse(field) == expected

    @given(urgency=st.integers(0, 7), incremental=st.booleans())
    def test_field_round_trip(self, urgency: int, incremental: bool) -> None:
        priority = h2pool.Priority(urgency, incremental)
        assert h2pool.Priority.parse(priority.to_field()) == priority

    def test_urgency_is_bounded(self) -> None:
        with pytest.raises(ValueError, match="urgency"):
            h2pool.Priority(8)

    def test_priority_update_frame_payload(self) -> None:
        assert parse_priority_update(b"\x80\x00\x00\x05u=1, i") == (5, h2pool.Priority(1, True))
        assert parse_priority_update(b"\x00\x00") is None


class TestHeaders:
    def test_pseudo_headers_first_names_lowercased_defaults_added(self) -> None:
        wire = encode_headers(
            [("X-A", "1"), (":path", "/"), (b":method", b"GET"), ("x-b", b"\xff")],
            [(b":scheme", b"http"), (b":authority", b"h:1"), (b":path", b"/ignored")],
        )
        assert wire == [
            (b":scheme", b"http"),
            (b":authority", b"h:1"),
            (b":path", b"/"),
            (b":method", b"GET"),
            (b"x-a", b"1"),
            (b"x-b", b"\xff"),
        ]

    def test_decode_keeps_order_and_never_fails(self) -> None:
        decoded = decode_headers([(b"a", b"1"), (b"a", "é".encode()), (b"b", b"\xff\xfe")])
        assert decoded == [("a", "1"), ("a", "é"), ("b", "ÿþ")]

    @given(st.lists(st.tuples(st.text(min_size=1), st.binary())))
    def test_encode_is_total_and_keeps_regular_order(self, pairs: list[tuple[str, bytes]]) -> None:
        # Without validation (H2Config(validate_headers=False)) it only converts.
        wire = encode_headers(pairs, validate=False)
        regular = [(n.encode().lower(), v) for n, v in pairs if not n.encode().startswith(b":")]
        assert [pair for pair in wire if not pair[0].startswith(b":")] == regular

    @given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.binary(max_size=8))))
    def test_encode_validates_or_refuses(self, pairs: list[tuple[str, bytes]]) -> None:
        try:
            wire = encode_headers(pairs)
        except h2pool.H2ProtocolError as exc:
            refused: h2pool.H2ProtocolError | None = exc
        else:
            refused = None
        if refused is not None:
            assert refused.never_processed
            return
        for name, value in wire:
            assert re.fullmatch(rb":?[a-z0-9!#$%&'*+\-.^_`|~]+", name)
            assert not re.search(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z", value)
            assert name not in (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade")

    def test_encode_normalizes_like_h2_did(self) -> None:
        wire = encode_headers(
            [
                ("Connection", "close"),
                ("Authorization", "secret"),
                ("cookie", "a=1"),
                ("x-pad", "  v \t"),
                ("TE", "trailers"),
            ]
        )
        assert wire == [
            (b"authorization", b"secret"),
            (b"cookie", b"a=1"),
            (b"x-pad", b"v"),
            (b"te", b"trailers"),
        ]
        assert type(wire[0]).__name__ == "NeverIndexedHeaderTuple"  # kept out of HPACK tables
        assert type(wire[1]).__name__ == "NeverIndexedHeaderTuple"
        for bad in ([("x", "a\r\nb")], [("bad name", "v")], [("te", "gzip")], [("", "v")]):
            with pytest.raises(h2pool.H2ProtocolError):
                encode_headers(bad)

    @pytest.mark.parametrize("field", [("connection", "close"), ("x-pad", " v"), ("x", "v\t")])
    def test_encode_without_normalize_refuses_what_it_would_repair(
        self, field: tuple[str, str]
    ) -> None:
        assert encode_headers([field]) != [(field[0].encode(), field[1].encode())]
        with pytest.raises(h2pool.LocalProtocolError) as refused:
            encode_headers([field], normalize=False)
        assert refused.value.never_processed

    @pytest.mark.parametrize(
        ("block", "problem"),
        [
            ([(b":method", b"GET"), (b":path", b"/")], None),
            ([(b":method", b"CONNECT"), (b":authority", b"h:1")], None),
            ([(b":path", b"/")], "no :method"),
            ([(b":method", b"GET")], "no :path"),
            ([(b":method", b"GET"), (b":path", b"")], "no :path"),
            ([(b":method", b"GET"), (b":method", b"GET"), (b":path", b"/")], "more than one"),
            ([(b":method", b"GET"), (b":path", b"/"), (b":status", b"200")], "not allowed"),
        ],
    )
    def test_request_pseudo_headers(
        self, block: list[tuple[bytes, bytes]], problem: str | None
    ) -> None:
        found = request_problem(block)
        if problem is None:
            assert found is None
        else:
            assert found is not None
            assert problem in found


class TestConfig:
    def test_defaults_are_valid(self) -> None:
        config = h2pool.H2Config()
        assert config.stream_window >= 65_535
        assert config.connection_window >= config.stream_window

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"stream_window": 1000},
            {"connection_window": 2**31},
            {"max_frame_size": 1000},
            {"max_frame_size": 2**24},
            {"max_header_list_size": 10},
            {"write_buffer_high": 10},
        ],
    )
    def test_invalid_values_are_refused(self, kwargs: dict[str, int]) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 - the message names the field
            h2pool.H2Config(**kwargs)  # type: ignore[arg-type]


class TestErrors:
    def test_one_root_and_builtin_families(self) -> None:
        assert issubclass(h2pool.ConnectTimeout, TimeoutError)
        assert issubclass(h2pool.ConnectionLost, ConnectionError)
        for name in h2pool.__all__:
            obj = getattr(h2pool, name)
            if isinstance(obj, type) and issubclass(obj, Exception):
                assert issubclass(obj, h2pool.H2PoolError), name

    def test_never_processed_defaults_by_kind(self) -> None:
        assert h2pool.StreamRefused("x").never_processed
        assert h2pool.ConnectError("x").never_processed
        assert not h2pool.StreamReset("x").never_processed
        assert not h2pool.ConnectionLost("x").never_processed
        assert h2pool.ConnectionLost("x", never_processed=True).never_processed
        error = h2pool.StreamReset("reset", error_code=8, stream_id=3)
        assert (error.error_code, error.stream_id, str(error)) == (8, 3, "reset")
