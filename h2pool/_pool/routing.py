"""Which connection takes a new stream: one pure synchronous decision, no I/O.

The scheduler calls :func:`route` for the oldest waiting request; the answer
is a connection to use, an endpoint to open a connection to, or to wait (and
until when, at the latest). Only connections with a free slot count: none
that received GOAWAY, is dead, or is full under the peer's
MAX_CONCURRENT_STREAMS once the slots reserved by other requests are counted.
:func:`route` only reads :class:`~.endpoint.ConnectionView` properties and
endpoint fields; it changes nothing. The endpoint is the balancer's choice
(:mod:`.balancer`) among those in rotation that can take the stream, read
O(1) at a time; the connection, that endpoint's least-loaded live one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple

from .balancer import Balancer, Key, cost, pick
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
    balancer: Balancer = Balancer.P2C,
    in_rotation: Sequence[Endpoint[ConnT]] | None = None,
    rng: Callable[[], float] = random.random,
) -> Route[ConnT]:
    """Decide where a new stream goes.

    Args:
        endpoints: The pool's endpoints.
        now: The event-loop time.
        waiting: Streams waiting for capacity, this one included.
        functional_timeout: Silence after which a connection counts as stale.
        turn: A counter that rotates ties between endpoints, so equally
            loaded endpoints share the load (and round robin's turn).
        avoid: The addresses of endpoints to use only if no other can take
            the stream now: a retry (or a hedge) goes elsewhere when it can
            (as Envoy's previous-hosts retry predicate), so that one failing
            endpoint cannot fail all of a request's attempts.
        balancer: Which endpoint of the rotation takes the stream (see
            :mod:`.balancer`).
        in_rotation: :func:`~.endpoint.rotation` of the open ``endpoints``
            at ``now``, if the caller keeps it (the scheduler does, so that
            a request reads O(1) endpoints); computed here otherwise.
        rng: Uniform random numbers in [0, 1), for p2c's samples.

    Returns:
        Use a connection with a free slot of the endpoint the balancer picks
        among those that have one (not avoided if it can), its least-loaded
        connection, preferring proven-live ones. Otherwise open a connection
        where one may be opened, unless the connections already being opened
        will hold every waiting stream. Otherwise wait.
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
    if in_rotation is None:
        in_rotation = rotation([ep for ep in endpoints if not ep.closed], now)
    chosen = _balanced(in_rotation, now, functional_timeout, turn, avoid, balancer, rng)
    if chosen is not None:
        return chosen

    # No connection can take the stream now: read every endpoint (rare).
    expected = sum(ep.connecting * ep.max_streams for ep in in_rotation)
    if waiting <= expected:
        return Route()  # the connections being opened will hold them
    count = len(in_rotation)
    openable = []
    for index, ep in enumerate(in_rotation):
        opened = len(ep.ready()) + ep.connecting
        if ep.may_connect(now) and opened < ep.max_connections:
            openable.append((ep.address in avoid, opened, (index - turn) % count, ep))
    if openable:
        return Route(endpoint=min(openable, key=lambda item: item[:3])[3])
    open_endpoints = [ep for ep in endpoints if not ep.closed]
    later = [ep.next_attempt_at for ep in open_endpoints if ep.next_attempt_at > now]
    later += [ep.ejected_until for ep in open_endpoints if ep.ejected_until > now]
    return Route(wake_at=min(later) if later else None)


def _balanced(
    in_rotation: Sequence[Endpoint[ConnT]],
    now: float,
    functional_timeout: float,
    turn: int,
    avoid: frozenset[str],
    balancer: Balancer,
    rng: Callable[[], float],
) -> Route[ConnT] | None:
    """The balancer's endpoint of ``in_rotation`` and its best connection, if one can take it.

    Apart from :func:`route`, so that the closure's cells cost nothing on its fast path.
    """
    count = len(in_rotation)
    chosen: dict[int, tuple[ConnT, bool]] = {}

    def rank(index: int) -> Key | None:
        # Reads one endpoint's connections (a few): its best one, and its load.
        endpoint = in_rotation[index]
        if endpoint.closed:
            return None
        best: ConnT | None = None
        best_key = (True, 1.0)
        outstanding = 0
        for conn in endpoint.connections:
            used = conn.open_streams + conn.reserved
            outstanding += used
            limit = conn.max_streams
            if used < limit and conn.accepting_streams:
                key = (now - conn.last_received >= functional_timeout, used / limit)
                if best is None or key < best_key:
                    best, best_key = conn, key
        if best is None:
            return None
        stale = best_key[0]
        chosen[index] = (best, stale)
        if balancer is Balancer.P2C:
            score = cost(endpoint.latency.value(now), outstanding)
        elif balancer is Balancer.LEAST_REQUEST:
            score = float(outstanding)
        else:
            score = 0.0
        return (bool(avoid) and endpoint.address in avoid, stale, score)

    index = pick(balancer, count, turn % count if count else 0, rank, rng)
    if index is None:
        return None
    conn, stale = chosen[index]
    return Route(endpoint=in_rotation[index], connection=conn, stale=stale)
