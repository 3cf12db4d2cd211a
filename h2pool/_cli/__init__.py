"""The ``h2pool`` command: one request, one raw gRPC call, or a load test, from a shell.

The top layer (see docs/cli.md): it drives ``Pool`` and the rpc ``Channel``
as an application does, and nothing below imports it.
"""

from .main import main

__all__ = ["main"]
