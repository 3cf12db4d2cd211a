"""RFC 9218 extensible priorities: the value, its wire form, and the DATA scheduler order."""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["PRIORITY_UPDATE_FRAME", "Priority", "parse_priority_update"]

#: Frame type of PRIORITY_UPDATE (RFC 9218 section 7.1).
PRIORITY_UPDATE_FRAME = 0x10


@dataclass(frozen=True, slots=True)
class Priority:
    """The priority of a stream (RFC 9218 section 4).

    Attributes:
        urgency: 0 (most urgent) to 7; 3 by default.
        incremental: Whether the receiver can use the data as it arrives, so
            streams of the same urgency may share the connection in turns.
    """

    urgency: int = 3
    incremental: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.urgency <= 7:
            raise ValueError("urgency must be 0..7")

    @classmethod
    def parse(cls, field: str | bytes) -> Priority:
        """Parse a ``priority`` field value such as ``"u=1, i"``.

        Parameters that are malformed or unknown are ignored, as RFC 9218
        section 4 requires, leaving their defaults.
        """
        text = field.decode("latin-1") if isinstance(field, bytes) else field
        urgency, incremental = 3, False
        for member in text.split(","):
            key, _, value = member.strip().partition("=")
            key, value = key.strip(), value.strip()
            if key == "u" and value.isdigit() and 0 <= int(value) <= 7:
                urgency = int(value)
            elif key == "i" and value in ("", "?1", "?0"):
                incremental = value != "?0"
        return cls(urgency, incremental)

    def to_field(self) -> str:
        """The ``priority`` header field value for this priority."""
        if self.incremental:
            return f"u={self.urgency}, i"
        return f"u={self.urgency}"


def parse_priority_update(payload: bytes) -> tuple[int, Priority] | None:
    """Decode a PRIORITY_UPDATE frame body: (prioritized stream id, priority).

    Returns None for a body too short to hold a stream id.
    """
    if len(payload) < 4:
        return None
    (stream_id,) = struct.unpack_from(">I", payload)
    return stream_id & 0x7FFFFFFF, Priority.parse(payload[4:])
