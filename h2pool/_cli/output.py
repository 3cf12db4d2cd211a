"""What ``-v`` prints on stderr: the request, the response head, trailers, timing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO


def fields(prefix: str, pairs: Iterable[tuple[str, str]], out: TextIO) -> None:
    """One ``prefix name: value`` line per field."""
    for name, value in pairs:
        out.write(f"{prefix} {name}: {value}\n")


def note(text: str, out: TextIO) -> None:
    """One ``* text`` line (curl's mark for what is not on the wire)."""
    out.write(f"* {text}\n")
