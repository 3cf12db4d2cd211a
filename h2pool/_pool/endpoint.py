"""One endpoint, a replica of the service at one ``host:port``.

Its connections, connectivity state, backoff and ejection.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from .._exceptions import ConnectError, H2PoolError
from .balancer import PeakEwma, cost
from .policies import (
    ConnectionBackoff,
    EjectionPolicy,
    backoff_delay,
    ejection_duration,
    may_eject,
)

__all__ = [
    "ConnectionView",
    "ConnectivityState",
    "Endpoint",
    "EndpointStats",
    "backup_addresses",
    "eject_outlier",
    "rotation",
    "serving_tier",
    "split_address",
    "unreachable",
]


class ConnectionView(Protocol):
    """What routing and endpoint bookkeeping read of a connection; all reads, no effects.

    Attributes:
        reserved: Slots handed to requests that have not opened their
            stream yet (the scheduler's reservations, as Go's
            ``reserveNewRequest``): two requests never take the last slot.
    """

    reserved: int

    @property
    def functional(self) -> bool:
        """False once the connection failed or closed."""
        ...

    @property
    def accepting_streams(self) -> bool:
        """Whether new requests may be sent on it (no GOAWAY, not closing)."""
        ...

    @property
    def open_streams(self) -> int:
        """Requests in progress on it."""
        ...

    @property
    def max_streams(self) -> int:
        """How many requests it may carry at once."""
        ...

    @property
    def last_received(self) -> float:
        """Event-loop time of the latest proof of life."""
        ...

    @property
    def ping_interval(self) -> float:
        """Silence before a health PING (HTTP/2)."""
        ...

    @property
    def rtt(self) -> float | None:
        """Latest measured round trip, if any."""
        ...


ConnT = TypeVar("ConnT", bound=ConnectionView)


class ConnectivityState(enum.Enum):
    """Connectivity of an endpoint, as gRPC names them."""

    IDLE = "idle"  #: no connection and none being opened
    CONNECTING = "connecting"  #: a connection is being opened, none is ready
    READY = "ready"  #: at least one connection takes new streams
    TRANSIENT_FAILURE = "transient_failure"  #: the last attempt failed; backing off
    SHUTDOWN = "shutdown"  #: the pool is closed


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """A snapshot of one endpoint, for people and metrics exporters.

    Attributes:
        address: ``"host:port"``.
        state: Connectivity state.
        connections: Connections taking new streams.
        draining: Connections finishing their streams after GOAWAY.
        open_streams: Streams open over all its connections.
        rtt: Latest PING round trip of its connections, in seconds.
        consecutive_failures: Failures since the last success.
        ejections: How many times it was ejected so far.
        ejected: Whether it is ejected now.
        last_error: The latest failure, as text.
        ping_interval: Silence before a health PING, once the peer asked
            for fewer pings (GOAWAY ``too_many_pings``); None before.
        tier: 0 for a primary endpoint, 1 for a backup (``backup_endpoints``).
        latency: The balancer's latency estimate (peak-EWMA of the answers'
            latencies, decayed to now), in seconds; None before any answer.
        outstanding: Requests sent or about to be (slots reserved) on its
            connections.
        score: The p2c balancer's cost: ``latency x (outstanding + 1)``
            (lowest is chosen; see docs/resilience.md); None before any answer.
        ejection_reason: Why it was last ejected (failures in a row, or
            gateway errors in a row), None if never.
    """

    address: str
    state: ConnectivityState
    connections: int
    draining: int
    open_streams: int
    rtt: float | None
    consecutive_failures: int
    ejections: int
    ejected: bool
    last_error: str | None
    ping_interval: float | None
    tier: int
    latency: float | None
    outstanding: int
    score: float | None
    ejection_reason: str | None


def split_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[v6]:port"`` for IPv6) into host and port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"endpoint {address!r} is not 'host:port'")
    return host.removeprefix("[").removesuffix("]"), int(port)


@dataclass(eq=False)
class Endpoint(Generic[ConnT]):
    """Mutable state of one endpoint, owned and changed by the pool only.

    Attributes:
        address: ``"host:port"`` as given or resolved.
        connections: Its open connections, live or draining.
        connecting: Connection attempts in progress.
        attempts_end: Event-loop time by which the attempts in progress end
            (their connect timeout), at the latest.
        max_connections: Most live or opening connections (HTTP/2 and
            HTTP/1.1 endpoints have their own limits).
        http1: Speak HTTP/1.1 unless TLS's ALPN chooses HTTP/2; set when
            ALPN chose HTTP/1.1 once, or a cleartext server did not answer
            HTTP/2's preface as HTTP/2 (see :mod:`.connect`).
        max_streams: The latest stream limit of its connections (the peer's
            MAX_CONCURRENT_STREAMS capped by the pool), used to guess what a
            connection being opened will hold.
        ping_interval: Silence before a PING, once a peer asked for fewer pings.
        last_failure: The latest failure, if the endpoint failed since its
            last success.
        tier: 0 for a primary endpoint, 1 for a backup (``backup_endpoints``):
            a tier takes requests only while no lower tier has a usable endpoint.
        latency: The latency of its answers, for the balancer (peak-EWMA).
        gateway_failures: Answers in a row that were gateway errors (502,
            503, 504 by default; see ``EjectionPolicy``).
        gateway_failures_reset: What the latest other answer reset
            ``gateway_failures`` from: an answer the pool took for a success
            may be recounted as a gateway error (:meth:`recount_gateway_failure`).
        ejection_reason: Why it was last ejected.
    """

    address: str
    connections: list[ConnT] = field(default_factory=list)
    connecting: int = 0
    attempts_end: float = 0.0
    max_connections: int = 4
    http1: bool = False
    max_streams: int = 100
    consecutive_failures: int = 0
    next_attempt_at: float = 0.0
    ejections: int = 0
    ejected_until: float = 0.0
    last_error: str | None = None
    last_failure: BaseException | None = None
    ping_interval: float | None = None
    closed: bool = False
    tier: int = 0
    latency: PeakEwma = field(default_factory=PeakEwma)
    gateway_failures: int = 0
    gateway_failures_reset: int = 0
    ejection_reason: str | None = None

    def __post_init__(self) -> None:
        self.host, self.port = split_address(self.address)

    def ready(self) -> list[ConnT]:
        """Connections that take new streams now (a pure read)."""
        return [conn for conn in self.connections if conn.accepting_streams]

    def prune(self) -> None:
        """Drop connections that ended; remember a peer that asked for fewer pings.

        Called on connection events, never while routing.
        """
        kept = []
        for conn in self.connections:
            if conn.functional:
                kept.append(conn)
            elif conn.ping_interval > (self.ping_interval or 0):
                self.ping_interval = conn.ping_interval  # the peer asked for fewer pings
        self.connections = kept

    def ejected(self, now: float) -> bool:
        """Whether the endpoint is out of rotation at ``now``."""
        return now < self.ejected_until

    def usable(self, now: float) -> bool:
        """Whether the endpoint may take requests now, as far as tiers go (a pure read).

        Not ejected, and either live or not failing: one that failed since
        its last success comes back only with a new connection (proof of
        life), also once an ejection ended (ejecting forgets the count of
        failures, not the failure).
        """
        return (
            not self.closed
            and not self.ejected(now)
            and (self.last_failure is None or bool(self.ready()))
        )

    def may_connect(self, now: float) -> bool:
        """Whether a new connection attempt is allowed (not backing off, not ejected)."""
        return not self.closed and now >= self.next_attempt_at and not self.ejected(now)

    def state(self, now: float) -> ConnectivityState:
        """The connectivity state at ``now``."""
        if self.closed:
            return ConnectivityState.SHUTDOWN
        if self.ready():
            return ConnectivityState.READY
        if self.connecting:
            return ConnectivityState.CONNECTING
        if self.consecutive_failures:
            return ConnectivityState.TRANSIENT_FAILURE
        return ConnectivityState.IDLE

    def add(self, connection: ConnT, http1: bool, http1_max_connections: int) -> None:
        """A connection opened (``http1``: it speaks HTTP/1.1): use it, forget past failures."""
        self.connections.append(connection)
        self.max_streams = connection.max_streams
        if http1 and not self.http1:
            # ALPN chose HTTP/1.1: one request per connection from now on.
            self.http1 = True
            self.max_connections = http1_max_connections
        self.record_success()

    def record_success(self) -> None:
        """A connection opened: forget past failures."""
        self.consecutive_failures = 0
        self.next_attempt_at = 0.0
        self.last_failure = None

    def record_failure(
        self, now: float, error: BaseException, backoff: ConnectionBackoff | None
    ) -> None:
        """Count a failure: a connection attempt (``backoff`` given) or a connection died.

        Only failed attempts delay the next one; a connection that worked and
        then died is replaced at once, as gRPC does.
        """
        self.consecutive_failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        self.last_failure = error
        if backoff is not None:
            self.next_attempt_at = now + backoff_delay(backoff, self.consecutive_failures)

    def eject(self, now: float, policy: EjectionPolicy, reason: str) -> float:
        """Take the endpoint out of rotation for ``reason``; returns for how long."""
        self.ejections += 1
        duration = ejection_duration(policy, self.ejections)
        self.ejected_until = now + duration
        self.ejection_reason = reason
        self.consecutive_failures = 0
        self.gateway_failures = self.gateway_failures_reset = 0
        return duration

    def answered(
        self, status: int | None, latency: float, now: float, policy: EjectionPolicy
    ) -> str | None:
        """Record an attempt's outcome: its status, or None for an error, after ``latency`` s.

        The latency feeds the balancer's estimate (an error or a gateway
        error may raise it, never lower it: an endpoint that fails fast must
        not look fast). An answer counts toward outlier detection: a gateway
        error adds one to the streak, any other answer resets it; errors
        leave it alone (they are counted on connections).

        Returns:
            Why the endpoint should be ejected now, or None.
        """
        if status is None:
            self.latency.observe(latency, now, lower=False)
            return None
        gateway = status in policy.gateway_statuses
        self.latency.observe(latency, now, lower=not gateway)
        if not gateway:
            self.gateway_failures_reset, self.gateway_failures = self.gateway_failures, 0
            return None
        self.gateway_failures += 1
        return self._outlier(now, policy, f"status {status}")

    def rpc_unavailable(self, now: float, policy: EjectionPolicy) -> str | None:
        """The latest answer, counted as a success, was a gRPC UNAVAILABLE after all.

        gRPC's status comes in an HTTP 200 answer (in its trailers), told
        after the pool counted the 200: the streak that 200 reset is
        restored, plus one. Returns why the endpoint should be ejected now,
        or None.
        """
        if not self.gateway_failures:
            self.gateway_failures = self.gateway_failures_reset
        self.gateway_failures_reset = 0
        self.gateway_failures += 1
        return self._outlier(now, policy, "gRPC UNAVAILABLE")

    def _outlier(self, now: float, policy: EjectionPolicy, last: str) -> str | None:
        streak, limit = self.gateway_failures, policy.consecutive_gateway_failures
        if not limit or streak < limit or self.ejected(now):
            return None
        return f"{streak} gateway errors in a row, the last: {last}"

    def outstanding(self) -> int:
        """Requests sent, or with a slot reserved, on its connections (a pure read)."""
        return sum(conn.open_streams + conn.reserved for conn in self.connections)

    def stats(self, now: float) -> EndpointStats:
        """A snapshot of the endpoint."""
        live = self.ready()
        rtts = [conn.rtt for conn in self.connections if conn.rtt is not None]
        latency = self.latency.value(now)
        outstanding = self.outstanding()
        return EndpointStats(
            address=self.address,
            state=self.state(now),
            connections=len(live),
            draining=len(self.connections) - len(live),
            open_streams=sum(conn.open_streams for conn in self.connections),
            rtt=min(rtts) if rtts else None,
            consecutive_failures=self.consecutive_failures,
            ejections=self.ejections,
            ejected=self.ejected(now),
            last_error=self.last_error,
            ping_interval=self.ping_interval,
            tier=self.tier,
            latency=latency,
            outstanding=outstanding,
            score=None if latency is None else cost(latency, outstanding),
            ejection_reason=self.ejection_reason,
        )


def rotation(endpoints: Sequence[Endpoint[ConnT]], now: float) -> Sequence[Endpoint[ConnT]]:
    """The endpoints that take new requests at ``now``, of open ``endpoints`` (a pure read).

    Those not ejected (all of them when every one is), of the lowest tier
    that has a usable endpoint (Envoy's priority levels): backups take
    requests only while no primary is usable. When no tier has one, every
    tier is in play, so that whichever endpoint comes back first is used.
    """
    in_rotation = [ep for ep in endpoints if not ep.ejected(now)] or list(endpoints)
    if all(ep.tier == 0 for ep in in_rotation):
        return in_rotation  # no backups: the commonest case
    for tier in sorted({ep.tier for ep in in_rotation}):
        members = [ep for ep in in_rotation if ep.tier == tier]
        if any(ep.usable(now) for ep in members):
            return members
    return in_rotation


def serving_tier(endpoints: Sequence[Endpoint[ConnT]], now: float) -> int:
    """The highest tier :func:`rotation` puts in play at ``now`` (a pure read).

    Maintenance keeps connections to the endpoints of this tier, retries
    those of lower tiers (failing: they may come back), and leaves the
    higher ones (backups while a primary serves) unconnected.
    """
    return max((ep.tier for ep in rotation(endpoints, now)), default=0)


def eject_outlier(
    endpoints: Sequence[Endpoint[ConnT]],
    endpoint: Endpoint[ConnT],
    now: float,
    policy: EjectionPolicy,
    reason: str,
) -> float | None:
    """Eject ``endpoint`` of ``endpoints`` for ``reason``, unless too many are out.

    Never the last endpoint in play, nor more than the policy's share
    (:func:`~.policies.may_eject`). Returns how long it is out, or None.
    """
    in_play = [ep for ep in endpoints if not ep.closed]
    if not may_eject(policy, len(in_play), sum(ep.ejected(now) for ep in in_play)):
        return None
    return endpoint.eject(now, policy, reason)


def unreachable(endpoints: Sequence[Endpoint[ConnT]]) -> H2PoolError | None:
    """The error of a request that no endpoint can take, or None while one still may.

    That is when every endpoint failed its latest connection attempt (none is
    ready, none is connecting, none is untried), so that a refused port, a
    failed TLS handshake or a certificate says so at once (gRPC's fail-fast,
    ``wait_for_ready=False``). A single endpoint's error is its last failure;
    several make one naming each endpoint and its last failure, of their
    class when they all have one (a ``CertificateVerifyError`` stays one),
    else ``ConnectError``, raised ``from`` the last failure. A pure read.
    """
    failures: list[tuple[str, H2PoolError]] = []
    for endpoint in endpoints:
        failure = endpoint.last_failure
        if endpoint.ready() or endpoint.connecting or not isinstance(failure, H2PoolError):
            return None  # still reachable, being tried, or never tried
        failures.append((endpoint.address, failure))
    if len(failures) <= 1:
        return failures[0][1] if failures else None
    causes = "; ".join(
        str(failure) if address in str(failure) else f"{address}: {failure}"
        for address, failure in failures
    )
    kinds = {type(failure) for _, failure in failures}
    kind = kinds.pop() if len(kinds) == 1 else ConnectError
    error = kind(f"no endpoint could be reached: {causes}")
    error.__cause__ = failures[-1][1]
    return error


def backup_addresses(backups: Sequence[str] | None, endpoints: Sequence[str] | None) -> list[str]:
    """The backup endpoints as a list, each ``"host:port"`` once and not a primary too."""
    if backups is None:
        return []
    if isinstance(backups, str | bytes):
        raise TypeError("backup_endpoints must be a list of 'host:port', not a single str")
    listed = list(backups)
    for address in listed:
        if not isinstance(address, str):
            raise TypeError(f"backup_endpoints must hold str, not {type(address).__name__}")
        split_address(address)  # ValueError naming it
    if len(set(listed)) != len(listed):
        raise ValueError(f"backup_endpoints lists an endpoint twice: {listed}")
    both = set(listed) & set(endpoints or ())
    if both:
        raise ValueError(f"{sorted(both)} both in endpoints and in backup_endpoints")
    return listed
