"""The tickless functional-timeout health check, as one pure decision.

A connection proves it is alive by receiving frames. Nothing runs while they
arrive: the protocol only records when bytes last came in. A single timer,
armed only while somebody waits on the connection (open streams or a
``wait_functional()`` call), asks :func:`check_health` what to do when it
fires, and re-arms itself at the deadline it returns.
"""

from __future__ import annotations

import enum

__all__ = ["HealthAction", "check_health"]

# Timers may fire up to one clock tick early; without a little slack such an
# early wake-up would re-arm for the same instant over and over.
_SLACK = 1e-3


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

    Returns:
        The action to take now, and the time at which to check again.
    """
    if ping_sent_at is None:
        silent_until = last_received + ping_interval
        if now + _SLACK >= silent_until:
            return HealthAction.PING, now + ping_timeout
        return HealthAction.WAIT, silent_until
    # Any frame proves liveness, not only the PING's ACK: the deadline runs
    # from whichever came last, the PING or a received frame.
    deadline = max(last_received, ping_sent_at) + ping_timeout
    if now + _SLACK >= deadline:
        return HealthAction.DEAD, now
    return HealthAction.WAIT, deadline
