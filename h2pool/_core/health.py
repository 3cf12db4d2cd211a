"""The tickless functional-timeout health check and the ping budget, as pure decisions.

A connection proves it is alive by receiving frames. Nothing runs while they
arrive: the protocol only records when bytes last came in. A single timer,
armed only while somebody waits on the connection (open streams or a
``wait_functional()`` call), asks :func:`check_health` what to do when it
fires, and re-arms itself at the deadline it returns.

Servers police PINGs (RFC 9113 section 10.5: a peer may treat excessive
PINGs as abuse). gRPC servers (grpcio's C core, ``ping_abuse_policy.cc``;
grpc-go, ``handlePing``) allow by default one PING per 5 minutes while they
send no HEADERS or DATA: the first PING after they last sent some is free,
each further one within 5 minutes of the previous is a strike, and more
than 2 strikes end the connection with GOAWAY(ENHANCE_YOUR_CALM,
``too_many_pings``). A :class:`PingBudget` keeps a client inside such a
policy; :func:`ping_allowed_at` is its one decision.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .config import check_count, check_seconds

__all__ = ["DEFAULT_PING_BUDGET", "HealthAction", "PingBudget", "check_health", "ping_allowed_at"]

# Timers may fire up to one clock tick early; without a little slack such an
# early wake-up would re-arm for the same instant over and over.
_SLACK = 1e-3


@dataclass(frozen=True, slots=True, kw_only=True)
class PingBudget:
    """How many PINGs a connection sends while the peer sends no HEADERS or DATA.

    At most ``pings`` PINGs are sent while no HEADERS or DATA frame arrives
    (each one received starts afresh); once they are spent, at most one PING
    per ``period`` seconds until HEADERS or DATA arrive again. Every PING
    counts: health checks and ``wait_functional()`` alike.

    The default keeps within the default policy of gRPC servers (grpcio and
    grpc-go: 2 strikes allowed, 5 minutes between PINGs without data): the
    first PING is free, the second is one strike, and later ones come a full
    ``period`` apart, which is no strike. Against a server with
    ``max_ping_strikes`` S and ``min_ping_interval_without_data`` I, any
    ``pings <= S + 1`` and ``period >= I`` is safe.

    Attributes:
        pings: PINGs allowed while the peer sends no HEADERS or DATA (at least 1).
        period: Seconds between two PINGs once those are spent (positive, finite).
    """

    pings: int = 2
    period: float = 300.0

    def __post_init__(self) -> None:
        check_count("pings", self.pings, 1)
        check_seconds("period", self.period)


#: The budget of client connections unless told otherwise (frozen, so shared).
DEFAULT_PING_BUDGET = PingBudget()


def ping_allowed_at(
    budget: PingBudget | None, pings_since_data: int, last_ping_sent: float
) -> float:
    """When the budget next allows a PING (minus infinity: at once).

    Args:
        budget: The connection's budget, or None for no limit.
        pings_since_data: PINGs sent since HEADERS or DATA last arrived.
        last_ping_sent: When the latest PING was sent (minus infinity if none was).

    Returns:
        The earliest time at which a PING may be sent.
    """
    if budget is None or pings_since_data < budget.pings:
        return -math.inf
    return last_ping_sent + budget.period


class HealthAction(enum.Enum):
    """What the connection should do when its health timer fires."""

    WAIT = "wait"  #: nothing to do before the returned deadline
    PING = "ping"  #: silent too long: send one PING now
    DEAD = "dead"  #: a PING went unanswered and nothing else arrived: give up


def check_health(
    now: float,
    last_received: float,
    ping_sent_at: float | None,
    ping_interval: float,
    ping_timeout: float,
    allowed_at: float = -math.inf,
) -> tuple[HealthAction, float]:
    """Decide the next health step of a connection somebody is waiting on.

    Args:
        now: The current time (event loop clock).
        last_received: When bytes were last received on the connection.
        ping_sent_at: When the outstanding PING was sent, or None if none is.
        ping_interval: Silence after which a PING is sent (the functional
            timeout, doubled for every ``too_many_pings`` complaint).
        ping_timeout: How long after the PING (or after the latest frame
            received since) the connection may stay silent before it is dead.
        allowed_at: When the ping budget next allows a PING
            (:func:`ping_allowed_at`); a silent connection waits until then.

    Returns:
        The action to take now, and the time at which to check again.
    """
    if ping_sent_at is None:
        due = max(last_received + ping_interval, allowed_at)
        if now + _SLACK >= due:
            return HealthAction.PING, now + ping_timeout
        return HealthAction.WAIT, due
    # Any frame proves liveness, not only the PING's ACK: the deadline runs
    # from whichever came last, the PING or a received frame.
    deadline = max(last_received, ping_sent_at) + ping_timeout
    if now + _SLACK >= deadline:
        return HealthAction.DEAD, now
    return HealthAction.WAIT, deadline
