"""The standard gRPC health check (``grpc.health.v1.Health/Check``), as a client.

See grpc/grpc ``doc/health-checking.md``. The messages are encoded by hand
(:mod:`.protobuf`): no protobuf dependency.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .._messages import fields_of
from .._pool.probes import Probe
from .errors import RpcError
from .framing import MessageDecoder, encode_message
from .protobuf import HealthStatus, decode_health_response, encode_health_request
from .responses import final_status, opening_status
from .status import StatusCode

__all__ = ["CHECK_METHOD", "endpoint_check", "health_check"]

if TYPE_CHECKING:  # the channel uses endpoint_check()
    from .channel import Channel

logger = logging.getLogger("h2pool.rpc")

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


def endpoint_check(service: str) -> Callable[[Probe], Awaitable[bool]]:
    """A pool health check asking each endpoint's health service about ``service``.

    As gRFC A17 says: an endpoint without a health service (UNIMPLEMENTED)
    counts as serving; one that does not know ``service`` (NOT_FOUND) does not.
    """
    request = encode_message(encode_health_request(service), None, None)

    async def check(probe: Probe) -> bool:
        response = await probe.request("POST", CHECK_METHOD, content=request)
        status = opening_status(response.status_code, fields_of(response.headers))
        if status is None:
            status = final_status(fields_of(response.trailers))
        if status.code is StatusCode.OK:
            decoder = MessageDecoder(None, None)
            messages = decoder.feed(response.content)
            return len(messages) == 1 and (
                decode_health_response(messages[0]) is HealthStatus.SERVING
            )
        if status.code is StatusCode.UNIMPLEMENTED:
            logger.debug("%s has no health service: taken as serving", probe.address)
            return True
        if status.code is StatusCode.NOT_FOUND:
            return False
        raise RpcError(status.code, status.details, method=CHECK_METHOD, endpoint=probe.address)

    return check
