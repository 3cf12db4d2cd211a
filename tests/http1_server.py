"""Python's own ``http.server`` (HTTP/1.1 only) in a thread, recording what it received.

The commonest kind of origin an httpx user has: it answers HTTP/2's
preface (``PRI * HTTP/2.0``) with an HTML error page and closes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Http1Server", "http1_server"]


@dataclass
class Http1Server:
    """A running server: its port, and every request line and client port it saw, in order."""

    port: int
    request_lines: list[str] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def http1_server() -> Iterator[Http1Server]:
    """Serve on 127.0.0.1 (a free port): ``GET`` answers ``hello``, ``POST`` echoes its body."""
    record = Http1Server(port=0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        raw_requestline: bytes  # set by handle_one_request()

        def parse_request(self) -> bool:
            record.request_lines.append(self.raw_requestline.decode("latin-1").rstrip())
            record.client_ports.append(self.client_address[1])
            return super().parse_request()

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(b"hello")

        def do_POST(self) -> None:
            self._answer(self.rfile.read(int(self.headers.get("content-length", "0"))))

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    record.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
