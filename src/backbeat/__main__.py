"""`python -m backbeat` is the `backbeat` command."""

import sys

from backbeat.cli import main

sys.exit(main())
