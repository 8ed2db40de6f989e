"""``python -m ctdiff_app``: see :mod:`ctdiff_app.cli`."""

import sys

from ctdiff_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
