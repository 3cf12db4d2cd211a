"""The pool (or rpc channel) a command sends through: the user's options, failing fast."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from .._pool.pool import Pool
from .failures import CommandError, Exit


def pool_options(args: argparse.Namespace) -> dict[str, Any]:
    """The pool's keywords that ``--endpoints``, ``--insecure`` and ``--timeout`` give."""
    return {
        "endpoints": args.endpoints,
        "ssl": False if args.insecure else None,
        "connect_timeout": min(args.timeout, 5.0),
    }


@contextlib.contextmanager
def checked_target() -> Iterator[None]:
    """Turn the pool's refusal of the target or an endpoint into exit code ``BAD_URL``.

    Raises:
        CommandError: The pool raised ValueError (its message kept).
    """
    try:
        yield
    except ValueError as exc:
        raise CommandError(str(exc), Exit.BAD_URL) from None


def command_pool(args: argparse.Namespace, base: str, **options: Any) -> Pool:
    """A pool to ``base`` with the user's options, each request bounded by ``--timeout``.

    Raises:
        CommandError: The pool refused the target or an endpoint (exit code ``BAD_URL``).
    """
    with checked_target():
        return Pool(base, timeout=args.timeout, **pool_options(args), **options)
