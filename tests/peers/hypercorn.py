"""hypercorn serving ``tests.asgi_app`` over h2c."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .process import HOST, _ServerProcess

# Root of the repository: hypercorn runs there, so that it can import ``tests.asgi_app``.
_REPO_ROOT = Path(__file__).resolve().parents[2]

# Extra seconds, beyond hypercorn's graceful_timeout, that close() waits after SIGTERM.
_HYPERCORN_STOP_MARGIN = 2.0

HypercornOption = bool | int | float | str
"""A value for a hypercorn configuration key, as written to its TOML file."""


def _toml_value(value: HypercornOption) -> str:
    """Render a scalar as TOML; JSON's string escapes are valid TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


class Hypercorn(_ServerProcess):
    """hypercorn 0.18 serving ``tests.asgi_app:app`` over h2c on 127.0.0.1, in a subprocess.

    hypercorn accepts HTTP/2 with prior knowledge on a cleartext port (as well as HTTP/1.1 and
    the h2c upgrade), so ``curl --http2-prior-knowledge``, h2load and h2pool can talk h2c to it.
    It runs as a single process (``workers = 0``), so signals reach the server itself. Use it as
    a context manager, or call ``start()`` and ``close()``, as with ``Nghttpd``; like nghttpd it
    sets SO_REUSEADDR, so ``restart()`` and ``start()`` after ``close()`` keep the port.

    It is here as a *misbehaving* peer. What hypercorn 0.18 (with h2 4.x) does on the wire once
    a connection reaches ``keep_alive_max_requests`` (observed with a raw client, nghttp -nv and
    h2load; ``test_peers.py`` pins the deterministic parts):

    1. Requests 1 to N (N = ``keep_alive_max_requests``) are served normally. Receiving request
       N+1 makes it send GOAWAY(NO_ERROR) with last_stream_id = the highest stream id it has
       received so far, i.e. that request's id or higher if more requests came in the same read.
       So it drains *after* N requests, not at request N.
    2. It sends one such GOAWAY per further request that was received in the same read (nghttp
       -m 8 against N = 5 got three identical GOAWAYs; h2load -m 10 against N = 50 got ten).
    3. It finishes *none* of the streams still open at that point, although every one of them is
       at or below last_stream_id: not request N+1, and not earlier requests that were still in
       flight (e.g. ``/slow?ms=300``). Their responses are dropped silently, with no RST_STREAM:
       after its GOAWAY, h2 refuses to send anything else and hypercorn swallows the error.
    4. The next frame the client sends, of any kind (a SETTINGS ACK, PING, WINDOW_UPDATE or a
       new HEADERS), is answered with GOAWAY(PROTOCOL_ERROR, same last_stream_id) and a TCP
       close.
    5. A client that sends nothing more gets no further frame: the connection just sits there
       until ``keep_alive_timeout`` (default 5 s) closes it with a plain FIN.

    So a client that trusts last_stream_id waits for responses that never come; the streams
    must be treated as failed (retrying them elsewhere is unsafe in general: the application did
    run them). h2load, for one, counts them as errored and does not reconnect.

    Also: SIGTERM while a request is still running after ``graceful_timeout`` leaves hypercorn
    0.18 hung (it sends that response's HEADERS, then never exits). ``close()`` waits
    ``graceful_timeout`` plus 2 s and then kills it, so such a test costs those seconds at
    teardown, not ``_STOP_TIMEOUT``.

    Attributes:
        keep_alive_max_requests: Requests served per connection before it sends GOAWAY.
        keep_alive_timeout: Seconds an idle connection is kept open.
        graceful_timeout: Seconds requests in flight get after SIGTERM.
        options: Further hypercorn configuration keys (see ``hypercorn.config.Config``).
        returncode: Exit status once stopped (0 after a normal ``close()``).
    """

    APP = "tests.asgi_app:app"
    """The ASGI application served, imported by hypercorn from the repository root."""

    _name = "hypercorn"
    _cwd = _REPO_ROOT  # so that hypercorn can import APP

    def __init__(
        self,
        *,
        keep_alive_max_requests: int = 1000,
        keep_alive_timeout: float = 5.0,
        graceful_timeout: float = 0.5,
        options: Mapping[str, HypercornOption] | None = None,
        log_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        """Prepare, but do not start, a hypercorn process.

        Args:
            keep_alive_max_requests: hypercorn's ``keep_alive_max_requests`` (its default is
                1000).
            keep_alive_timeout: hypercorn's ``keep_alive_timeout`` in seconds (default 5).
            graceful_timeout: hypercorn's ``graceful_timeout`` in seconds; short by default
                (hypercorn's is 3) so that ``close()`` is quick.
            options: More configuration keys, e.g. ``{"h2_max_concurrent_streams": 10}``.
            log_dir: Directory for the config file and the logs (``hypercorn.stdout`` has the
                access log, a line per request, ``hypercorn.stderr`` the error log); if None, a
                temporary directory removed by ``close()``.
            port: Port to listen on; a free one is picked if None.
            startup_timeout: Seconds to wait for the port to accept connections (Python and
                hypercorn take a few hundred milliseconds to start).

        Raises:
            ValueError: An option is not a hypercorn configuration key (hypercorn itself would
                silently ignore it).
        """
        from hypercorn.config import Config  # only this class needs it

        super().__init__(log_dir=log_dir, port=port, startup_timeout=startup_timeout)
        self.keep_alive_max_requests = keep_alive_max_requests
        self.keep_alive_timeout = keep_alive_timeout
        self.graceful_timeout = graceful_timeout
        self.options = dict(options or {})
        unknown = sorted(key for key in self.options if not hasattr(Config, key))
        if unknown:
            raise ValueError(f"not hypercorn configuration keys: {', '.join(unknown)}")

    @property
    def config_path(self) -> Path:
        """The TOML configuration file passed with ``--config``."""
        return self.log_dir / "hypercorn.toml"

    @property
    def _stop_timeout(self) -> float:
        # Past graceful_timeout, hypercorn may never exit on its own (see the class docstring).
        return self.graceful_timeout + _HYPERCORN_STOP_MARGIN

    def _config_files(self) -> dict[Path, str]:
        return {self.config_path: self.config_text()}

    def _repr_detail(self) -> str:
        return f"keep_alive_max_requests={self.keep_alive_max_requests}"

    def config_text(self) -> str:
        """Return the TOML configuration written to ``config_path``."""
        settings: dict[str, HypercornOption] = {
            # One process: no multiprocessing child that SIGTERM/SIGKILL and pdeathsig miss.
            "workers": 0,
            "keep_alive_max_requests": self.keep_alive_max_requests,
            "keep_alive_timeout": self.keep_alive_timeout,
            "graceful_timeout": self.graceful_timeout,
            "accesslog": "-",
            "errorlog": "-",
            **self.options,
        }
        return "".join(f"{key} = {_toml_value(value)}\n" for key, value in settings.items())

    def command(self, port: int) -> list[str]:
        """Return the hypercorn command line for ``port``."""
        return [
            sys.executable,
            "-m",
            "hypercorn",
            "--config",
            str(self.config_path),
            "--bind",
            f"{HOST}:{port}",
            self.APP,
        ]


class HypercornFactory(Protocol):
    """The callable yielded by the ``hypercorn_factory`` fixture."""

    def __call__(
        self,
        *,
        keep_alive_max_requests: int = 1000,
        keep_alive_timeout: float = 5.0,
        graceful_timeout: float = 0.5,
        options: Mapping[str, HypercornOption] | None = None,
    ) -> Hypercorn:
        """Start a ``Hypercorn`` with these settings (see its constructor); it is stopped at
        teardown, and its logs are kept in the test's ``tmp_path``."""
        ...
