"""`probcons train PROBLEM --backbone anp ...`: the arguments and the command behind them.

Under torchrun the command joins the process group from torchrun's variables and trains with
DistributedDataParallel (`--batch-size` is the global batch, a multiple of the process count);
rank 0 alone prints, writes checkpoints and exports:

    torchrun --nproc_per_node=4 -m probcons.training stefan --batch-size 16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from probcons import distributed
from probcons.backbones.anp import LATENT_AGGREGATIONS, ANPConfig
from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.errors import UsageError
from probcons.runner import check_output_directory, check_writable_location
from probcons.training.calibration import calibrate_checkpoint, store_calibration
from probcons.training.conditioned_calibration import (
    CALIBRATION_COUNTS,
    FITS,
    calibrate_conditioned,
    store_conditioned_calibration,
)
from probcons.training.fit import train_anp
from probcons.training.trainer import CONSTRAINED_OBJECTIVES, TrainingOptions
from probcons.validation import check_positive_int

BACKBONES = ("anp",)
DEFAULT_CHECKPOINT_ROOT = Path("checkpoints")


# TrainingOptions fields exposed as --flags: (field, type, help); defaults are the options'
TRAINING_FLAGS = (
    (
        "softc_lambda",
        float,
        "weight of the PDE-residual penalty (SoftC-ANP); 0 trains the plain ANP",
    ),
    ("epochs", int, None),
    ("n_functions", int, None),
    ("batch_size", int, None),
    ("n_target", int, None),
    ("learning_rate", float, None),
    ("free_bits", float, None),
    ("kl_warmup_steps", int, None),
    (
        "likelihood_beta",
        float,
        "beta-NLL, beta in [0, 1]: weight each target's log-density by sigma^(2 beta) (0 = the ELBO)",
    ),
    ("kl_capacity", float, "hold the KL near this many nats per function (0 = free bits instead)"),
    (
        "deterministic_dropout",
        float,
        "probability per function that the decoder sees z but no deterministic path",
    ),
    (
        "min_contexts",
        int,
        "keep a random k of the 100 contexts per batch, k from this many to 100 (default 100)",
    ),
    (
        "objective",
        str,
        "elbo (default); marginal-likelihood: log mean_s p(u_T | z_s, C), z_s ~ p(z | C); "
        "constrained-nll or constrained-crps: the NLL or CRPS of the truth on whole x-slices "
        "under the mixture of the draws conditioned exactly on conservation (end-to-end "
        "ProbConserv)",
    ),
    (
        "marginal_samples",
        int,
        "prior draws per function for --objective marginal-likelihood and constrained-*",
    ),
    ("slice_times", int, "x-slices (times) per function for --objective constrained-*"),
    ("slice_points", int, "points per x-slice for --objective constrained-*"),
    (
        "init",
        str,
        "start from this ANP checkpoint's weights (fine-tuning; its ANP sizes are used)",
    ),
    ("seed", int, None),
)
# ANPConfig fields exposed as --flags: (field, type, choices or None)
ANP_FLAGS = (
    ("hidden", int, None),
    ("heads", int, None),
    ("latent_dim", int, None),
    ("decoder_width", int, None),
    ("latent_aggregation", str, LATENT_AGGREGATIONS),
)


def add_train_arguments(
    parser: argparse.ArgumentParser, backbones: tuple[str, ...] = BACKBONES
) -> argparse.ArgumentParser:
    """Add the `train` arguments to `parser` (defaults are those of the shipped checkpoints).

    backbones: the --backbone choices shown (`probcons train` lists the ensembles too, which it
    routes to their own arguments before these are parsed).
    """
    training, anp = TrainingOptions(), ANPConfig()
    parser.add_argument("problem", help="problem to train on: diffusion, pme or stefan")
    parser.add_argument(
        "--backbone", default="anp", choices=backbones, help="backbone to train (default anp)"
    )
    for name, kind, text in TRAINING_FLAGS:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=getattr(training, name), help=text)
    for name, kind, choices in ANP_FLAGS:
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, choices=choices, default=getattr(anp, name)
        )
    parser.add_argument(
        "--out",
        default=None,
        help="run folder for best.pt and last.pt (default checkpoints/PROBLEM-anp or -softc-anp)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument(
        "--export",
        default=None,
        help="also write the best weights (no optimizer state) to this .pt file",
    )
    parser.add_argument(
        "--calibration-functions",
        type=int,
        default=128,
        help="held-out functions (per context count for constrained-*) of the variance "
        "calibration fitted after training (default 128)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run_name(problem: str, softc_lambda: float, objective: str = "elbo") -> str:
    """PROBLEM-anp, or PROBLEM-softc-anp when the SoftC penalty is on; with a constrained
    objective (trained through the conservation update) the suffix -e2e is added."""
    name = f"{problem}-{'softc-anp' if softc_lambda > 0 else 'anp'}"
    return name + ("-e2e" if objective in CONSTRAINED_OBJECTIVES else "")


def export_checkpoint(best_path: Path, export_path: Path, last_path: Path | None = None) -> None:
    """Write the best weights, hyperparameters and validation scores to export_path (no optimizer
    state); with last_path, also the whole run's steps and wall/CPU seconds (run_*)."""
    if Path(export_path).suffix != ".pt":
        raise UsageError(f"export: expected a path ending in .pt, got {str(export_path)!r}")
    payload = load_checkpoint(best_path)
    extra = dict(payload["extra"])
    if last_path is not None:
        last = load_checkpoint(last_path)["extra"]
        extra["run_steps"] = last["step"]
        # the engine's wall seconds (train_seconds in a last.pt written before the engine)
        extra["run_train_seconds"] = last.get("seconds", last.get("train_seconds"))
        extra["run_cpu_seconds"] = last.get("cpu_seconds")
        extra["history"] = last["history"]
    save_checkpoint(export_path, payload["state"], payload["hyperparameters"], extra)


