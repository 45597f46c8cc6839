"""The `probcons` command: run, list (and the subcommands other modules add).

Bad input gives one line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

EXIT_USAGE = 2


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise CommandError(f"{self.prog}: {message}")


def parse_grid(text: str) -> tuple[int, int]:
    """'101x201' -> (101, 201)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"grid: expected NTxNX such as 101x101, got {text!r}")
    return int(match[1]), int(match[2])


def parse_methods(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_run(subparsers) -> None:
    parser = subparsers.add_parser("run", help="constrained posteriors, metrics and report")
    parser.add_argument("problem", help="problem name (see `probcons list`)")
    parser.add_argument(
        "--backbone", default=None, help="backbone name (default gp; boon-fno for BOON problems)"
    )
    parser.add_argument(
        "--methods",
        type=parse_methods,
        default=("unconstrained", "hardc", "probconserv"),
        help="comma-separated methods (default unconstrained,hardc,probconserv)",
    )
    parser.add_argument("--param", type=float, default=None, help="PDE parameter value")
    parser.add_argument("--n-functions", type=int, default=10, help="test functions (default 10)")
    parser.add_argument(
        "--grid", type=parse_grid, default=(101, 101), help="NTxNX (default 101x101)"
    )
    parser.add_argument("--draws", type=int, default=100, help="posterior draws per function")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sigma-g", type=float, default=0.0, help="constraint slack std (0 = exact)"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="Pyro model file (models/PROBLEM.py)"
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty run directory"
    )
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (BOON problems)")
    parser.add_argument(
        "--n-train", type=int, default=None, help="training samples/trajectories (BOON problems)"
    )
    parser.add_argument(
        "--n-test", type=int, default=None, help="test samples/trajectories (BOON problems)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="trained backbone (default: shipped one)"
    )
    parser.add_argument(
        "--chunk-functions",
        type=int,
        default=10,
        help="test functions evaluated and written per chunk (memory stays flat; default 10)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run)


def _run_operator(args) -> int:
    """BOON problems: train the operator backbone, evaluate, write the run directory."""
    from probcons.boon.runner import run_operator_problem
    from probcons.runner import check_output_directory

    backbone = args.backbone or "boon-fno"
    out = args.out or Path("posteriors") / f"{args.problem}-{backbone}"
    check_output_directory(out, args.overwrite)
    sizes = {
        key: value
        for key, value in (("n_train", args.n_train), ("n_test", args.n_test))
        if value is not None
    }
    result = run_operator_problem(
        args.problem, backbone, out, seed=args.seed, epochs=args.epochs, **sizes
    )
    print(
        f"{args.problem}, {backbone}: "
        + ", ".join(
            f"{key} {value:.3g}"
            for key, value in result["metrics"].items()
            if isinstance(value, float)
        )
    )
    print(f"wrote {out}/")
    return 0


def _run(args) -> int:
    import torch

    from probcons.boon.problems import OPERATOR_PROBLEMS
    from probcons.boon.problems2d import OPERATOR_PROBLEMS_2D
    from probcons.runner import RunSettings, format_table, run
    from probcons.validation import check_positive_int

    torch.set_num_threads(check_positive_int(args.threads, "threads"))
    if args.problem in OPERATOR_PROBLEMS or args.problem in OPERATOR_PROBLEMS_2D:
        return _run_operator(args)
    args.backbone = args.backbone or "gp"
    settings = RunSettings(
        problem=args.problem,
        backbone=args.backbone,
        methods=args.methods,
        parameter=args.param,
        n_functions=args.n_functions,
        grid=args.grid,
        draws=args.draws,
        seed=args.seed,
        noise_std=args.sigma_g,
        out=args.out,
        overwrite=args.overwrite,
        model=args.model,
        backbone_options={} if args.checkpoint is None else {"checkpoint": args.checkpoint},
        chunk_functions=args.chunk_functions,
    )
    summary = run(settings, progress=not args.quiet)
    print(
        f"{settings.problem}, {settings.backbone} backbone, parameter {settings.parameter:g}, "
        f"{settings.n_functions} functions, grid {settings.grid[0]}x{settings.grid[1]}"
    )
    print(format_table(summary))
    print(f"wrote {settings.out}/ (report: {settings.out / 'report.html'})")
    return 0


def _add_train(subparsers) -> None:
    from probcons.training.command import add_train_arguments

    parser = subparsers.add_parser("train", help="train a neural backbone (checkpoints, resume)")
    add_train_arguments(parser)
    parser.set_defaults(handler=_train)


def _train(args) -> int:
    from probcons.training.command import train_command

    return train_command(args)


def _add_calibrate(subparsers) -> None:
    from probcons.training.command import add_calibrate_arguments

    parser = subparsers.add_parser(
        "calibrate",
        help="fit an ANP checkpoint's variance calibration (scale, context exponent) on held-out "
        "functions",
    )
    add_calibrate_arguments(parser)
    parser.set_defaults(handler=_calibrate)


def _calibrate(args) -> int:
    from probcons.training.command import calibrate_command

    return calibrate_command(args)


def _add_report(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="calibration report of one or more run directories"
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories (probcons run)")
    parser.add_argument("--out", type=Path, default=None, help="report file (.html/.md or stem)")
    parser.set_defaults(handler=_report)


def _report(args) -> int:
    from probcons.report import write_report

    written = write_report(args.run_dirs, args.out)
    print(f"wrote {written['html']} and {written['markdown']}")
    return 0


def _add_list(subparsers) -> None:
    parser = subparsers.add_parser("list", help="problems, backbones and methods")
    parser.set_defaults(handler=_list)


def _list(args) -> int:
    from probcons.backbones import BACKBONES
    from probcons.problems import PROBLEMS
    from probcons.runner import METHODS

    print("problems:")
    for problem in PROBLEMS.values():
        print(f"  {problem.describe()}")
    from probcons.boon.problems import OPERATOR_PROBLEMS
    from probcons.boon.problems2d import OPERATOR_PROBLEMS_2D

    for name, text in {**OPERATOR_PROBLEMS, **OPERATOR_PROBLEMS_2D}.items():
        print(f"  {name} (BOON): {text}")
    print("backbones:")
    for name, text in BACKBONES.items():
        print(f"  {name}: {text}")
    from probcons.boon.runner import BACKBONES as OPERATOR_BACKBONES

    print(f"  for BOON problems: {', '.join(OPERATOR_BACKBONES)}")
    print("methods:")
    for name, text in METHODS.items():
        print(f"  {name}: {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="probcons", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run(subparsers)
    _add_train(subparsers)
    _add_calibrate(subparsers)
    _add_report(subparsers)
    _add_list(subparsers)
    return parser


ENSEMBLE_BACKBONES = ("ensemble", "fno-ensemble")


def _is_ensemble_training(argv: list[str]) -> bool:
    """`probcons train ... --backbone ensemble|fno-ensemble` (its own arguments)."""
    if not argv or argv[0] != "train":
        return False
    for index, word in enumerate(argv):
        value = argv[index + 1] if word == "--backbone" and index + 1 < len(argv) else None
        if word.startswith("--backbone="):
            value = word.split("=", 1)[1]
        if value in ENSEMBLE_BACKBONES:
            return True
    return False


def _ensemble_training(argv: list[str]) -> int:
    from probcons.backbones.member_training import add_ensemble_arguments, ensemble_train_command

    parser = _Parser(prog="probcons train", description="train ensemble members")
    return ensemble_train_command(add_ensemble_arguments(parser).parse_args(argv[1:]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if _is_ensemble_training(argv):
            return _ensemble_training(argv)
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except (CommandError, ValueError) as error:
        message = " ".join(str(error).split())
        print(f"probcons: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("probcons: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
