"""Checks of the numbers people pass to the pool: one line naming the argument when wrong.

NaN compares false with everything, so every check is written so that NaN
fails it (``not value >= 0`` rather than ``value < 0``).
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = ["check_count", "check_fraction", "check_seconds"]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    return float(value)


def check_seconds(
    name: str,
    value: object,
    *,
    optional: bool = False,
    zero: bool = False,
    unbounded: bool = False,
) -> float | None:
    """``value`` as seconds, or raise ``ValueError``/``TypeError`` naming ``name``.

    Args:
        name: The argument, for the message.
        value: What was given.
        optional: None is allowed (no bound).
        zero: Zero is allowed.
        unbounded: Infinity is allowed (only where it means something, like
            a maximum); NaN never is.
    """
    if value is None and optional:
        return None
    seconds = _number(name, value)
    if math.isnan(seconds) or (math.isinf(seconds) and not unbounded):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    if not (seconds >= 0 if zero else seconds > 0):
        kind = "zero or positive" if zero else "positive"
        raise ValueError(f"{name} must be {kind}, not {value!r}")
    return seconds


def check_count(name: str, value: object, minimum: int) -> int:
    """``value`` as an integer of at least ``minimum``, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")
    return value


def check_fraction(name: str, value: object, low: float, high: float, *, closed: bool) -> float:
    """``value`` in ``[low, high]`` (``[low, high)`` unless ``closed``), or raise naming it."""
    number = _number(name, value)
    inside = low <= number <= high if closed else low <= number < high
    if not inside:  # NaN is never inside
        end = "]" if closed else ")"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{end}, not {value!r}")
    return number