def check_run_paths(out: Path, export: str | None) -> None:
    """Before any training: `out` must be (or become) a folder this process can write (it may
    hold a run to resume), and `export` a writable .pt path."""
    check_output_directory(out, overwrite=True)
    if export is not None:
        if Path(export).suffix != ".pt":
            raise UsageError(f"export: expected a path ending in .pt, got {str(export)!r}")
        check_writable_location(Path(export), "export")


def train_command(args: argparse.Namespace) -> int:
    """Train the ANP (or SoftC-ANP) on args.problem; print where the checkpoints are."""
    from probcons.problems import get_problem

    if args.threads < 1:
        raise UsageError(f"threads: expected a positive integer, got {args.threads!r}")
    calibration_functions = check_positive_int(args.calibration_functions, "calibration_functions")
    torch.set_num_threads(args.threads)
    current = distributed.initialize()  # a process group under torchrun, else nothing
    problem = get_problem(args.problem)
    options = TrainingOptions(**{name: getattr(args, name) for name, _, _ in TRAINING_FLAGS})
    if options.init is not None:  # fine-tuning: the network is the checkpoint's
        from probcons.training.constrained import init_config

        config = init_config(options.init)
    else:
        config = ANPConfig(
            t_range=problem.t_range,
            x_range=problem.x_range,
            **{name: getattr(args, name) for name, _, _ in ANP_FLAGS},
        )
    name = run_name(problem.name, options.softc_lambda, options.objective)
    out = Path(args.out) if args.out else DEFAULT_CHECKPOINT_ROOT / name
    check_run_paths(out, args.export)
    result = train_anp(
        problem, out, config, options, resume=args.resume, progress=not args.no_progress
    )
    if not current.is_main:
        return 0
    print(
        f"trained {name}: {result.steps} steps, "
        f"{result.train_seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU"
        f"{f' (rank 0 of {current.size})' if current.is_distributed else ''}, best validation "
        + (
            f"CRPS {result.best_validation:.4e}"
            if options.objective == "constrained-crps"
            else f"NLL {result.best_validation:.4f}"
        )
    )
    print(f"best: {result.best_path}\nlast: {result.last_path}")
    if options.objective in CONSTRAINED_OBJECTIVES:
        # the variance was trained for the conditioned posterior: calibrate that predictive
        # (a scale fitted to the unconditioned one would undo what was trained)
        report_conditioned_calibration(
            result.best_path,
            calibrate_conditioned(result.best_path, problem, n_functions=calibration_functions),
        )
    else:
        report_calibration(
            result.best_path,
            calibrate_checkpoint(result.best_path, problem, n_functions=calibration_functions),
        )
    if args.export:
        export_checkpoint(result.best_path, Path(args.export), result.last_path)
        print(f"exported: {args.export}")
    return 0


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `calibrate` arguments to `parser`."""
    parser.add_argument("checkpoints", nargs="+", help="ANP checkpoints (.pt) to calibrate")
    parser.add_argument(
        "--functions",
        type=int,
        default=128,
        help="held-out functions (default 128; per count with --conditioned)",
    )
    parser.add_argument(
        "--samples", type=int, default=32, help="latent draws per function (default 32)"
    )
    parser.add_argument(
        "--no-context",
        action="store_true",
        help="fit one scalar for every function (gamma = 0), not the context factor",
    )
    parser.add_argument(
        "--conditioned",
        action="store_true",
        help="calibrate the ProbConserv posterior on x-slices instead, one scale per number of "
        "contexts (for checkpoints trained with --objective constrained-*)",
    )
    parser.add_argument(
        "--fit",
        choices=FITS,
        default=FITS[0],
        help="with --conditioned: maximise the held-out likelihood per count (default) or "
        "match 90 %% coverage",
    )
    parser.add_argument(
        "--counts",
        default=",".join(str(k) for k in CALIBRATION_COUNTS),
        help="with --conditioned: the comma-separated context counts to fit at "
        f"(default {','.join(str(k) for k in CALIBRATION_COUNTS)})",
    )
    parser.add_argument("--dry-run", action="store_true", help="fit and print, write nothing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return parser


def report_calibration(path, calibration) -> None:
    """Print the stored calibration, the two fits, and the held-out NLL and 90 % coverage as
    trained, with one scalar and with the context fit."""
    scores = (calibration.before, calibration.scalar, calibration.context)
    print(
        f"calibrated {path}: variance scale {calibration.variance_scale:.4g} x (context "
        f"factor)^{calibration.context_exponent:.3g} stored (one scalar: "
        f"{calibration.scalar_scale:.4g}; context fit: {calibration.context_scale:.4g} x "
        f"f^{calibration.context_fit_exponent:.3g}) on {calibration.n_functions} held-out "
        "functions; NLL "
        + " -> ".join(f"{s['nll']:.4f}" for s in scores)
        + ", 90 % coverage "
        + " -> ".join(f"{s['coverage_90']:.3f}" for s in scores)
        + " (as trained -> one scalar -> context fit)"
    )


def report_conditioned_calibration(path, calibration) -> None:
    """Print the stored scales c(k) and, per count, the held-out NLL and 90 % coverage of the
    conditioned predictive as trained and calibrated."""
    print(
        f"calibrated the conditioned predictive of {path} ({calibration.fit} fit) on "
        f"{calibration.n_functions} held-out functions per count: "
        + "; ".join(
            f"k = {k}: c {scale:.3g}, NLL {calibration.before[str(k)]['nll']:.3f} -> "
            f"{calibration.after[str(k)]['nll']:.3f}, CRPS "
            f"{calibration.before[str(k)]['crps']:.3e} -> {calibration.after[str(k)]['crps']:.3e}"
            ", 90 % coverage "
            f"{calibration.before[str(k)]['coverage_90']:.3f} -> "
            f"{calibration.after[str(k)]['coverage_90']:.3f}"
            for k, scale in zip(calibration.counts, calibration.scales, strict=True)
        )
    )


def parse_counts(text: str) -> tuple[int, ...]:
    """'1,3,10' -> (1, 3, 10): strictly increasing positive integers, else a UsageError."""
    try:
        counts = tuple(int(value) for value in text.split(","))
    except ValueError:
        counts = ()
    if not counts or any(k < 1 for k in counts) or list(counts) != sorted(set(counts)):
        raise UsageError(
            "counts: expected comma-separated, strictly increasing positive integers such as "
            f"1,3,10,30,100, got {text!r}"
        )
    return counts


def calibrate_command(args: argparse.Namespace) -> int:
    """Fit and store the variance scale of each checkpoint (all are checked before any is written)."""
    if args.threads < 1:
        raise UsageError(f"threads: expected a positive integer, got {args.threads!r}")
    check_positive_int(args.functions, "functions")  # named as on the command line
    torch.set_num_threads(args.threads)
    if args.conditioned:
        counts = parse_counts(args.counts)
        fits = [
            calibrate_conditioned(
                path, None, counts, args.functions, args.samples, write=False, fit=args.fit
            )
            for path in args.checkpoints
        ]
        for path, calibration in zip(args.checkpoints, fits, strict=True):
            if not args.dry_run:
                store_conditioned_calibration(path, calibration)
            report_conditioned_calibration(path, calibration)
        return 0
    fits = [
        calibrate_checkpoint(
            path, None, args.functions, args.samples, write=False, context=not args.no_context
        )
        for path in args.checkpoints
    ]
    for path, calibration in zip(args.checkpoints, fits, strict=True):
        if not args.dry_run:
            store_calibration(path, calibration)
        report_calibration(path, calibration)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: python -m probcons.training PROBLEM [options]."""
    parser = add_train_arguments(
        argparse.ArgumentParser(prog="python -m probcons.training", description=__doc__)
    )
    return train_command(parser.parse_args(argv))


__all__ = [
    "add_calibrate_arguments",
    "add_train_arguments",
    "calibrate_command",
    "export_checkpoint",
    "main",
    "parse_counts",
    "report_conditioned_calibration",
    "run_name",
    "train_command",
]
