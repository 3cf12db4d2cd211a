"""h2pool: multiplexed HTTP/2 connections for asyncio, with tickless health checks.

The public API is flat: import everything from ``h2pool``. Modules whose
names start with an underscore are private.
"""

import logging
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes as ErrorCode

from ._adapters.httpcore import AsyncConnectionPool
from ._core.config import H2Config
from ._core.endpoints import (
    open_connection,
    open_unix_connection,
    start_server,
    start_unix_server,
)
from ._core.headers import HeaderList, HeadersIn
from ._core.health import PingBudget
from ._core.priority import Priority
from ._core.protocol import ConnectionEvent, H2Protocol
from ._core.tls import client_ssl_context, server_ssl_context
from ._exceptions import (
    CertificateVerifyError,
    ConnectError,
    ConnectionClosed,
    ConnectionDead,
    ConnectionLost,
    ConnectTimeout,
    DrainInterrupted,
    H2ConnectionError,
    H2PoolError,
    H2ProtocolError,
    H2TimeoutError,
    LocalProtocolError,
    PoolClosed,
    PoolOverloaded,
    PoolTimeout,
    ReadTimeout,
    RequestTimeout,
    ResponseNotRead,
    StreamClosed,
    StreamError,
    StreamRefused,
    StreamReset,
    WriteTimeout,
)
from ._messages import Headers, Request
from ._pool.budget import RetryBudget
from ._pool.deadlines import deadline
from ._pool.endpoint import ConnectivityState, EndpointStats
from ._pool.hedging import HedgePolicy
from ._pool.policies import ConnectionBackoff, EjectionPolicy, RetryPolicy
from ._pool.pool import Pool, PoolStats
from ._pool.probes import HealthCheck, Probe
from ._pool.response import HTTPStatusError, Response
from ._pool.timeouts import Timeouts
from ._sync.pool import SyncPool, SyncResponse

if TYPE_CHECKING:
    from ._adapters.httpx import AsyncHTTPTransport
    from ._adapters.httpx_sync import SyncHTTPTransport

__version__ = "0.1.0"

# A library logs; the application decides where to: without its own logging set-up,
# h2pool's records go nowhere (not to stderr through logging's last resort).
logging.getLogger("h2pool").addHandler(logging.NullHandler())

__all__ = [
    "AsyncConnectionPool",
    "AsyncHTTPTransport",
    "CertificateVerifyError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionBackoff",
    "ConnectionClosed",
    "ConnectionDead",
    "ConnectionEvent",
    "ConnectionLost",
    "ConnectivityState",
    "DrainInterrupted",
    "EjectionPolicy",
    "EndpointStats",
    "ErrorCode",
    "H2Config",
    "H2ConnectionError",
    "H2PoolError",
    "H2Protocol",
    "H2ProtocolError",
    "H2TimeoutError",
    "HTTPStatusError",
    "HeaderList",
    "Headers",
    "HeadersIn",
    "HealthCheck",
    "HedgePolicy",
    "LocalProtocolError",
    "PingBudget",
    "Pool",
    "PoolClosed",
    "PoolOverloaded",
    "PoolStats",
    "PoolTimeout",
    "Priority",
    "Probe",
    "ReadTimeout",
    "Request",
    "RequestTimeout",
    "Response",
    "ResponseNotRead",
    "RetryBudget",
    "RetryPolicy",
    "StreamClosed",
    "StreamError",
    "StreamRefused",
    "StreamReset",
    "SyncHTTPTransport",
    "SyncPool",
    "SyncResponse",
    "Timeouts",
    "WriteTimeout",
    "client_ssl_context",
    "deadline",
    "open_connection",
    "open_unix_connection",
    "server_ssl_context",
    "start_server",
    "start_unix_server",
]


def __getattr__(name: str) -> Any:
    # httpx is optional: its transports are imported on first use only.
    if name == "AsyncHTTPTransport":
        try:
            from ._adapters.httpx import AsyncHTTPTransport
        except ImportError as exc:  # pragma: no cover - depends on what is installed
            raise ImportError("h2pool.AsyncHTTPTransport needs httpx: pip install httpx") from exc
        return AsyncHTTPTransport
    if name == "SyncHTTPTransport":
        try:
            from ._adapters.httpx_sync import SyncHTTPTransport
        except ImportError as exc:  # pragma: no cover - depends on what is installed
            raise ImportError("h2pool.SyncHTTPTransport needs httpx: pip install httpx") from exc
        return SyncHTTPTransport
    raise AttributeError(f"module 'h2pool' has no attribute {name!r}")
