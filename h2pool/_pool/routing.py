"""Which connection takes a new stream: one pure synchronous decision, no I/O.

The scheduler calls :func:`route` for the oldest waiting request; the answer
is a connection to use, an endpoint to open a connection to, or to wait (and
until when, at the latest). Only connections with a free slot count: none
that received GOAWAY, is dead, or is full under the peer's
MAX_CONCURRENT_STREAMS once the slots reserved by other requests are counted.
:func:`route` only reads :class:`~.endpoint.ConnectionView` properties and
endpoint fields; it changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, NamedTuple

from .endpoint import ConnT, Endpoint, rotation

__all__ = ["Route", "route"]


class Route(NamedTuple, Generic[ConnT]):
    """The routing decision for one new stream (a named tuple: made for every request).

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

    endpoint: Endpoint[ConnT] | None = None
    connection: ConnT | None = None
    stale: bool = False
    wake_at: float | None = None


def route(
    endpoints: Sequence[Endpoint[ConnT]],
    now: float,
    *,
    waiting: int,
    functional_timeout: float,
    turn: int = 0,
    avoid: frozenset[str] = frozenset(),
) -> Route[ConnT]:
    """Decide where a new stream goes.

    Args:
        endpoints: The pool's endpoints.
        now: The event-loop time.
        waiting: Streams waiting for capacity, this one included.
        functional_timeout: Silence after which a connection counts as stale.
        turn: A counter that rotates ties between endpoints, so equally
            loaded endpoints share the load.
        avoid: The addresses of endpoints to use only if no other can take
            the stream now: a retry (or a hedge) goes elsewhere when it can
            (as Envoy's previous-hosts retry predicate), so that one failing
            endpoint cannot fail all of a request's attempts.

    Returns:
        Use the least-loaded live connection with a free slot, preferring
        proven-live connections and the least-loaded endpoint. Otherwise
        open a connection where one may be opened, unless the connections
        already being opened will hold every waiting stream. Otherwise wait.
    """
    if len(endpoints) == 1 and len(endpoints[0].connections) == 1:
        # The commonest case, decided without the general search: the same
        # answer, as the only connection is the only candidate.
        endpoint = endpoints[0]
        conn = endpoint.connections[0]
        if (
            not endpoint.closed
            and conn.accepting_streams
            and conn.open_streams + conn.reserved < conn.max_streams
        ):
            stale = now - conn.last_received >= functional_timeout
            return Route(endpoint=endpoint, connection=conn, stale=stale)
    open_endpoints = [ep for ep in endpoints if not ep.closed]
    in_rotation = rotation(open_endpoints, now)
    count = len(in_rotation)
    best: tuple[Endpoint[ConnT], ConnT] | None = None
    best_key: tuple[bool, bool, float, int, float] | None = None
    ready_counts = []
    for index, endpoint in enumerate(in_rotation):
        # One pass reads each connection once (this runs for every request).
        candidates = []
        ready = taken = capacity = 0
        for conn in endpoint.connections:
            if not conn.accepting_streams:
                continue
            ready += 1
            limit = conn.max_streams
            used = conn.open_streams + conn.reserved
            taken += used
            capacity += limit
            if used < limit:
                candidates.append((conn, used / limit))
        ready_counts.append(ready)
        if not candidates:
            continue
        load = taken / capacity
        order = (index - turn) % count
        avoided = endpoint.address in avoid
        for conn, fill in candidates:
            stale = now - conn.last_received >= functional_timeout
            key = (avoided, stale, load, order, fill)
            if best_key is None or key < best_key:
                best, best_key = (endpoint, conn), key
    if best is not None and best_key is not None:
        return Route(endpoint=best[0], connection=best[1], stale=best_key[1])

    expected = sum(ep.connecting * ep.max_streams for ep in in_rotation)
    if waiting <= expected:
        return Route()  # the connections being opened will hold them
    openable = [
        (ep.address in avoid, ready + ep.connecting, (index - turn) % count, ep)
        for index, (ep, ready) in enumerate(zip(in_rotation, ready_counts, strict=True))
        if ep.may_connect(now) and ready + ep.connecting < ep.max_connections
    ]
    if openable:
        return Route(endpoint=min(openable, key=lambda item: item[:3])[3])
    later = [ep.next_attempt_at for ep in open_endpoints if ep.next_attempt_at > now]
    later += [ep.ejected_until for ep in open_endpoints if ep.ejected_until > now]
    return Route(wake_at=min(later) if later else None)
