"""`probcons calibrate CHECKPOINT...`: fit an ANP checkpoint's variance calibration."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_arguments(parser: argparse.ArgumentParser, arg_strings: Sequence[str]) -> None:
    from probcons.training.command import add_calibrate_arguments

    add_calibrate_arguments(parser)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit an ANP checkpoint's variance calibration (scale, context exponent) on held-out "
        "functions",
        deferred=add_arguments,
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from probcons.training.command import calibrate_command

    return calibrate_command(args)


__all__ = ["add_arguments", "add_parser", "handle"]
