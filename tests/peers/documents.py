"""The standard test documents served by the peers (``docroot``)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

INDEX_HTML = b"hello world\n"
"""Contents of ``index.html`` in the docroot."""

SMALL_TXT = b"abcdefghi\n" * 10
"""Contents of ``small.txt`` in the docroot (100 bytes)."""

BIG_BIN_SIZE = 16 * 1024 * 1024
"""Size of ``big.bin`` in the docroot: large enough to exhaust default flow-control windows."""

# Fixed seed: a failure involving big.bin can be reproduced byte for byte.
_BIG_BIN_SEED = 0x5EED


def make_docroot(directory: Path) -> str:
    """Write the standard test documents into ``directory``.

    Args:
        directory: An existing, empty directory.

    Returns:
        The hex SHA-256 of ``big.bin``.
    """
    big = random.Random(_BIG_BIN_SEED).randbytes(BIG_BIN_SIZE)
    (directory / "index.html").write_bytes(INDEX_HTML)
    (directory / "small.txt").write_bytes(SMALL_TXT)
    (directory / "big.bin").write_bytes(big)
    return hashlib.sha256(big).hexdigest()
