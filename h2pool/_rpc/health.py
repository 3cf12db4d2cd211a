"""The standard gRPC health check (``grpc.health.v1.Health/Check``), as a client.

See grpc/grpc ``doc/health-checking.md``. The messages are encoded by hand
(:mod:`.protobuf`): no protobuf dependency.
"""

from __future__ import annotations

from .channel import Channel
from .errors import RpcError
from .protobuf import HealthStatus, decode_health_response, encode_health_request
from .status import StatusCode

__all__ = ["CHECK_METHOD", "health_check"]

CHECK_METHOD = "/grpc.health.v1.Health/Check"


async def health_check(
    channel: Channel, service: str = "", timeout: float | None = None
) -> HealthStatus:
    """Ask the server how ``service`` (``""``: the server as a whole) is doing.

    Returns:
        ``SERVING`` or ``NOT_SERVING`` as the server says; ``SERVICE_UNKNOWN``
        when it does not know the service (it answers NOT_FOUND).

    Raises:
        RpcError: The call failed (UNIMPLEMENTED: the server has no health
            service).
    """
    check = channel.unary_unary(
        CHECK_METHOD,
        request_serializer=encode_health_request,
        response_deserializer=decode_health_response,
    )
    try:
        status: HealthStatus = await check(service, timeout=timeout)
    except RpcError as exc:
        if exc.code() is StatusCode.NOT_FOUND:
            return HealthStatus.SERVICE_UNKNOWN
        raise
    return status
