"""``python -m benchmarks``: run the suite, print the table, write results and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from .sizes import SIZES
from .suite import BENCHMARKS, run_suite

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
"""Where results go unless ``--out`` says otherwise (ignored by git)."""


def main() -> None:
    """Parse the command line and run the suite."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="h2pool and the alternatives side by side, in one run; prints ratios.",
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS,
        default=[],
        metavar="NAME",
        help=f"run only these benchmarks: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for results")
    args = parser.parse_args()
    results = run_suite(args.size, args.only, args.out)
    print(results.markdown())
    print(f"Results and plots in {args.out}")


if __name__ == "__main__":
    main()
