"""`probcons list`: problems, backbones and methods with their descriptions.

(Named listing, not list: a submodule becomes an attribute of its package, and `list` would
hide the builtin inside probcons/cli/__init__.py.)
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("list", help="problems, backbones and methods")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from probcons.backbones import BACKBONES
    from probcons.operator_runner import BACKBONES as OPERATOR_BACKBONES
    from probcons.operator_runner import BACKBONES_2D
    from probcons.problems import PROBLEMS
    from probcons.problems.operators import OPERATOR_PROBLEMS
    from probcons.problems.operators2d import OPERATOR_PROBLEMS_2D
    from probcons.runner import METHODS

    print("problems:")
    for problem in PROBLEMS.values():
        print(f"  {problem.describe()}")
    for name, text in {**OPERATOR_PROBLEMS, **OPERATOR_PROBLEMS_2D}.items():
        print(f"  {name} (BOON): {text}")
    print("backbones:")
    for name, text in BACKBONES.items():
        print(f"  {name}: {text}")
    print(f"  for BOON problems: {', '.join(OPERATOR_BACKBONES)}")
    print(f"  for 2-D BOON problems: {', '.join(BACKBONES_2D)}")
    print("methods:")
    for name, text in METHODS.items():
        print(f"  {name}: {text}")
    return 0


__all__ = ["add_parser", "handle"]
