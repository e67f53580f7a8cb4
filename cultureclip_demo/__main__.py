"""`python -m cultureclip_demo` = the `cultureclip-demo` console script."""

import sys

from .cli import main

sys.exit(main())
