"""`python -m probcons.cli ...`: the `probcons` command."""

from probcons.cli import console_main

console_main()
