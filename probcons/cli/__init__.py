"""The `probcons` command: run, list (and the subcommands other modules add).

One module per subcommand (run, train, calibrate, report, listing), each with `add_parser`
and `handle`. Building the parser imports nothing heavy: `probcons --help` and
`probcons run --help` load neither torch nor the runner.

Errors: bad input (UsageError, ModelError, SingularConstraintError — the rows a user's model
asked for cannot be conditioned on —, a parse error, and a plain ValueError that a library
underneath raised on a user's data) gives one line `probcons: error: ...` on stderr and exit
status 2; `probcons --debug ...` raises it instead, with its traceback. Any other exception is
a bug and keeps its traceback; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys

from probcons.cli import calibrate, condition, listing, report, run, train
from probcons.cli.parser import CommandParser
from probcons.errors import ModelError, ProbconsError, SingularConstraintError, UsageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
SUBCOMMANDS = (run, condition, train, calibrate, report, listing)


def build_parser() -> argparse.ArgumentParser:
    """The `probcons` parser; a subcommand's arguments are complete once it parses."""
    parser = CommandParser(prog="probcons", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--debug",
        action="store_true",
        help="raise errors of bad input with their traceback instead of one line",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for subcommand in SUBCOMMANDS:
        subcommand.add_parser(subparsers)
    return parser


def is_usage_error(error: BaseException) -> bool:
    """Bad input: UsageError, ModelError, SingularConstraintError, or a ValueError raised by a
    library underneath (probcons itself raises only its own classes)."""
    if isinstance(error, UsageError | ModelError | SingularConstraintError):
        return True
    return isinstance(error, ValueError) and not isinstance(error, ProbconsError)


def debug_requested(argv: list[str]) -> bool:
    """--debug among the global options, the words before the subcommand (known before parsing,
    so that parse errors are raised too)."""
    for word in argv:
        if not word.startswith("-"):
            return False
        if word == "--debug":
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(argv)
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except ValueError as error:
        if debug or not is_usage_error(error):
            raise
        message = " ".join(str(error).split())
        print(f"probcons: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("probcons: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = ["EXIT_USAGE", "build_parser", "debug_requested", "is_usage_error", "main"]
