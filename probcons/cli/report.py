"""`probcons report RUN_DIR...`: calibration report of one or more run directories."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="calibration report of one or more run directories"
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (probcons run)")
    parser.add_argument("--out", type=Path, default=None, help="report file (.html/.md or stem)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from probcons.report import write_report

    written = write_report(args.run_dirs, args.out)
    print(f"wrote {written['html']} and {written['markdown']}")
    return 0


__all__ = ["add_parser", "handle"]
