"""The ``h2pool`` command: one request, one raw gRPC call, from a shell.

The top layer: it uses the public API only (``h2pool.Pool``), and nothing
below imports it.
"""

from .main import main

__all__ = ["main"]
