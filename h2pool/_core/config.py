"""Tuning knobs of one HTTP/2 connection, as a validated frozen value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

__all__ = ["H2Config", "check_count", "check_duration", "check_seconds"]

_MAX_WINDOW = 2**31 - 1
_MIN_FRAME, _MAX_FRAME = 2**14, 2**24 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class H2Config:
    """Settings of one HTTP/2 connection; the defaults suit most uses.

    Received data is acknowledged to the peer (WINDOW_UPDATE) only as the
    application reads it, so ``stream_window`` bounds the unread data buffered
    per stream and ``connection_window`` bounds it per connection.

    Attributes:
        stream_window: Initial receive window of each stream, in bytes
            (SETTINGS_INITIAL_WINDOW_SIZE). Large windows let one stream
            reach high throughput when the round trip is short.
        connection_window: Receive window of the whole connection, in bytes.
        max_frame_size: Largest frame the peer may send us
            (SETTINGS_MAX_FRAME_SIZE), 16 KiB to 16 MiB - 1.
        max_header_list_size: Largest decoded header block accepted
            (SETTINGS_MAX_HEADER_LIST_SIZE); larger ones are a protocol error.
        validate_headers: Check every header block sent and received against
            RFC 9113 section 8.2 (h2pool's own checks: a malformed block received
            resets its stream, section 8.1.1). Turning it off trades safety for speed.
        write_buffer_high: Bytes queued in the transport above which sending
            pauses until the socket drains (transport back-pressure).
    """

    stream_window: int = 4 * 1024 * 1024
    connection_window: int = 16 * 1024 * 1024
    max_frame_size: int = 2**14
    max_header_list_size: int = 64 * 1024
    validate_headers: bool = True
    write_buffer_high: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not 65_535 <= self.stream_window <= _MAX_WINDOW:
            raise ValueError(f"stream_window must be 65535..{_MAX_WINDOW}")
        if not 65_535 <= self.connection_window <= _MAX_WINDOW:
            raise ValueError(f"connection_window must be 65535..{_MAX_WINDOW}")
        if not _MIN_FRAME <= self.max_frame_size <= _MAX_FRAME:
            raise ValueError(f"max_frame_size must be {_MIN_FRAME}..{_MAX_FRAME}")
        if self.max_header_list_size < 1024:
            raise ValueError("max_header_list_size must be at least 1024")
        if self.write_buffer_high < 16 * 1024:
            raise ValueError("write_buffer_high must be at least 16384")


def check_seconds(
    name: str,
    value: object,
    *,
    optional: bool = False,
    zero: bool = False,
    unbounded: bool = False,
) -> float | None:
    """``value`` as seconds, or raise ``ValueError``/``TypeError`` naming ``name``.

    NaN compares false with everything, so without this check it would turn
    a timeout off silently (a deadline that never comes): every test here is
    written so that NaN fails it. The one check of durations for the core and
    the pool.

    Args:
        name: The argument, for the message.
        value: What was given.
        optional: None is allowed (no bound).
        zero: Zero is allowed.
        unbounded: Infinity is allowed (only where it means something, like
            a maximum); NaN never is.

    Raises:
        TypeError: ``value`` is not a number (bool is not one here).
        ValueError: ``value`` is NaN, infinite, zero or negative (as allowed).
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or (math.isinf(seconds) and not unbounded):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    if not (seconds >= 0 if zero else seconds > 0):
        kind = "zero or positive" if zero else "positive"
        raise ValueError(f"{name} must be {kind}, not {value!r}")
    return seconds


def check_count(name: str, value: object, minimum: int) -> int:
    """``value`` as an integer of at least ``minimum``, or raise naming ``name``.

    Raises:
        TypeError: ``value`` is not an integer (bool is not one here).
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")
    return value


def check_duration(name: str, value: object, *, optional: bool = True) -> None:
    """Reject a duration of the core that is not a finite positive number (None allowed).

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: ``value`` is NaN, infinite, zero or negative.
    """
    check_seconds(name, value, optional=optional)
