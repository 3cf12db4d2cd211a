"""A tiny ASGI application for tests that run hypercorn (``tests.peers.Hypercorn``).

Routes, for any path:

* ``POST``: 200 echoing the request body.
* Any other method: 200 with the body ``b"hello " + path`` (the path without the query).
* ``?ms=N`` on any request: wait N milliseconds (at most ``MAX_DELAY_MS``) before answering, so a
  test can keep streams in flight, e.g. ``GET /slow?ms=100``.

Every response is ``text/plain`` with a ``content-length``. The module imports nothing from the
test suite, so hypercorn can load it in its own process as ``tests.asgi_app:app``.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["MAX_DELAY_MS", "app"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_DELAY_MS = 30_000
"""Upper bound on ``?ms=``, so a typo cannot hold a request for longer than a test runs."""


def _delay_seconds(query_string: bytes) -> float:
    """Return the delay asked for by ``?ms=N``, in seconds (0 if absent or not a number)."""
    values = urllib.parse.parse_qs(query_string.decode("latin-1")).get("ms", [])
    try:
        milliseconds = int(values[-1]) if values else 0
    except ValueError:
        return 0.0
    return max(0, min(milliseconds, MAX_DELAY_MS)) / 1000


async def _read_body(receive: Receive) -> bytes:
    """Return the whole request body; empty if the client went away first."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(body)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown, so hypercorn logs no lifespan warning."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point.

    Args:
        scope: The connection scope; ``http`` and ``lifespan`` are handled.
        receive: Awaitable returning the next event from the client.
        send: Awaitable sending an event to the client.
    """
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return  # e.g. websocket: not served; hypercorn closes it
    request_body = await _read_body(receive)
    delay = _delay_seconds(scope.get("query_string", b""))
    if delay:
        await asyncio.sleep(delay)
    body = request_body if scope["method"] == "POST" else b"hello " + scope["path"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
