"""Hedged requests (gRFC A6 hedging): the policy and its pure decisions.

A hedged request is sent once, then again to another endpoint every
``delay`` while no answer has come, up to ``max_attempts`` copies in flight
together; the first final answer wins and the others are cancelled
(RST_STREAM CANCEL). It cuts the tail of latency (a stalled replica no longer
decides the request's time) for a little more load, which the pool's retry
budget bounds. The loop that runs the copies is in :mod:`.attempts`; every
rule it follows is here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from .._exceptions import H2PoolError, H2ProtocolError, PoolClosed, PoolOverloaded, PoolTimeout
from .checks import check_count, check_seconds
from .outgoing import OutgoingRequest
from .policies import IDEMPOTENT_METHODS

__all__ = ["HedgePolicy", "Verdict", "avoided", "hedge_for", "judge"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgePolicy:
    """When a request is sent again before its first copy answered (gRFC A6 hedgingPolicy).

    Attributes:
        delay: Seconds without an answer after which the next copy is sent
            (A6's ``hedgingDelay``): a little above the usual latency, as
            the 95th percentile, so that only the slow tail is hedged.
        max_attempts: Copies of a request in all, the first included (A6's
            ``maxAttempts``); each one after the first spends the retry budget.
        statuses: Answers that are not final (A6's ``nonFatalStatusCodes``):
            the next copy is sent at once and the others go on; the last such
            answer is returned when no copy answers better.
    """

    delay: float
    max_attempts: int = 2
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({503}))

    def __post_init__(self) -> None:
        check_seconds("delay", self.delay, zero=True)
        check_count("max_attempts", self.max_attempts, 2)


def hedge_for(
    method: str, *, streamed: bool, given: HedgePolicy | None, pool: HedgePolicy | None
) -> HedgePolicy | None:
    """The hedging policy of a request, or None for a request sent once (with retries).

    Args:
        method: The request's method.
        streamed: Whether its body is a stream (copies in flight together
            need a body in memory: such a request is never hedged).
        given: The request's own ``hedge=``: the caller says the request is
            safe to send more than once, whatever its method.
        pool: The pool's ``hedge``, used only for idempotent methods (RFC
            9110 section 9.2.2), as several copies may all be processed.

    Raises:
        ValueError: ``given`` for a request whose body is a stream.
    """
    if given is not None:
        if streamed:
            raise ValueError("hedge= needs a body in memory: a streamed body cannot be sent twice")
        return given
    if pool is None or streamed or method not in IDEMPOTENT_METHODS:
        return None
    return pool


class Verdict(enum.Enum):
    """What a hedged request does with the outcome of one of its copies."""

    WIN = "win"  #: a final answer: it ends the request, the other copies are cancelled
    NEXT = "next"  #: not final: the next copy goes at once, the others go on
    WAIT = "wait"  #: a failure that another copy would meet too: send no more, wait for the rest


def judge(outcome: H2PoolError | int, policy: HedgePolicy) -> Verdict:
    """Judge the outcome of one copy of a hedged request (an error or a status).

    A status is final unless in ``policy.statuses``. An error never ends the
    request while other copies may still answer: the next copy is sent at
    once, except after a refusal of the pool (closed, overloaded, no slot in
    time) or a protocol error, which a new copy would meet again.
    """
    if isinstance(outcome, int):
        return Verdict.NEXT if outcome in policy.statuses else Verdict.WIN
    if isinstance(outcome, PoolClosed | PoolOverloaded | PoolTimeout | H2ProtocolError):
        return Verdict.WAIT
    return Verdict.NEXT


def avoided(request: OutgoingRequest, copies: Iterable[OutgoingRequest]) -> frozenset[str]:
    """The endpoints a new copy of ``request`` avoids: those its copies failed on or use.

    Routing takes any other endpoint in rotation first, so that each copy
    goes to a different endpoint while there is one (one stalled replica
    must not hold every copy).
    """
    avoid = request.avoid
    for copy in copies:
        avoid |= copy.avoid
        if copy.sent_to is not None:
            avoid |= {copy.sent_to}
    return avoid
