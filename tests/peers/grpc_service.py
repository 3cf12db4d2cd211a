"""``test.Rpc``: a raw-bytes gRPC service whose behaviour each call chooses through its metadata.

One server thus covers every protocol case: the four call kinds, statuses with and without
Trailers-Only, delays, calls that never answer, metadata echo (``-bin`` included), compression
per call or per message. ``GrpcTestServer`` serves it; this module holds the service, the
parsing of its metadata (a pure function, ``parse_plan``) and ``CallLog``, what tests observe.

Metadata keys read by every method (values are ASCII text unless the key ends in ``-bin``):

==================== =====================================================================
``x-status``         End the call with this gRPC status: a number (``"5"``) or a name
                     (``"NOT_FOUND"``). ``0``/``OK`` is a normal end.
``x-details``        The status message (``grpc-message``); ``x-details-bin`` gives it as
                     UTF-8 bytes, for non-ASCII text.
``x-after``          How many response messages precede the status (default 0). With 0 and
                     no ``x-headers-first``, nothing precedes it: grpcio sends Trailers-Only.
                     Unary and client-stream calls with ``x-after: 1`` send their response
                     message *and then* the error status.
``x-sleep``          Seconds to wait at the start of the call (after ``x-headers-first``,
                     before reading any request); a cancellation ends the wait.
``x-never``          ``1``: never answer; wait until the RPC ends (client cancel, deadline,
                     server stop), at most ``NEVER_MAX_SECONDS``.
``x-headers-first``  ``1``: send the initial metadata at once, before sleeping or reading;
                     otherwise it goes just before the first response message.
``x-echo-*``         Sent back unchanged in the initial metadata, and renamed
                     ``x-trailer-*`` in the trailing metadata (``-bin`` keys too).
``x-compress``       ``0``: send every response message of this call uncompressed
                     (``disable_next_message_compression``), whatever the server's default.
``x-id``             Names a series of calls (a client's attempts at one call), for
                     ``x-fail-first``; ``CallLog.calls_with_id`` counts them.
``x-fail-first``     ``N``: only the first N calls with this ``x-id`` follow ``x-status``;
                     later ones end OK, so a client retrying gets through on attempt N + 1.
``x-pushback-ms``    Sent back as the ``grpc-retry-pushback-ms`` trailer (gRFC A6: how long a
                     client should wait before retrying; negative: do not retry).
``x-compression``    ``gzip`` or ``deflate``: this call's response compression
                     (``set_compression``). grpcio 1.85 uses it, or the server's
                     ``compression=``, even when the client's ``grpc-accept-encoding`` lacks
                     it; it sends a message uncompressed (flag 0) when that is shorter.
==================== =====================================================================

Per method (``Rpc``):

* ``Unary``: answers the request unchanged.
* ``ServerStream``: ``x-count`` messages (default 3); message ``i`` is the request unchanged,
  or, with ``x-size``, ``x-size`` bytes all equal to ``i % 256``. ``x-interval`` seconds pass
  between messages. Each message waits for the client's flow-control window.
* ``ClientStream``: reads every request, then answers their concatenation, or with
  ``x-reply: summary`` the ASCII text ``b"<messages> <total bytes>"`` (for uploads larger than
  a response may be).
* ``Bidi``: echoes each request as it arrives (``x-interval`` before each echo but the first),
  so a client can interleave writes and reads; a status comes after ``x-after`` echoes, without
  waiting for further requests.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc

NEVER_MAX_SECONDS = 60.0
"""Upper bound on how long an ``x-never`` call (or an ``x-sleep``) keeps its handler thread."""

Metadata = tuple[tuple[str, str | bytes], ...]
"""gRPC metadata as grpcio gives it: ``(key, value)`` pairs, bytes values for ``-bin`` keys."""

_DEFAULT_COUNT = 3
_ECHO_PREFIX = "x-echo-"
_TRAILER_PREFIX = "x-trailer-"
_COMPRESSIONS = {
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
}
# grpc.StatusCode values are (number, name) pairs.
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class Rpc(enum.StrEnum):
    """The methods of ``test.Rpc``, as full paths for ``channel.unary_unary(...)`` and alike."""

    UNARY = "/test.Rpc/Unary"
    SERVER_STREAM = "/test.Rpc/ServerStream"
    CLIENT_STREAM = "/test.Rpc/ClientStream"
    BIDI = "/test.Rpc/Bidi"


class PlanError(ValueError):
    """Metadata that asks for something impossible; the call ends with INVALID_ARGUMENT."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallPlan:
    """What one call was asked to do, parsed from its metadata (see the module docstring).

    Attributes:
        status: The status to end with, or None for OK.
        details: The status message.
        after: Response messages sent before ``status``.
        sleep: Seconds to wait at the start.
        never: Never answer.
        headers_first: Send the initial metadata at once.
        count: ``ServerStream``'s message count.
        size: ``ServerStream``'s message size, or None to repeat the request.
        interval: Seconds between response messages.
        compress: False to send response messages uncompressed.
        compression: This call's response compression, or None for the server's default.
        summary: ``ClientStream`` answers a summary rather than the concatenation.
        call_id: The ``x-id`` of the call, or None.
        fail_first: ``status`` applies to the first this many calls with ``call_id`` only;
            None: to every call.
        initial_metadata: Sent as the initial metadata (the ``x-echo-*`` keys).
        trailing_metadata: Sent in the trailers (the ``x-echo-*`` keys as ``x-trailer-*``).
    """

    status: grpc.StatusCode | None = None
    details: str = ""
    after: int = 0
    sleep: float = 0.0
    never: bool = False
    headers_first: bool = False
    count: int = _DEFAULT_COUNT
    size: int | None = None
    interval: float = 0.0
    compress: bool = True
    compression: grpc.Compression | None = None
    summary: bool = False
    call_id: str | None = None
    fail_first: int | None = None
    initial_metadata: Metadata = ()
    trailing_metadata: Metadata = ()


