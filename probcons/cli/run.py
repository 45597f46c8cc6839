"""`probcons run PROBLEM`: constrained posteriors, metrics and report (GPME problems), or train
and evaluate an operator backbone (BOON problems).

Each problem family has its own flags; a flag of the other family is a usage error that names
it. GPME-only flags default to None here, so "given" means "not None"; `_resolve` then fills
in their documented defaults.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from probcons.cli.catalog import (
    BOON_TRAIN_PROBLEMS,
    ENSEMBLE_COVARIANCES,
    GPME_PROBLEMS,
    METHODS,
    OPERATOR_PROBLEMS,
)
from probcons.errors import UsageError

GPME_DEFAULTS = {
    "methods": METHODS,
    "param": None,
    "n_functions": 10,
    "grid": (101, 101),
    "draws": 100,
    "sigma_g": 0.0,
    "model": None,
    "checkpoint": None,
    "chunk_functions": 10,
}
"""Flags of GPME problems only (dest -> default)."""
BOON_FLAGS = ("epochs", "n_train", "n_test", "ensemble_covariance")
"""Flags of BOON problems only (default None: the problem's own)."""


def parse_grid(text: str) -> tuple[int, int]:
    """'101x201' -> (101, 201)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"grid: expected NTxNX such as 101x101, got {text!r}")
    return int(match[1]), int(match[2])


def parse_methods(text: str) -> tuple[str, ...]:
    """'unconstrained, hardc' -> ('unconstrained', 'hardc')."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="constrained posteriors, metrics and report")
    parser.add_argument("problem", help="problem name (see `probcons list`)")
    parser.add_argument(
        "--backbone", default=None, help="backbone name (default gp; boon-fno for BOON problems)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty run directory"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    gpme = parser.add_argument_group("GPME problems only", ", ".join(GPME_PROBLEMS))
    gpme.add_argument(
        "--methods",
        type=parse_methods,
        default=None,
        help="comma-separated methods (default unconstrained,hardc,probconserv)",
    )
    gpme.add_argument("--param", type=float, default=None, help="PDE parameter value")
    gpme.add_argument("--n-functions", type=int, default=None, help="test functions (default 10)")
    gpme.add_argument("--grid", type=parse_grid, default=None, help="NTxNX (default 101x101)")
    gpme.add_argument("--draws", type=int, default=None, help="posterior draws per function")
    gpme.add_argument(
        "--sigma-g", type=float, default=None, help="constraint slack std (0 = exact)"
    )
    gpme.add_argument(
        "--model",
        type=Path,
        default=None,
        help="Pyro model file (default models/PROBLEM.py), or a shipped model's name "
        "(stefan-bounded, pme-bounded, pme-flux)",
    )
    gpme.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="trained backbone file, or a shipped checkpoint's name such as stefan-anp-e2e "
        "(default: the shipped one); also heat-neumann --backbone boon-ensemble (e.g. "
        "heat-neumann-boon-ensemble-e2e), evaluated without training",
    )
    gpme.add_argument(
        "--chunk-functions",
        type=int,
        default=None,
        help="test functions evaluated and written per chunk (memory stays flat; default 10)",
    )
    boon = parser.add_argument_group("BOON problems only", ", ".join(OPERATOR_PROBLEMS))
    boon.add_argument("--epochs", type=int, default=None, help="training epochs (BOON problems)")
    boon.add_argument(
        "--n-train", type=int, default=None, help="training samples/trajectories (BOON problems)"
    )
    boon.add_argument(
        "--n-test", type=int, default=None, help="test samples/trajectories (BOON problems)"
    )
    boon.add_argument(
        "--ensemble-covariance",
        choices=ENSEMBLE_COVARIANCES,
        default=None,
        help="cavity / wave2d ensembles: condition the members' sample covariance (default) or "
        "its marginal variances only",
    )
    parser.set_defaults(handler=handle)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _refuse(given: list[str], family: str, problem: str) -> None:
    """Raise UsageError naming the flags in `given` (dests) that only `family` problems take."""
    if given:
        flags = " and ".join(_flag(dest) for dest in given)
        verb, pronoun = ("applies", "it") if len(given) == 1 else ("apply", "them")
        raise UsageError(
            f"run: {flags} {verb} to {family} problems only (got {pronoun} for {problem})"
        )


def _resolve(args: argparse.Namespace) -> None:
    """Refuse the flags of the other problem family; fill in the GPME defaults.

    An unknown problem is checked by neither and runs as GPME, so the runner names the known
    problems.
    """
    if args.problem in OPERATOR_PROBLEMS:
        given = [dest for dest in GPME_DEFAULTS if getattr(args, dest) is not None]
        _refuse([dest for dest in given if dest != "checkpoint"], "GPME", args.problem)
        if "checkpoint" in given and args.problem not in BOON_TRAIN_PROBLEMS:
            raise UsageError(
                f"run: --checkpoint applies to GPME problems and to "
                f"{', '.join(BOON_TRAIN_PROBLEMS)} only (got it for {args.problem})"
            )
        return
    if args.problem in GPME_PROBLEMS:
        given = [dest for dest in BOON_FLAGS if getattr(args, dest) is not None]
        _refuse(given, "BOON", args.problem)
    for dest, default in GPME_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)


