"""What ``pool.stats()`` returns: a snapshot of the pool, for people and metrics exporters."""

from __future__ import annotations

from dataclasses import dataclass

from .endpoint import EndpointStats

__all__ = ["PoolStats"]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool, for people and metrics exporters.

    Attributes:
        endpoints: One snapshot per endpoint.
        active: Requests in flight (sent, or holding an unread response).
        pending: Requests waiting for a connection.
        closed: Whether the pool is closed or closing.
        retries: Retries made since the pool started (transparent ones included).
        hedges: Copies of hedged requests sent after the first.
        budget_refusals: Retries and hedges the retry budget refused (the
            rpc channel's retries included).
    """

    endpoints: tuple[EndpointStats, ...]
    active: int
    pending: int
    closed: bool
    retries: int = 0
    hedges: int = 0
    budget_refusals: int = 0
