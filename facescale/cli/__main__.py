"""``python -m facescale.cli``: the console script's entry point."""

import sys

from facescale.cli import main

sys.exit(main())
