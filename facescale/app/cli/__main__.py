"""``python -m facescale.app.cli``: the console script's entry point."""

import sys

from facescale.app.cli import main

sys.exit(main())
