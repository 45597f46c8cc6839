"""python -m probcons.training PROBLEM ...: the same as `probcons train PROBLEM ...`."""

import sys

from probcons.training.command import main

sys.exit(main())
