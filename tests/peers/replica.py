"""A replica of a service in its own process (``replica_main``), for resilience tests.

``Replica(delay=0.1)`` answers every request after 0.1 s; ``stall_every=20, stall=1.0``
stalls every 20th request for 1 s; ``status=503`` answers 503. ``count()`` says how many
requests it served (the other side of "at most N requests were sent"), ``set(...)``
changes its behaviour while it runs, and ``kill()``/``start()`` take it away and bring it
back on the same port, as with the other peers.
"""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

import h2pool

from .process import HOST, _ServerProcess

# Root of the repository: the replica runs there, so that it can import ``tests``.
_REPO_ROOT = Path(__file__).resolve().parents[2]


class Replica(_ServerProcess):
    """h2pool's own server as one replica of a service, in a subprocess on 127.0.0.1."""

    _name = "replica"
    _cwd = _REPO_ROOT

    def __init__(
        self,
        *,
        status: int = 200,
        delay: float = 0.0,
        stall_every: int = 0,
        stall: float = 0.0,
        log_dir: Path | None = None,
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        """Prepare, but do not start, the replica.

        Args:
            status: The status of every answer.
            delay: Seconds before each answer.
            stall_every: Every this many requests (0: none), one waits ``stall`` seconds.
            stall: Seconds a stalled request waits (instead of ``delay``).
            log_dir: Directory for its logs; a temporary one if None.
            port: Port to listen on; a free one if None.
            startup_timeout: Seconds to wait for the port to accept connections.
        """
        super().__init__(log_dir=log_dir, port=port, startup_timeout=startup_timeout)
        self.options = [
            f"--status={status}",
            f"--delay={delay}",
            f"--stall-every={stall_every}",
            f"--stall={stall}",
        ]

    def command(self, port: int) -> list[str]:
        """Return the replica's command line for ``port``."""
        return [sys.executable, "-m", "tests.peers.replica_main", str(port), *self.options]

    @property
    def address(self) -> str:
        """``"127.0.0.1:port"``, as a pool's ``endpoints`` takes it."""
        return f"{HOST}:{self.port}"

    async def count(self) -> int:
        """How many requests the replica served so far (its own paths not counted)."""
        return int((await self._control("/_replica/count")).text)

    async def set(self, **behaviour: float) -> None:
        """Change how the replica answers from now on (``status``, ``delay``, ...)."""
        await self._control("/_replica/set?" + urllib.parse.urlencode(behaviour))

    async def _control(self, path: str) -> h2pool.Response:
        async with h2pool.Pool(f"http://{self.address}", timeout=5.0) as pool:
            return await pool.get(path)
