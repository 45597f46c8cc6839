"""`probcons train PROBLEM --backbone NAME`: train a neural backbone (checkpoints, resume).

The ANP (`--backbone anp`, the default) and the ensembles (`ensemble`, `fno-ensemble`) take
different flags, so the parser reads --backbone first and then adds the flags of that backbone
(probcons.training.command or probcons.backbones.member_training). BOON operator backbones are
trained by `probcons run` on their problem.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from probcons.cli.catalog import (
    ANP_BACKBONES,
    ENSEMBLE_BACKBONES,
    OPERATOR_BACKBONES,
    TRAINABLE_BACKBONES,
)
from probcons.cli.parser import CommandParser

EPILOG = f"""backbones:
  {", ".join(ANP_BACKBONES)}: the flags above
  {", ".join(ENSEMBLE_BACKBONES)}: their own flags, listed by
      probcons train PROBLEM --backbone {ENSEMBLE_BACKBONES[0]} --help
  {", ".join(OPERATOR_BACKBONES)}: BOON operators, trained by
      probcons run PROBLEM --backbone NAME"""


def chosen_backbone(parser: argparse.ArgumentParser, arg_strings: Sequence[str]) -> str | None:
    """The --backbone among `arg_strings` (None when absent), read before the other flags are
    known (same abbreviations and errors as the full parser)."""
    reader = CommandParser(prog=parser.prog, add_help=False)
    reader.add_argument("--backbone", default=None)
    return reader.parse_known_args(list(arg_strings))[0].backbone


def add_arguments(parser: argparse.ArgumentParser, arg_strings: Sequence[str]) -> None:
    """The chosen backbone's flags and handler."""
    if chosen_backbone(parser, arg_strings) in ENSEMBLE_BACKBONES:
        from probcons.backbones.member_training import add_ensemble_arguments

        parser.description = "train ensemble members"
        parser.epilog = None
        add_ensemble_arguments(parser)
        parser.set_defaults(handler=handle_ensemble)
        return
    from probcons.training.command import add_train_arguments

    add_train_arguments(parser, backbones=TRAINABLE_BACKBONES)
    parser.set_defaults(handler=handle)


def add_parser(subparsers) -> None:
    subparsers.add_parser(
        "train",
        help="train a neural backbone (checkpoints, resume)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        deferred=add_arguments,
    )


def handle(args: argparse.Namespace) -> int:
    from probcons.training.command import train_command

    return train_command(args)


def handle_ensemble(args: argparse.Namespace) -> int:
    from probcons.backbones.member_training import ensemble_train_command

    return ensemble_train_command(args)


__all__ = ["EPILOG", "add_arguments", "add_parser", "chosen_backbone", "handle", "handle_ensemble"]
