"""`python -m cultureclip_demo` = the `cultureclip-demo` console script."""

import sys

from .cli import main

if __name__ == "__main__":  # the demo's worker processes import this module again
    sys.exit(main())
