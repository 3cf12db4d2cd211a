"""A fault-injection TCP proxy for tests, placed between a client and a real server.

The proxy listens on 127.0.0.1 and forwards each client connection to its own upstream
connection. Its mode can be switched at any time, and a switch applies at once to the
connections already open as well as to new ones:

* ``passthrough()``: forward bytes both ways (the default).
* ``blackhole()``: forward nothing, in either direction. Both sockets are still read, and what is
  read is dropped, so TCP stays open and no kernel buffer fills up: the client sees a silent
  peer, as behind a network partition. New connections are accepted and are silent too.
* ``reset()``: send RST on every open connection, and on each new one as soon as it is accepted.
* ``delay(seconds)``: forward every chunk ``seconds`` after it was read, both ways, in order.
  Chunks are pipelined: latency is added once per chunk, not accumulated across chunks.
* ``close_after(nbytes)``: forward as usual, but close a connection (both sides, with FIN) once
  ``nbytes`` have been forwarded to its client, counting from the switch for open connections.

Example::

    async with fault_proxy(nghttpd_h2c.port) as proxy:
        client = connect(proxy.address)
        ...
        proxy.blackhole()  # the live connection goes silent mid-run

Bytes that the proxy had already handed to a socket when the mode changed may still arrive: a
switch stops forwarding from that point on, it cannot recall what was sent. The proxy runs in the
test's event loop and needs no threads.
"""

from __future__ import annotations

from .connection import Mode
from .proxy import FaultProxy, FaultProxyFactory, fault_proxy, fault_proxy_factory

__all__ = [
    "FaultProxy",
    "FaultProxyFactory",
    "Mode",
    "fault_proxy",
    "fault_proxy_factory",
]
