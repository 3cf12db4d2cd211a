"""The pool's connection options, checked and gathered into :class:`MaintenanceSettings`.

:class:`~.pool.Pool` takes many keywords; those that shape connections and
endpoints are checked here (a wrong one raises before anything starts) and
become the frozen settings maintenance and every connection read.
"""

from __future__ import annotations

import os
import ssl as ssl_module
from collections.abc import Collection
from typing import Literal

from .._core.config import H2Config
from .._core.health import PingBudget
from .._core.tls import client_ssl_context
from .balancer import check_balancer
from .checks import check_count, check_seconds
from .connect import ChannelSettings
from .maintenance import MaintenanceSettings
from .policies import ConnectionBackoff, EjectionPolicy
from .subset import check_subset
from .timeouts import Timeouts
from .urls import Target

__all__ = ["maintenance_settings"]


def maintenance_settings(
    parts: Target,
    *,
    ssl: ssl_module.SSLContext | bool | None,
    functional_timeout: float,
    connect_timeout: float,
    timeouts: Timeouts,
    http1: bool | Literal["never"] | Collection[str],
    min_connections: int,
    max_connections: int,
    http1_max_connections: int,
    max_streams_per_connection: int,
    backoff: ConnectionBackoff | None,
    ejection: EjectionPolicy | None,
    config: H2Config | None,
    resolve_interval: float,
    ping_budget: PingBudget | None,
    tcp_keepalive: float | None,
    subset_size: int | None,
    subset_client: tuple[int, int] | None,
    balancer: str,
) -> MaintenanceSettings:
    """Check the connection options of a :class:`~.pool.Pool` and gather them.

    Arguments are the pool's keywords of the same names (see its docstring);
    ``parts`` is its parsed target and ``timeouts`` its default timeouts.

    Raises:
        TypeError: An option of a wrong type, named.
        ValueError: An option out of range, named.
    """
    functional = check_seconds("functional_timeout", functional_timeout)
    connect = check_seconds("connect_timeout", connect_timeout)
    resolve = check_seconds("resolve_interval", resolve_interval, zero=True, unbounded=True)
    assert functional is not None
    assert connect is not None
    assert resolve is not None
    check_seconds("tcp_keepalive", tcp_keepalive, optional=True)
    if ping_budget is not None and not isinstance(ping_budget, PingBudget):
        raise TypeError(
            f"ping_budget must be a PingBudget or None, not {type(ping_budget).__name__}"
        )
    check_count("min_connections", min_connections, 0)
    check_count("max_connections", max_connections, 1)
    check_count("http1_max_connections", http1_max_connections, 1)
    check_count("max_streams_per_connection", max_streams_per_connection, 1)
    if min_connections > max_connections:
        raise ValueError("min_connections must be <= max_connections")
    tls = parts.scheme == "https"
    if isinstance(http1, str) and http1 != "never":
        raise ValueError(f"http1 must be a bool, 'never' or a collection of endpoints: {http1!r}")
    alpn = ("h2",) if http1 == "never" else ("h2", "http/1.1")
    if not tls and ssl not in (None, False):
        raise ValueError("ssl is only for https targets")
    host = parts.host
    context: ssl_module.SSLContext | None = None
    if tls:
        if isinstance(ssl, ssl_module.SSLContext):
            context = ssl
            # As httpcore does: the context offers what the pool speaks.
            context.set_alpn_protocols(list(alpn))
        else:
            context = client_ssl_context(verify=ssl is not False, alpn=alpn)
    check_subset(subset_size, subset_client)
    return MaintenanceSettings(
        channel=ChannelSettings(
            scheme=parts.scheme,
            authority=parts.authority,
            server_hostname=host,
            ssl=context,
            functional_timeout=functional,
            max_streams=max_streams_per_connection,
            config=config,
            ping_budget=ping_budget,
            tcp_keepalive=tcp_keepalive,
            http1_fallback=http1 != "never",
        ),
        # "never": no endpoint forced to HTTP/1.1 (and no fallback above).
        http1=http1 if isinstance(http1, bool) else frozenset(() if http1 == "never" else http1),
        min_connections=min_connections,
        max_connections=max_connections,
        http1_max_connections=http1_max_connections,
        # A Timeouts(connect=...) given as the pool's timeout bounds every attempt.
        connect_timeout=timeouts.connect or connect,
        backoff=backoff or ConnectionBackoff(),
        ejection=ejection or EjectionPolicy(),
        resolve_interval=resolve,
        subset_size=subset_size,
        subset_client=subset_client,
        subset_seed=os.urandom(16),  # this pool's own random subset
        balancer=check_balancer(balancer),
    )
