"""The `probcons` command: run, list (and the subcommands other modules add).

One module per subcommand (run, train, calibrate, report, listing), each with `add_parser`
and `handle`. Building the parser imports nothing heavy: `probcons --help` and
`probcons run --help` load neither torch nor the runner.

Errors: bad input (UsageError, ModelError, SingularConstraintError — the rows a user's model
asked for cannot be conditioned on —, ConvergenceError — a nonlinear site of the model cannot
be met —, a parse error, and a plain ValueError that a library
underneath raised on a user's data) gives one line `probcons: error: ...` on stderr and exit
status 2; `probcons --debug ...` raises it instead, with its traceback. An output that cannot
be written (OutputError: disk full, device busy, name too long, permission denied) gives one line
`probcons: error: cannot write 'PATH': REASON` and exit status 74 (EX_IOERR), and leaves the
previous run directory or none. Any other exception is a bug and keeps its traceback; Ctrl-C
exits with 130.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from probcons.cli import calibrate, condition, listing, report, run, train
from probcons.cli.parser import CommandParser
from probcons.errors import (
    ConvergenceError,
    ModelError,
    OutputError,
    ProbconsError,
    SingularConstraintError,
    UsageError,
)

EXIT_USAGE = 2
EXIT_IO_ERROR = 74
"""EX_IOERR of sysexits.h: an output could not be written."""
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
    """Bad input: UsageError, ModelError, SingularConstraintError, ConvergenceError, or a
    ValueError raised by a library underneath (probcons itself raises only its own classes)."""
    if isinstance(error, UsageError | ModelError | SingularConstraintError | ConvergenceError):
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


def release_quietly(error: BaseException) -> None:
    """Drop the frames of a failed write now, so that the open files they hold (h5py's, whose
    close fails again on a full disk) print no "Exception ignored" lines on stderr."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    sys.stderr.flush()
    saved = os.dup(2)  # h5py's finalizers also print from C: silence the descriptor itself
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            error.__cause__ = error.__context__ = error.__traceback__ = None
            gc.collect()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sys.unraisablehook = hook


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
    except OutputError as error:
        if debug:
            raise
        message = " ".join(str(error).split())
        release_quietly(error)
        print(f"probcons: error: {message}", file=sys.stderr)
        return EXIT_IO_ERROR
    except KeyboardInterrupt:
        print("probcons: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def console_main() -> None:
    """The `probcons` command and `python -m probcons.cli`: `main`, then exit with its status.

    After a failed write (exit 74) the process ends with os._exit once stdout and stderr are
    flushed: interpreter teardown would finalize HDF5 with a file it could not finish (a full
    disk), which crashes (SIGSEGV) after the one-line message was printed.
    """
    default_hook = sys.unraisablehook

    def quiet_failed_closes(unraisable) -> None:
        # h5py reports, from its objects' finalizers, every close that fails again on a full
        # disk; the one-line error already says so
        failed_write = isinstance(unraisable.exc_value, OSError) and "h5py" in repr(
            unraisable.object
        )
        if not failed_write:
            default_hook(unraisable)

    sys.unraisablehook = quiet_failed_closes
    status = main()
    if status == EXIT_IO_ERROR:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


__all__ = [
    "console_main",
    "EXIT_IO_ERROR",
    "EXIT_USAGE",
    "build_parser",
    "debug_requested",
    "is_usage_error",
    "main",
]
