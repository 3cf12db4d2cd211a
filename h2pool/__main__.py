"""``python -m h2pool``: the ``h2pool`` command."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
