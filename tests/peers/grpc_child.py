"""The child of ``GrpcServerProcess``: ``python -m tests.peers.grpc_child --port 0 ...``.

Kept apart from ``grpc_process`` so that running it with ``-m`` does not import it twice.
The protocol on stdin and stdout is in ``grpc_process``'s docstring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from .certs import Certificates
from .grpc_server import DEFAULT_MAX_WORKERS, GrpcTestServer

COMPRESSIONS = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}
"""``--compression`` names."""


def _option(text: str) -> tuple[str, int | str]:
    key, _, typed = text.partition("=")
    kind, _, value = typed.partition(":")
    return key, int(value) if kind == "int" else value


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server until told to stop, or until stdin ends."""
    parser = argparse.ArgumentParser(prog="python -m tests.peers.grpc_child")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-workers", type=int, default=DEFAULT_MAX_WORKERS)
    parser.add_argument("--option", type=_option, action="append", default=[])
    parser.add_argument("--compression", choices=sorted(COMPRESSIONS))
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args(argv)
    certificates = None
    if args.cert is not None:
        certificates = Certificates(ca_pem=args.cert, cert_pem=args.cert, key_pem=args.key)
    server = GrpcTestServer(
        certificates=certificates,
        options=args.option,
        compression=COMPRESSIONS.get(args.compression),
        max_workers=args.max_workers,
        port=args.port,
    )
    server.start()
    _say({"port": server.port, "pid": os.getpid()})
    grace: float | None = None
    for line in sys.stdin:
        command = json.loads(line)
        if "stop" in command:
            grace = command["stop"]
            break
        if "health" in command:
            server.set_health(*command["health"])
            _say({"ok": True})
        elif "stats" in command:
            _say(server.log.snapshot())
        elif "wait_for_calls" in command:
            method, count, timeout = command["wait_for_calls"]
            try:
                server.wait_for_calls(method, count, timeout)
            except TimeoutError as exc:
                _say({"error": str(exc)})
            else:
                _say({"ok": True})
    started = time.monotonic()
    server.close(grace)
    sys.stderr.write(f"stopped (grace {grace}) in {time.monotonic() - started:.3f} s\n")


if __name__ == "__main__":
    main()
