"""Checks of the numbers people pass to the pool: one line naming the argument when wrong.

Durations and counts are checked by the core's
:func:`~h2pool._core.config.check_seconds` and
:func:`~h2pool._core.config.check_count`.

NaN compares false with everything, so every check is written so that NaN
fails it (``not value >= 0`` rather than ``value < 0``).
"""

from __future__ import annotations

from numbers import Real

from .._core.config import check_count, check_seconds

__all__ = ["check_count", "check_flag", "check_fraction", "check_seconds"]


def check_fraction(name: str, value: object, low: float, high: float, *, closed: bool) -> float:
    """``value`` in ``[low, high]`` (``[low, high)`` unless ``closed``), or raise naming it."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    number = float(value)
    inside = low <= number <= high if closed else low <= number < high
    if not inside:  # NaN is never inside
        end = "]" if closed else ")"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{end}, not {value!r}")
    return number


def check_flag(name: str, value: object, *, optional: bool = False) -> None:
    """``value`` is a bool (or, if ``optional``, None), or raise ``TypeError`` naming it.

    Checked rather than taken for its truth: ``"no"`` would be true.
    """
    if not (isinstance(value, bool) or (optional and value is None)):
        allowed = "a bool or None" if optional else "a bool"
        raise TypeError(f"{name} must be {allowed}, not {type(value).__name__}")
