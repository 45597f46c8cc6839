"""The argument parser of every `probcons` command: errors raise, arguments may come late.

A parse error raises UsageError (main prints it as one line, exit status 2) instead of exiting.
A subcommand whose arguments need heavy imports (torch, the training code) passes `deferred`:
a function (parser, arg_strings) that adds them when that subcommand is parsed or its help is
shown, so `probcons --help` and the other subcommands never import them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from probcons.errors import UsageError

Deferred = Callable[[argparse.ArgumentParser, Sequence[str]], None]


class CommandParser(argparse.ArgumentParser):
    """ArgumentParser that raises UsageError and can add its arguments on first use."""

    def __init__(self, *args, deferred: Deferred | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deferred = deferred

    def _complete(self, arg_strings: Sequence[str] = ()) -> None:
        """Add the deferred arguments (once), seeing the words they will parse."""
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            deferred(self, arg_strings)

    def parse_known_args(self, args=None, namespace=None):
        self._complete(() if args is None else list(args))
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def error(self, message: str) -> None:
        raise UsageError(f"{self.prog}: {message}")


__all__ = ["CommandParser", "Deferred"]