def _text(key: str, value: str | bytes) -> str:
    if isinstance(value, bytes):
        raise PlanError(f"{key} must be text")
    return value


def _number(key: str, value: str | bytes, kind: Callable[[str], float]) -> Any:
    try:
        number = kind(_text(key, value))
    except ValueError as exc:
        raise PlanError(f"{key}: {value!r} is not a number") from exc
    if number < 0:
        raise PlanError(f"{key} must not be negative")
    return number


def _status(value: str) -> grpc.StatusCode:
    code = _STATUS_BY_NUMBER.get(int(value)) if value.isdigit() else None
    if code is None:
        code = getattr(grpc.StatusCode, value.upper(), None)
    if not isinstance(code, grpc.StatusCode):
        raise PlanError(f"x-status: {value!r} is not a gRPC status")
    return code


def parse_plan(metadata: Iterable[tuple[str, str | bytes]]) -> CallPlan:
    """Read a call's plan from its request metadata.

    Args:
        metadata: The invocation metadata.

    Returns:
        The plan; unknown keys are ignored.

    Raises:
        PlanError: A value does not parse.
    """
    fields: dict[str, Any] = {}
    initial: list[tuple[str, str | bytes]] = []
    trailing: list[tuple[str, str | bytes]] = []
    for key, value in metadata:
        if key.startswith(_ECHO_PREFIX):
            initial.append((key, value))
            trailing.append((_TRAILER_PREFIX + key[len(_ECHO_PREFIX) :], value))
        elif key == "x-status":
            fields["status"] = _status(_text(key, value))
        elif key == "x-details":
            fields["details"] = _text(key, value)
        elif key == "x-details-bin":
            fields["details"] = value.decode() if isinstance(value, bytes) else value
        elif key in ("x-after", "x-count", "x-size"):
            fields[key[2:]] = _number(key, value, int)
        elif key in ("x-sleep", "x-interval"):
            fields[key[2:]] = _number(key, value, float)
        elif key in ("x-never", "x-headers-first", "x-compress"):
            fields[key[2:].replace("-", "_")] = _text(key, value) == "1"
        elif key == "x-compression":
            if value not in _COMPRESSIONS:
                raise PlanError(f"x-compression: {value!r} is not one of {sorted(_COMPRESSIONS)}")
            fields["compression"] = _COMPRESSIONS[_text(key, value)]
        elif key == "x-reply":
            fields["summary"] = _text(key, value) == "summary"
        elif key == "x-id":
            fields["call_id"] = _text(key, value)
        elif key == "x-fail-first":
            fields["fail_first"] = _number(key, value, int)
        elif key == "x-pushback-ms":
            trailing.append(("grpc-retry-pushback-ms", _text(key, value)))
    if fields.get("status") is grpc.StatusCode.OK:
        del fields["status"]
    if "fail_first" in fields and "call_id" not in fields:
        raise PlanError("x-fail-first needs an x-id")
    return CallPlan(**fields, initial_metadata=tuple(initial), trailing_metadata=tuple(trailing))