def _options(args: argparse.Namespace) -> dict:
    """The keyword options of `run_problem` for the flags of the problem's family."""
    if args.problem in OPERATOR_PROBLEMS:
        sizes = {
            key: value
            for key, value in (("n_train", args.n_train), ("n_test", args.n_test))
            if value is not None
        }
        if args.checkpoint is not None:
            sizes["checkpoint"] = _checkpoint(args)
        if args.ensemble_covariance is not None:
            sizes["ensemble_covariance"] = args.ensemble_covariance
        return {"epochs": args.epochs, **sizes}
    return {
        "methods": args.methods,
        "parameter": args.param,
        "n_functions": args.n_functions,
        "grid": args.grid,
        "draws": args.draws,
        "noise_std": args.sigma_g,
        "model": args.model,
        "backbone_options": {} if args.checkpoint is None else {"checkpoint": _checkpoint(args)},
        "chunk_functions": args.chunk_functions,
    }


def _checkpoint(args: argparse.Namespace) -> Path:
    """--checkpoint as given, or the shipped checkpoint of that name (e.g. stefan-anp-e2e)."""
    from probcons.resources import checkpoint_file, is_bare_name

    path = args.checkpoint
    return checkpoint_file(str(path)) if is_bare_name(path) else path


def _print_operator(problem: str, run) -> None:
    """Operator problems: the flat metrics and the run directory."""
    print(
        f"{problem}, {run.backbone}: "
        + ", ".join(
            f"{key} {value:.3g}"
            for key, value in run.results["metrics"].items()
            if isinstance(value, float)
        )
    )
    print(f"wrote {run.out}/")


def _print_gpme(run) -> None:
    """GPME problems: the settings, the metrics table and the report."""
    from probcons.runner import format_table

    settings = run.settings
    print(
        f"{settings.problem}, {settings.backbone} backbone, parameter {settings.parameter:g}, "
        f"{settings.n_functions} functions, grid {settings.grid[0]}x{settings.grid[1]}"
    )
    print(format_table(run.results))
    print(f"wrote {settings.out}/ (report: {settings.out / 'report.html'})")


def handle(args: argparse.Namespace) -> int:
    """Every family through `probcons.runner.run_problem`, which dispatches on the family."""
    from probcons.runner import run_problem
    from probcons.validation import check_positive_int

    _resolve(args)
    check_positive_int(args.threads, "threads")
    run = run_problem(
        args.problem,
        args.backbone,
        args.out,
        seed=args.seed,
        overwrite=args.overwrite,
        threads=args.threads,
        progress=not args.quiet,
        **_options(args),
    )
    if run.family == "gpme":
        _print_gpme(run)
    else:
        _print_operator(args.problem, run)
    return 0


__all__ = ["add_parser", "handle", "parse_grid", "parse_methods"]
