"""What happens in a pool, as typed events told to listeners (``Pool(on_event=...)``).

Events are small frozen dataclasses, each naming its endpoint. They are told
synchronously from the pool's own code paths (maintenance, the attempts
loop): a listener must return quickly and never block; work that waits
(sending to a collector, writing a file) is the listener's to schedule.
With no listener the cost is one attribute check where an event could be
told. A listener that raises is logged once, with the exception, and
removed: it never breaks the pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .outgoing import OutgoingRequest

__all__ = [
    "ConnectionDraining",
    "ConnectionEnded",
    "ConnectionOpened",
    "EndpointEjected",
    "EndpointRestored",
    "Event",
    "Listener",
    "Listeners",
    "RequestFinished",
    "RequestHedged",
    "RequestRetried",
    "RetryBudgetExhausted",
    "request_finished",
]

logger = logging.getLogger("h2pool.pool")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event.

    Attributes:
        endpoint: The endpoint's ``"host:port"``.
    """

    endpoint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOpened(Event):
    """A connection to ``endpoint`` is open and takes requests.

    Attributes:
        connection: The connection's id, unique in the process.
        http_version: ``"HTTP/2"`` or ``"HTTP/1.1"``.
        rtt: The round-trip time measured while connecting, in seconds, or None.
    """

    connection: int
    http_version: str
    rtt: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionDraining(Event):
    """A GOAWAY was sent or received: no new stream starts on the connection.

    Requests in flight on it finish (RFC 9113 section 6.8); the pool opens
    another connection if it needs one.

    Attributes:
        connection: The connection's id.
    """

    connection: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEnded(Event):
    """A connection is closed (told once per connection, after its ``ConnectionOpened``).

    Attributes:
        connection: The connection's id.
        error: Why it ended (``str`` of the error), or None for a clean close.
    """

    connection: int
    error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointEjected(Event):
    """``endpoint`` is out of rotation for ``duration`` seconds (outlier detection).

    Attributes:
        duration: Seconds until it may take requests again.
        reason: Why: failures in a row, gateway errors, or slow answers.
    """

    duration: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointRestored(Event):
    """``endpoint`` connected again after failing: it takes requests again.

    Attributes:
        failure: The failure it had before (``str`` of the error).
    """

    failure: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRetried(Event):
    """An attempt of a request failed and the request is retried.

    Attributes:
        method: The request's method.
        path: The request's path.
        reason: Why it is retried (the retry decision's reason).
        outcome: What the failed attempt got: a status code, or the name of
            the error class.
        delay: Seconds waited before the retry.
    """

    method: str
    path: str
    reason: str
    outcome: int | str
    delay: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHedged(Event):
    """A copy of a hedged request was sent (the second copy and after).

    ``endpoint`` is where the copies went so far: the last copy's endpoint
    is known only once it is routed.

    Attributes:
        method: The request's method.
        path: The request's path.
        copies: Copies sent so far, this one included.
    """

    method: str
    path: str
    copies: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudgetExhausted(Event):
    """The retry budget refused a retry (the request ends with what it got).

    Attributes:
        method: The request's method.
        path: The request's path.
        outcome: The status code or error class name the request ends with.
    """

    method: str
    path: str
    outcome: int | str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFinished(Event):
    """A request ended: its response headers arrived, or it failed.

    For ``pool.stream()`` it ends when the headers arrive (the body is the
    caller's). ``endpoint`` is that of its last attempt (``""`` if none was
    sent). Metrics exporters count requests and build latency histograms
    from it.

    Attributes:
        method: The request's method.
        path: The request's path.
        status: The status code, or None if it failed.
        error: The error class name (``"ConnectError"``, ``"RequestTimeout"``),
            or None if it got a status.
        duration: Seconds from the call to its end.
        attempts: Attempts sent on a connection (retries and hedges included).
    """

    method: str
    path: str
    status: int | None
    error: str | None
    duration: float
    attempts: int


#: A callable told of every event.
Listener = Callable[[Event], None]


class Listeners:
    """The listeners of one pool.

    Attributes:
        listening: The listeners, in the order they were added; the hot
            path's check is ``if listeners.listening:`` (an attribute and a
            list's truth, no call).
    """

    __slots__ = ("listening",)

    def __init__(self) -> None:
        self.listening: list[Listener] = []

    def add(self, listener: Listener) -> None:
        """Tell ``listener`` of every event from now on."""
        if not callable(listener):
            raise TypeError(f"a listener must be callable, not {type(listener).__name__}")
        self.listening.append(listener)

    def remove(self, listener: Listener) -> None:
        """Stop telling ``listener``; nothing if it is not listening."""
        if listener in self.listening:
            self.listening.remove(listener)

    def emit(self, event: Event) -> None:
        """Tell every listener of ``event``; one that raises is logged and removed."""
        for listener in tuple(self.listening):
            try:
                listener(event)
            except Exception:
                self.remove(listener)
                logger.exception(
                    "%s: an event listener raised on %s: removed",
                    event.endpoint,
                    type(event).__name__,
                    extra={"h2pool_endpoint": event.endpoint},
                )


def request_finished(
    request: OutgoingRequest, outcome: int | BaseException, started: float
) -> RequestFinished:
    """The event of ``request`` ending with ``outcome`` (a status or an error).

    ``started``: ``time.perf_counter()`` when it was called.
    """
    status = outcome if isinstance(outcome, int) else None
    return RequestFinished(
        endpoint=request.sent_to or "",
        method=request.method,
        path=request.path,
        status=status,
        error=None if status is not None else type(outcome).__name__,
        duration=time.perf_counter() - started,
        attempts=request.attempts,
    )
