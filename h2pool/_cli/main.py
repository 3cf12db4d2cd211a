"""The ``h2pool`` command's entry point: parse, run, and turn failures into one line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from .arguments import parse
from .bench import bench
from .failures import Exit, classify, describe
from .get import get
from .rpc import rpc

_COMMANDS = {"get": get, "rpc": rpc, "bench": bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default ``sys.argv[1:]``); return its exit code."""
    stderr = sys.stderr
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        run = _COMMANDS[args.command]
        return int(asyncio.run(run(args, sys.stdout.buffer, stderr, sys.stdin.buffer)))
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        # The reader left (``| head``): as other tools, stop quietly.
        return int(Exit.OK)
    except Exception as exc:  # the command's edge: one line, never a traceback
        stderr.write(f"h2pool: error: {describe(exc)}\n")
        return int(classify(exc))
