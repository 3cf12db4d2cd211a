"""h2pool.events: what happens in a pool, as typed events for listeners.

Give a listener as ``Pool(..., on_event=listener)`` (or ``pool.add_listener``;
the rpc channel passes ``on_event=`` on to its pool). Every event is a frozen
dataclass naming its ``endpoint``. See ``docs/observability.md``.
"""

from ._pool.events import (
    ConnectionDraining,
    ConnectionEnded,
    ConnectionOpened,
    EndpointEjected,
    EndpointRestored,
    Event,
    Listener,
    RequestFinished,
    RequestHedged,
    RequestRetried,
    RetryBudgetExhausted,
)

__all__ = [
    "ConnectionDraining",
    "ConnectionEnded",
    "ConnectionOpened",
    "EndpointEjected",
    "EndpointRestored",
    "Event",
    "Listener",
    "RequestFinished",
    "RequestHedged",
    "RequestRetried",
    "RetryBudgetExhausted",
]
