"""`python -m probcons.cli ...`: the `probcons` command."""

import sys

from probcons.cli import main

sys.exit(main())
