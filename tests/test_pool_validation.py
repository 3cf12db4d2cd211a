"""Every timeout and policy number is checked when given: a one-line error naming it.

Regression tests for issue 7: NaN was accepted everywhere (``timeout=nan`` fired after 1 s,
``functional_timeout=nan`` never declared a blackholed server dead, ``connect_timeout=nan``
never timed out) and ``timeout="5"`` raised AssertionError.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import h2pool

NAN, INF = math.nan, math.inf
TARGET = "http://127.0.0.1:1"

# (what builds it, the argument named in the error)
KNOBS: list[tuple[Callable[[Any], object], str]] = [
    (lambda v: h2pool.Pool(TARGET, functional_timeout=v), "functional_timeout"),
    (lambda v: h2pool.Pool(TARGET, connect_timeout=v), "connect_timeout"),
    (lambda v: h2pool.Pool(TARGET, timeout=v), "timeout"),
    (lambda v: h2pool.Pool(TARGET, resolve_interval=v), "resolve_interval"),
    (lambda v: h2pool.Timeouts(total=v), "total"),
    (lambda v: h2pool.Timeouts(connect=v), "connect"),
    (lambda v: h2pool.Timeouts(read=v), "read"),
    (lambda v: h2pool.Timeouts(write=v), "write"),
    (lambda v: h2pool.Timeouts(pool=v), "pool"),
    (lambda v: h2pool.RetryPolicy(backoff_initial=v), "backoff_initial"),
    (lambda v: h2pool.RetryPolicy(backoff_multiplier=v), "backoff_multiplier"),
    (lambda v: h2pool.RetryPolicy(backoff_max=v), "backoff_max"),
    (lambda v: h2pool.RetryPolicy(jitter=v), "jitter"),
    (lambda v: h2pool.RetryPolicy(max_retry_after=v), "max_retry_after"),
    (lambda v: h2pool.ConnectionBackoff(initial=v), "initial"),
    (lambda v: h2pool.ConnectionBackoff(multiplier=v), "multiplier"),
    (lambda v: h2pool.ConnectionBackoff(jitter=v), "jitter"),
    (lambda v: h2pool.ConnectionBackoff(max=v), "max"),
    (lambda v: h2pool.EjectionPolicy(base_time=v), "base_time"),
    (lambda v: h2pool.EjectionPolicy(max_time=v), "max_time"),
    (lambda v: h2pool.EjectionPolicy(max_ejected_percent=v), "max_ejected_percent"),
]

INT_KNOBS: list[tuple[Callable[[Any], object], str]] = [
    (lambda v: h2pool.Pool(TARGET, min_connections=v), "min_connections"),
    (lambda v: h2pool.Pool(TARGET, max_connections=v), "max_connections"),
    (lambda v: h2pool.Pool(TARGET, http1_max_connections=v), "http1_max_connections"),
    (
        lambda v: h2pool.Pool(TARGET, max_streams_per_connection=v),
        "max_streams_per_connection",
    ),
    (lambda v: h2pool.Pool(TARGET, max_pending=v), "max_pending"),
    (lambda v: h2pool.RetryPolicy(max_attempts=v), "max_attempts"),
    (lambda v: h2pool.EjectionPolicy(consecutive_failures=v), "consecutive_failures"),
]


def one_line(error: BaseException, name: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert name in message, message


@pytest.mark.parametrize(("make", "name"), KNOBS, ids=[name for _, name in KNOBS])
@pytest.mark.parametrize("value", [NAN, -1.0, INF], ids=["nan", "negative", "inf"])
def test_numbers_out_of_range_are_refused(
    make: Callable[[Any], object], name: str, value: float
) -> None:
    unbounded = ("max_retry_after", "backoff_max", "max", "max_time", "resolve_interval")
    if value == INF and name in unbounded:
        make(value)  # an unbounded maximum is meaningful
        return
    with pytest.raises(ValueError, match=name) as refused:
        make(value)
    one_line(refused.value, name)


@pytest.mark.parametrize(("make", "name"), KNOBS + INT_KNOBS, ids=[n for _, n in KNOBS + INT_KNOBS])
@pytest.mark.parametrize("value", ["5", b"5", [5]], ids=["str", "bytes", "list"])
def test_non_numbers_are_refused(make: Callable[[Any], object], name: str, value: object) -> None:
    with pytest.raises(TypeError) as refused:
        make(value)
    one_line(refused.value, name)


@pytest.mark.parametrize(("make", "name"), INT_KNOBS, ids=[name for _, name in INT_KNOBS])
@pytest.mark.parametrize("value", [NAN, 1.5, True], ids=["nan", "fraction", "bool"])
def test_counts_must_be_integers(make: Callable[[Any], object], name: str, value: object) -> None:
    with pytest.raises(TypeError) as refused:
        make(value)
    one_line(refused.value, name)


@pytest.mark.parametrize("value", [NAN, -1.0, 0.0, "5"], ids=["nan", "negative", "zero", "str"])
async def test_per_request_timeouts_are_checked_before_anything_is_sent(value: object) -> None:
    async with h2pool.Pool(TARGET, min_connections=0) as pool:
        with pytest.raises((ValueError, TypeError)) as refused:
            await pool.request("GET", "/", timeout=value)
        one_line(refused.value, "timeout")
        assert pool.stats().endpoints[0].state is h2pool.ConnectivityState.IDLE


def test_timeouts_none_and_positive_numbers_are_fine() -> None:
    assert h2pool.Timeouts(total=None, read=1, connect=0.5).read == 1
    h2pool.Pool(TARGET, timeout=None)
    h2pool.Pool(TARGET, timeout=h2pool.Timeouts(total=None), resolve_interval=INF)
    h2pool.RetryPolicy(backoff_max=INF, max_retry_after=INF)


@pytest.mark.parametrize(
    "headers",
    [
        {"connection": "close"},
        {"transfer-encoding": "chunked"},
        {"te": "gzip"},
        {":path": "/other"},
        {"bad name": "x"},
        {"x-ok": "line\r\nbreak"},
        {"x-ok": " padded"},
    ],
)
async def test_invalid_header_fields_are_the_callers_mistake(headers: dict[str, str]) -> None:
    async with h2pool.Pool(TARGET, min_connections=0) as pool:
        with pytest.raises(h2pool.LocalProtocolError) as refused:
            await pool.request("GET", "/", headers=headers)
        assert refused.value.never_processed
        assert isinstance(refused.value, h2pool.H2ProtocolError)
        assert pool.stats().endpoints[0].state is h2pool.ConnectivityState.IDLE
    with pytest.raises(h2pool.LocalProtocolError):
        h2pool.Pool(TARGET, headers=headers)


async def test_local_protocol_errors_map_to_the_adapters_classes() -> None:
    import httpcore
    import httpx

    async with httpx.AsyncClient(transport=h2pool.AsyncHTTPTransport()) as client:
        with pytest.raises(httpx.LocalProtocolError) as refused:
            await client.get(f"{TARGET}/", headers={"x-ok": " padded"})
        assert isinstance(refused.value.__cause__, h2pool.LocalProtocolError)
    async with h2pool.AsyncConnectionPool() as pool:
        with pytest.raises(httpcore.LocalProtocolError):
            await pool.request("GET", f"{TARGET}/", headers={"x-ok": " padded"})
