"""h2pool.rpc: a gRPC client on the pool, compatible with grpc.aio.

Code written for ``grpc.aio`` (generated stubs included) runs on an
:class:`Channel` unchanged, and gains the pool's several connections per
replica, tickless health checks, transparent retries of calls a server never
processed, and failover across replicas. See ``docs/rpc.md``.
"""

from ._rpc.call import Call, UnaryUnaryCall
from ._rpc.channel import (
    Channel,
    StreamStreamMultiCallable,
    StreamUnaryMultiCallable,
    UnaryStreamMultiCallable,
    UnaryUnaryMultiCallable,
    insecure_channel,
    secure_channel,
)
from ._rpc.compression import Compression
from ._rpc.errors import EOF, RpcError
from ._rpc.health import health_check
from ._rpc.interceptors import (
    ClientCallDetails,
    ClientInterceptor,
    InterceptedCall,
    StreamStreamClientInterceptor,
    StreamUnaryClientInterceptor,
    UnaryStreamClientInterceptor,
    UnaryUnaryClientInterceptor,
)
from ._rpc.metadata import Metadata
from ._rpc.protobuf import HealthStatus
from ._rpc.status import StatusCode
from ._rpc.streams import StreamStreamCall, StreamUnaryCall, UnaryStreamCall

__all__ = [
    "EOF",
    "Call",
    "Channel",
    "ClientCallDetails",
    "ClientInterceptor",
    "Compression",
    "HealthStatus",
    "InterceptedCall",
    "Metadata",
    "RpcError",
    "StatusCode",
    "StreamStreamCall",
    "StreamStreamClientInterceptor",
    "StreamStreamMultiCallable",
    "StreamUnaryCall",
    "StreamUnaryClientInterceptor",
    "StreamUnaryMultiCallable",
    "UnaryStreamCall",
    "UnaryStreamClientInterceptor",
    "UnaryStreamMultiCallable",
    "UnaryUnaryCall",
    "UnaryUnaryClientInterceptor",
    "UnaryUnaryMultiCallable",
    "health_check",
    "insecure_channel",
    "secure_channel",
]
