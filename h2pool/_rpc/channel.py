"""The gRPC channel: multi-callables on a :class:`~h2pool.Pool`, shaped like grpc.aio's.

A channel owns one pool (many connections per replica, tickless health,
failover); every call is one HTTP/2 stream on it. Code written for
``grpc.aio.Channel``, generated stubs included, runs on it unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from typing import Any

from .. import __version__
from .._core.health import PingBudget
from .._pool.deadlines import caller_deadline, earliest, remaining
from .._pool.pool import Pool
from .._pool.probes import HealthCheck
from .call import Call, Deserializer, Invocation, Serializer, UnaryUnaryCall
from .compression import ACCEPT_ENCODING, Compression, codec_for
from .config import ChannelOptions, ServiceConfig, parse_options, parse_service_config
from .health import endpoint_check
from .interceptors import ClientCallDetails, InterceptedCall, interceptors_for
from .metadata import Metadata, MetadataIn, encode_metadata
from .retry import RetryThrottle
from .streams import StreamStreamCall, StreamUnaryCall, UnaryStreamCall

__all__ = [
    "Channel",
    "StreamStreamMultiCallable",
    "StreamUnaryMultiCallable",
    "UnaryStreamMultiCallable",
    "UnaryUnaryMultiCallable",
    "insecure_channel",
    "secure_channel",
]

logger = logging.getLogger("h2pool.rpc")


def _smaller(first: int | None, second: int | None) -> int | None:
    """The lower of two limits (None: no limit)."""
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)


class _MultiCallable:
    """Makes calls of one method; the four kinds differ in the call they make."""

    _kind = ""

    def __init__(
        self,
        channel: Channel,
        method: str,
        serializer: Serializer | None,
        deserializer: Deserializer | None,
    ) -> None:
        if not isinstance(method, str) or not method.startswith("/"):
            raise ValueError(f"method must be '/package.Service/Method', not {method!r}")
        self._channel = channel
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer
        self._interceptors = interceptors_for(self._kind, channel.interceptors)
        self._config = channel.service_config.for_method(method)

    def _invocation(
        self,
        method: str,
        timeout: float | None,
        metadata: MetadataIn | None,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Compression | int | None,
    ) -> Invocation:
        channel = self._channel
        if credentials is not None:
            raise ValueError(
                "call credentials are not supported by h2pool.rpc: put the token in metadata"
            )
        config = (
            self._config if method == self._method else channel.service_config.for_method(method)
        )
        if config.timeout is not None and (timeout is None or config.timeout < timeout):
            timeout = config.timeout  # the service config sets the longest a call may take
        loop = asyncio.get_running_loop()
        if timeout is not None and not timeout == timeout:  # NaN
            raise ValueError(f"timeout must be a number of seconds, not {timeout!r}")
        deadline = None if timeout is None else loop.time() + timeout
        caller = caller_deadline()
        if caller is not None:  # h2pool.deadline(): the earlier one, sent as grpc-timeout
            deadline = earliest(deadline, loop.time() + remaining(caller))
        if wait_for_ready is None:
            # The call's choice, else the service config's, else the channel's.
            wait_for_ready = (
                channel.wait_for_ready if config.wait_for_ready is None else config.wait_for_ready
            )
        codec = codec_for(channel.compression if compression is None else compression)
        headers = encode_metadata(metadata) if metadata else []
        if codec is not None:
            headers.append((b"grpc-encoding", codec.name))
        options = channel.options
        return Invocation(
            pool=channel.pool,
            method=method,
            headers=headers,
            deadline=deadline,
            wait_for_ready=wait_for_ready,
            codec=codec,
            max_send=_smaller(options.max_send_bytes, config.max_request_bytes),
            max_receive=_smaller(options.max_receive_bytes, config.max_response_bytes),
            retry=config.retry,
            throttle=channel.throttle,
            serializer=self._serializer,
            deserializer=self._deserializer,
        )

    def _make(self, invocation: Invocation, request: Any) -> Call:
        raise NotImplementedError

    def _start(
        self,
        request: Any,
        timeout: float | None,
        metadata: MetadataIn | None,
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Compression | int | None,
    ) -> Any:
        channel = self._channel
        channel.check_open()
        if not self._interceptors:
            call = self._make(
                self._invocation(
                    self._method, timeout, metadata, credentials, wait_for_ready, compression
                ),
                request,
            )
            channel.track(call)
            return call

        def make(details: ClientCallDetails, request: Any) -> Call:
            method = details.method
            call = self._make(
                self._invocation(
                    method.decode() if isinstance(method, bytes) else method,
                    details.timeout,
                    details.metadata,
                    details.credentials,
                    details.wait_for_ready,
                    compression,
                ),
                request,
            )
            channel.track(call)
            return call

        # As grpc.aio gives them: the method as bytes, the metadata as a Metadata.
        details = ClientCallDetails(
            self._method.encode(),
            timeout,
            metadata if isinstance(metadata, Metadata) else Metadata.from_tuple(metadata),
            credentials,
            wait_for_ready,
        )
        return InterceptedCall(self._kind, self._interceptors, details, request, make)

    def __call__(
        self,
        request: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataIn | None = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Compression | int | None = None,
    ) -> Any:
        """Start a call (at once, as grpc.aio does) and return it.

        Args:
            request: The request message (unary requests), or an iterable or
                async iterable of them (stream requests; None: ``write()``).
            timeout: Seconds the call may take (its deadline), or None.
            metadata: Metadata sent with the request.
            credentials: Not supported (None).
            wait_for_ready: When no endpoint is ready, wait for one within the
                deadline (True) or fail at once with UNAVAILABLE (False, the
                default, unless the service config says otherwise).
            compression: Compression of this call's request messages.
        """
        return self._start(request, timeout, metadata, credentials, wait_for_ready, compression)


class UnaryUnaryMultiCallable(_MultiCallable):
    """Makes unary-unary calls: ``response = await multicallable(request)``."""

    _kind = "unary_unary"

    def _make(self, invocation: Invocation, request: Any) -> Call:
        return UnaryUnaryCall(invocation, request)


class UnaryStreamMultiCallable(_MultiCallable):
    """Makes unary-stream calls: ``async for response in multicallable(request)``."""

    _kind = "unary_stream"

    def _make(self, invocation: Invocation, request: Any) -> Call:
        return UnaryStreamCall(invocation, request)


class StreamUnaryMultiCallable(_MultiCallable):
    """Makes stream-unary calls: ``response = await multicallable(request_iterator)``."""

    _kind = "stream_unary"

    def _make(self, invocation: Invocation, request: Any) -> Call:
        return StreamUnaryCall(invocation, request)


class StreamStreamMultiCallable(_MultiCallable):
    """Makes stream-stream calls: ``call = multicallable(); await call.write(...)``."""

    _kind = "stream_stream"

    def _make(self, invocation: Invocation, request: Any) -> Call:
        return StreamStreamCall(invocation, request)


class Channel:
    """A gRPC channel on a pool of HTTP/2 connections, used like ``grpc.aio.Channel``.

    Args:
        target: ``http://host:port`` or ``https://host:port``.
        endpoints: ``"host:port"`` of each replica (else the target's host
            is resolved), as for :class:`~h2pool.Pool`.
        interceptors: grpc.aio-style client interceptors, outermost first.
        compression: Compression of request messages for every call.
        service_config: gRPC service config, a dict or JSON text
            (``methodConfig``: timeouts, waitForReady, message limits,
            retryPolicy; ``retryThrottling``).
        options: grpc channel options as ``(name, value)`` pairs; see the docs
            for those understood.
        health_check_service: Ask each endpoint's standard health service
            (``grpc.health.v1``) about this service (``""``: the server)
            every ``health_check_interval`` seconds; endpoints not serving
            are out of rotation until they serve. None: the service
            config's ``healthCheckConfig.serviceName`` (gRFC A17), else no
            such check.
        health_check_interval: Seconds between two checks of an endpoint.
        **pool_options: Any other keyword of :class:`~h2pool.Pool`.
    """

    def __init__(
        self,
        target: str,
        *,
        endpoints: Sequence[str] | None = None,
        interceptors: Sequence[Any] | None = None,
        compression: Compression | int | None = None,
        service_config: str | Mapping[str, Any] | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        health_check_service: str | None = None,
        health_check_interval: float = 5.0,
        **pool_options: Any,
    ) -> None:
        self.options: ChannelOptions = parse_options(options)
        if service_config is not None:
            config = parse_service_config(service_config)
        else:
            config = self.options.service_config or parse_service_config(None)
        self.service_config: ServiceConfig = config
        self.compression = Compression(compression or 0)
        self.interceptors = list(interceptors or ())
        for interceptor in self.interceptors:
            if not any(interceptors_for(kind, [interceptor]) for kind in _KINDS):
                raise TypeError(f"not a client interceptor: {interceptor!r}")
        agent = f"h2pool-rpc/{__version__}"
        if self.options.primary_user_agent:
            agent = f"{self.options.primary_user_agent} {agent}"
        headers = [
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", agent),
            ("grpc-accept-encoding", ACCEPT_ENCODING.decode()),
        ]
        # gRPC calls have no deadline unless given one; gRPC's default is to
        # fail fast when no endpoint is ready (each call passes its own).
        pool_options.setdefault("timeout", None)
        pool_options.setdefault("wait_for_ready", False)
        self.wait_for_ready = bool(pool_options["wait_for_ready"])
        if self.options.keepalive_timeout is not None:
            pool_options.setdefault("functional_timeout", self.options.keepalive_timeout)
        if self.options.keepalive_time is not None:
            # grpc's keepalive_time is how often the server lets a client ping:
            # the ping budget's period once its quick PINGs are spent.
            pool_options.setdefault(
                "ping_budget", PingBudget(pings=2, period=self.options.keepalive_time)
            )
        if health_check_service is None:
            health_check_service = config.health_check_service
        if health_check_service is not None:
            pool_options["health_check"] = HealthCheck(
                check=endpoint_check(health_check_service), interval=health_check_interval
            )
        self.pool = Pool(target, endpoints=endpoints, headers=headers, **pool_options)
        # retryThrottling (A6) and the pool's retry budget bound the calls' retries together.
        self.throttle = RetryThrottle(config.throttling, self.pool._retry_spending)
        self._calls: set[Any] = set()
        self._closing = False

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        **kwargs: Any,
    ) -> UnaryUnaryMultiCallable:
        """A multi-callable for a unary-unary method (``kwargs`` from stubs are accepted)."""
        return UnaryUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        **kwargs: Any,
    ) -> UnaryStreamMultiCallable:
        """A multi-callable for a unary-stream method."""
        return UnaryStreamMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        **kwargs: Any,
    ) -> StreamUnaryMultiCallable:
        """A multi-callable for a stream-unary method."""
        return StreamUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer | None = None,
        response_deserializer: Deserializer | None = None,
        **kwargs: Any,
    ) -> StreamStreamMultiCallable:
        """A multi-callable for a stream-stream method."""
        return StreamStreamMultiCallable(self, method, request_serializer, response_deserializer)

    # -- lifecycle --------------------------------------------------------------

    def check_open(self) -> None:
        """Refuse new calls once the channel is closing."""
        if self._closing:
            raise RuntimeError("the channel is closed")

    def track(self, call: Call) -> None:
        """Keep ``call`` until it ends, for :meth:`close`."""
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def channel_ready(self) -> None:
        """Resolve the endpoints and start connecting (optional: calls do it too)."""
        await self.pool.start()

    async def close(self, grace: float | None = None) -> None:
        """Close: new calls are refused; calls in flight get ``grace`` seconds, then are cancelled.

        Args:
            grace: Seconds to let calls in flight finish; None cancels them at once.
        """
        if self._closing:
            return
        self._closing = True
        calls = list(self._calls)
        if calls and grace:
            await asyncio.wait(
                [asyncio.ensure_future(_ended(call)) for call in calls], timeout=grace
            )
        for call in list(self._calls):
            call.cancel()
        await self.pool.aclose(timeout=0)

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(None)


async def _ended(call: Call) -> None:
    await call.code()


_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def insecure_channel(
    target: str,
    options: Sequence[tuple[str, Any]] | None = None,
    compression: Compression | int | None = None,
    interceptors: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Channel:
    """A cleartext (h2c) channel to ``"host:port"``, as ``grpc.aio.insecure_channel``."""
    return Channel(
        f"http://{target}",
        options=options,
        compression=compression,
        interceptors=interceptors,
        **kwargs,
    )


def secure_channel(
    target: str,
    ssl_context: ssl_module.SSLContext | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    compression: Compression | int | None = None,
    interceptors: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Channel:
    """A TLS channel to ``"host:port"``; ``ssl_context`` None verifies with certifi's CAs."""
    return Channel(
        f"https://{target}",
        options=options,
        compression=compression,
        interceptors=interceptors,
        ssl=ssl_context,
        **kwargs,
    )
