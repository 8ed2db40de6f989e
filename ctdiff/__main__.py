import sys

from ctdiff.cli import main

sys.exit(main())
