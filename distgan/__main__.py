"""``python -m distgan``: the same command line as the ``distgan`` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