class CallLog:
    """What the service saw, per method: thread-safe, with blocking waits.

    A call counts as *cancelled* when the RPC ended while its handler had not yet given its
    answer: the client's RST_STREAM (cancel or deadline) reached the server, or the server was
    stopped under it. A call ended by an ``x-status`` is not cancelled.
    """

    def __init__(self) -> None:
        """Start with no calls seen."""
        self._condition = threading.Condition()
        self._started: collections.Counter[str] = collections.Counter()
        self._cancelled: collections.Counter[str] = collections.Counter()
        self._messages: collections.Counter[str] = collections.Counter()
        self._last_metadata: dict[str, Metadata] = {}
        self._last_time_remaining: dict[str, float | None] = {}
        self._with_id: collections.Counter[str] = collections.Counter()
        self._released = False

    @property
    def condition(self) -> threading.Condition:
        """Notified on every change; the service's waits use it too."""
        return self._condition

    @property
    def released(self) -> bool:
        """Whether ``release()`` was called: every wait ends at once."""
        return self._released

    def release(self) -> None:
        """End every current and future ``x-sleep``/``x-never`` wait (the server is closing)."""
        with self._condition:
            self._released = True
            self._condition.notify_all()

    def record_start(
        self, method: str, metadata: Metadata, time_remaining: float | None = None
    ) -> None:
        """Count a call that reached its handler, with grpcio's view of its deadline."""
        with self._condition:
            self._started[method] += 1
            self._last_metadata[method] = metadata
            self._last_time_remaining[method] = time_remaining
            self._condition.notify_all()

    def record_id(self, call_id: str) -> int:
        """Count a call with ``x-id: call_id``; return how many there have been, this one too."""
        with self._condition:
            self._with_id[call_id] += 1
            self._condition.notify_all()
            return self._with_id[call_id]

    def calls_with_id(self, call_id: str) -> int:
        """Calls that reached a handler with ``x-id: call_id`` (a client's attempts)."""
        with self._condition:
            return self._with_id[call_id]

    def record_cancelled(self, method: str) -> None:
        """Count a call that ended cancelled."""
        with self._condition:
            self._cancelled[method] += 1
            self._condition.notify_all()

    def record_message(self, method: str) -> None:
        """Count a response message handed to grpcio (which sends it within flow control)."""
        with self._condition:
            self._messages[method] += 1
            self._condition.notify_all()

    def messages_sent(self, method: str | None = None) -> int:
        """Response messages handed to grpcio, of ``method`` or of all methods.

        A streaming handler hands over the next message only once the previous one was sent,
        i.e. fitted in the client's flow-control windows: this tells how far a slow reader let
        the server get.
        """
        with self._condition:
            return self._count(self._messages, method)

    def calls_started(self, method: str | None = None) -> int:
        """Calls that reached a handler, of ``method`` (a full path) or of all methods."""
        with self._condition:
            return self._count(self._started, method)

    def calls_cancelled(self, method: str | None = None) -> int:
        """Calls that ended cancelled, of ``method`` or of all methods."""
        with self._condition:
            return self._count(self._cancelled, method)

    @staticmethod
    def _count(counter: collections.Counter[str], method: str | None) -> int:
        return counter[method] if method is not None else sum(counter.values())

    def last_metadata(self, method: str) -> Metadata:
        """The request metadata of the latest call of ``method`` (grpcio adds ``user-agent``).

        Raises:
            LookupError: No call of ``method`` yet.
        """
        with self._condition:
            if method not in self._last_metadata:
                raise LookupError(f"no call of {method} yet")
            return self._last_metadata[method]

    def last_time_remaining(self, method: str) -> float | None:
        """Seconds the latest call of ``method`` had left when it reached its handler.

        grpcio's ``context.time_remaining()``: what the client's ``grpc-timeout`` said
        (None: the call had no deadline).

        Raises:
            LookupError: No call of ``method`` yet.
        """
        with self._condition:
            if method not in self._last_time_remaining:
                raise LookupError(f"no call of {method} yet")
            return self._last_time_remaining[method]

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Counts per method path, as plain data: ``started``, ``cancelled``, ``messages``."""
        with self._condition:
            return {
                "started": dict(self._started),
                "cancelled": dict(self._cancelled),
                "messages": dict(self._messages),
            }

    def wait_for_calls(self, method: str | None, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` calls of ``method`` (None: any) have reached a handler in total.

        Raises:
            TimeoutError: Fewer arrived within ``timeout`` seconds.
        """
        self._wait(self._started, method, count, timeout, "reached the server")

    def wait_for_cancelled(
        self, count: int, timeout: float = 10.0, method: str | None = None
    ) -> None:
        """Block until ``count`` calls (of ``method``, or any) have ended cancelled in total.

        Raises:
            TimeoutError: Fewer were cancelled within ``timeout`` seconds.
        """
        self._wait(self._cancelled, method, count, timeout, "ended cancelled")

    def _wait(
        self,
        counter: collections.Counter[str],
        method: str | None,
        count: int,
        timeout: float,
        what: str,
    ) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self._count(counter, method) >= count, timeout):
                seen = self._count(counter, method)
                raise TimeoutError(
                    f"{seen} of {count} calls ({method or 'any method'}) {what} "
                    f"within {timeout:g} s"
                )


