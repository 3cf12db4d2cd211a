"""Which connection takes a new stream: one synchronous decision, no I/O.

The pool calls :func:`route` for every stream it starts; the answer is a
connection to use, an endpoint to open a connection to, or to wait (and until
when, at the latest). Only connections that take new streams count: none that
received GOAWAY, is dead, or is full under the peer's MAX_CONCURRENT_STREAMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .channel import Channel
from .endpoint import Endpoint

__all__ = ["Route", "route"]


@dataclass(frozen=True, slots=True)
class Route:
    """The routing decision for one new stream.

    With a ``connection``: start the stream on it (``endpoint`` is its
    endpoint). With only an ``endpoint``: open a new connection to it, then
    route again. With neither: wait.

    Attributes:
        endpoint: The endpoint to use or to connect to.
        connection: The connection to start the stream on.
        stale: The connection has been silent for a functional timeout: its
            liveness is unproven (a request that must not be sent twice
            waits for a PING first).
        wake_at: When waiting: the event-loop time at which a backoff or an
            ejection ends, so routing may change without any other event.
    """

    endpoint: Endpoint | None = None
    connection: Channel | None = None
    stale: bool = False
    wake_at: float | None = None


def route(
    endpoints: Sequence[Endpoint],
    now: float,
    *,
    waiting: int,
    functional_timeout: float,
    turn: int = 0,
) -> Route:
    """Decide where a new stream goes.

    Args:
        endpoints: The pool's endpoints.
        now: The event-loop time.
        waiting: Streams waiting for capacity, this one included.
        functional_timeout: Silence after which a connection counts as stale.
        turn: A counter that rotates ties between endpoints, so equally
            loaded endpoints share the load.

    Returns:
        Use the least-loaded live connection with a free slot, preferring
        proven-live connections and the least-loaded endpoint. Otherwise
        open a connection where one may be opened, unless the connections
        already being opened will hold every waiting stream. Otherwise wait.
    """
    open_endpoints = [ep for ep in endpoints if not ep.closed]
    in_rotation = [ep for ep in open_endpoints if not ep.ejected(now)] or open_endpoints
    count = len(in_rotation)
    best: tuple[Endpoint, Channel] | None = None
    best_key: tuple[bool, float, int, float] | None = None
    for index, endpoint in enumerate(in_rotation):
        live = endpoint.live()
        if not live:
            continue
        load = sum(conn.open_streams for conn in live) / sum(conn.max_streams for conn in live)
        rotation = (index - turn) % count
        for conn in live:
            if conn.open_streams >= conn.max_streams:
                continue
            stale = now - conn.last_received >= functional_timeout
            key = (stale, load, rotation, conn.open_streams / conn.max_streams)
            if best_key is None or key < best_key:
                best, best_key = (endpoint, conn), key
    if best is not None and best_key is not None:
        return Route(endpoint=best[0], connection=best[1], stale=best_key[0])

    expected = sum(ep.connecting * ep.stream_capacity for ep in in_rotation)
    if waiting <= expected:
        return Route()  # the connections being opened will hold them
    openable = [
        (len(ep.live()) + ep.connecting, (index - turn) % count, ep)
        for index, ep in enumerate(in_rotation)
        if ep.may_connect(now) and len(ep.live()) + ep.connecting < ep.max_connections
    ]
    if openable:
        return Route(endpoint=min(openable, key=lambda item: item[:2])[2])
    later = [ep.next_attempt_at for ep in open_endpoints if ep.next_attempt_at > now]
    later += [ep.ejected_until for ep in open_endpoints if ep.ejected_until > now]
    return Route(wake_at=min(later) if later else None)