class _Call:
    """One call in its handler: the plan, the grpcio context and the end-of-RPC event."""

    def __init__(self, method: str, context: Any, log: CallLog) -> None:
        metadata: Metadata = tuple((key, value) for key, value in context.invocation_metadata())
        self._method = method
        self._context = context
        self._log = log
        self._answered = False
        self._ended = False
        self._headers_sent = False
        self.sent = 0
        # Fires when the RPC ends for any reason, including a client's RST_STREAM. Registered
        # before the call counts as started: a test that cancels it once started must see it
        # end cancelled. grpcio refuses (False) a callback for an RPC that has already ended.
        if not context.add_callback(self._on_rpc_end):
            self._on_rpc_end()
        log.record_start(method, metadata, context.time_remaining())
        try:
            self.plan = parse_plan(metadata)
        except PlanError as exc:
            self.fail(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self.plan.call_id is not None:
            seen = log.record_id(self.plan.call_id)
            if self.plan.fail_first is not None and seen > self.plan.fail_first:
                self.plan = dataclasses.replace(self.plan, status=None)
        context.set_trailing_metadata(self.plan.trailing_metadata)
        if self.plan.compression is not None:
            context.set_compression(self.plan.compression)
        if self.plan.headers_first:
            self._send_headers()
        if self.plan.never:
            self.wait(NEVER_MAX_SECONDS)
        elif self.plan.sleep:
            self.wait(self.plan.sleep)

    @property
    def ended(self) -> bool:
        """Whether the RPC is over (cancelled, past its deadline, or the server stopping)."""
        with self._log.condition:
            return self._ended or self._log.released

    def _on_rpc_end(self) -> None:
        with self._log.condition:
            first = not self._ended
            self._ended = True
            self._log.condition.notify_all()
        if first and not self._answered:
            self._log.record_cancelled(self._method)

    def end(self) -> None:
        """The RPC ended under the handler (the client cancelled it): counted once."""
        self._on_rpc_end()

    def wait(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the RPC ends or the server is released."""
        with self._log.condition:
            self._log.condition.wait_for(lambda: self._ended or self._log.released, seconds)

    def _send_headers(self) -> None:
        if not self._headers_sent:
            self._headers_sent = True
            self._context.send_initial_metadata(self.plan.initial_metadata)

    def fail(self, code: grpc.StatusCode, details: str) -> None:
        """End the call with a non-OK status (raises, as ``context.abort`` does)."""
        self._answered = True
        self._context.abort(code, details)

    def fail_if_due(self) -> None:
        """Send the planned status now if ``x-after`` messages have been sent."""
        if self.plan.status is not None and self.sent >= self.plan.after:
            self.fail(self.plan.status, self.plan.details)

    def message(self, data: bytes) -> bytes:
        """Prepare to send one response message: headers, compression, pacing; return it."""
        if self.sent and self.plan.interval:
            self.wait(self.plan.interval)
        self._send_headers()
        if not self.plan.compress:
            self._context.disable_next_message_compression()
        self.sent += 1
        self._log.record_message(self._method)
        return data

    def answer(self, data: bytes) -> bytes:
        """The single response of a unary-response call, with the planned status if any."""
        self.fail_if_due()
        response = self.message(data)
        self._answered = True
        if self.plan.status is not None:
            # grpcio sends the message, then this status in the trailers.
            self._context.set_code(self.plan.status)
            self._context.set_details(self.plan.details)
        return response

    def finish(self) -> None:
        """End a streaming-response call: the planned status, or OK."""
        self.fail_if_due()
        if self.plan.status is not None:
            self.fail(self.plan.status, self.plan.details)
        self._answered = True


def _requests(requests: Iterator[bytes], call: _Call) -> Iterator[bytes]:
    """The requests of a client-streaming call, ending quietly if the RPC is cancelled.

    The call ends there and then: grpcio's end-of-RPC callback may run only later, after
    the handler went on as if the requests had simply ended.
    """
    try:
        yield from requests
    except grpc.RpcError:
        call.end()
        return


class RpcService:
    """The handlers of ``test.Rpc``; observations go to ``log``."""

    def __init__(self) -> None:
        """Create the service with an empty ``CallLog``."""
        self.log = CallLog()

    def _unary(self, request: bytes, context: Any) -> bytes | None:
        call = _Call(Rpc.UNARY, context, self.log)
        if call.ended:
            return None
        return call.answer(request)

    def _server_stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        call = _Call(Rpc.SERVER_STREAM, context, self.log)
        for index in range(call.plan.count):
            if call.ended:
                return
            call.fail_if_due()
            data = request if call.plan.size is None else bytes([index % 256]) * call.plan.size
            yield call.message(data)
        call.finish()

    def _client_stream(self, requests: Iterator[bytes], context: Any) -> bytes | None:
        call = _Call(Rpc.CLIENT_STREAM, context, self.log)
        messages = [] if call.ended else list(_requests(requests, call))
        if call.ended:
            return None
        if call.plan.summary:
            return call.answer(f"{len(messages)} {sum(map(len, messages))}".encode())
        return call.answer(b"".join(messages))

    def _bidi(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        call = _Call(Rpc.BIDI, context, self.log)
        if call.ended:
            return
        call.fail_if_due()
        for request in _requests(requests, call):
            yield call.message(request)
            call.fail_if_due()
        if not call.ended:
            call.finish()

    def generic_handler(self) -> Any:
        """The grpcio handler serving ``test.Rpc`` with raw bytes (identity serializers)."""
        kinds: Sequence[tuple[Rpc, Callable[..., Any], Callable[..., Any]]] = (
            (Rpc.UNARY, grpc.unary_unary_rpc_method_handler, self._unary),
            (Rpc.SERVER_STREAM, grpc.unary_stream_rpc_method_handler, self._server_stream),
            (Rpc.CLIENT_STREAM, grpc.stream_unary_rpc_method_handler, self._client_stream),
            (Rpc.BIDI, grpc.stream_stream_rpc_method_handler, self._bidi),
        )
        # No serializers: grpcio hands the handlers bytes and sends the bytes they return.
        handlers = {rpc.value.rsplit("/", 1)[1]: make(handler) for rpc, make, handler in kinds}
        return grpc.method_handlers_generic_handler("test.Rpc", handlers)
