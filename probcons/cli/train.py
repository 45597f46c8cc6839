"""`probcons train PROBLEM --backbone NAME`: train a neural backbone (checkpoints, resume).

The ANP (`--backbone anp`, the default), the ensembles (`ensemble`, `fno-ensemble`) and the
BOON heat ensemble (`boon-ensemble`, heat-neumann only) take different flags, so the parser
reads --backbone first and then adds the flags of that backbone (probcons.training.command,
probcons.backbones.member_training, or `add_boon_ensemble_arguments` here). The other BOON
operator backbones are trained by `probcons run` on their problem.

    probcons train heat-neumann --backbone boon-ensemble --objective constrained-crps \
        --out checkpoints/heat-neumann-boon-ensemble-e2e \
        --export models/checkpoints/heat-neumann-boon-ensemble-e2e.pt
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from probcons.cli.catalog import (
    ANP_BACKBONES,
    BOON_TRAIN_PROBLEMS,
    ENSEMBLE_BACKBONES,
    OPERATOR_BACKBONES,
    OPERATOR_TRAINABLE_BACKBONES,
    TRAINABLE_BACKBONES,
)
from probcons.cli.parser import CommandParser
from probcons.errors import UsageError

EPILOG = f"""backbones:
  {", ".join(ANP_BACKBONES)}: the flags above
  {", ".join(ENSEMBLE_BACKBONES)}: their own flags, listed by
      probcons train PROBLEM --backbone {ENSEMBLE_BACKBONES[0]} --help
  {", ".join(OPERATOR_BACKBONES)}: BOON operators, trained by
      probcons run PROBLEM --backbone NAME
  {", ".join(OPERATOR_TRAINABLE_BACKBONES)} ({", ".join(BOON_TRAIN_PROBLEMS)}): also trained here
      (post hoc or through the constraint), flags listed by
      probcons train {BOON_TRAIN_PROBLEMS[0]} --backbone {OPERATOR_TRAINABLE_BACKBONES[0]} --help"""
RUN_SETTINGS = "run.json"
"""The settings of a boon-ensemble run in its folder; --resume continues only the same ones."""


def chosen_backbone(parser: argparse.ArgumentParser, arg_strings: Sequence[str]) -> str | None:
    """The --backbone among `arg_strings` (None when absent), read before the other flags are
    known (same abbreviations and errors as the full parser)."""
    reader = CommandParser(prog=parser.prog, add_help=False)
    reader.add_argument("--backbone", default=None)
    return reader.parse_known_args(list(arg_strings))[0].backbone


def add_arguments(parser: argparse.ArgumentParser, arg_strings: Sequence[str]) -> None:
    """The chosen backbone's flags and handler."""
    backbone = chosen_backbone(parser, arg_strings)
    if backbone in OPERATOR_TRAINABLE_BACKBONES:
        parser.description = "train the BOON heat ensemble, post hoc or through the constraint"
        parser.epilog = None
        add_boon_ensemble_arguments(parser)
        parser.set_defaults(handler=handle_boon_ensemble)
        return
    if backbone in ENSEMBLE_BACKBONES:
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


def add_boon_ensemble_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of `probcons train heat-neumann --backbone boon-ensemble` (defaults: the shipped
    checkpoints and benchmarks/boon.py --e2e, `HeatRecipe`)."""
    from probcons.backbones.boon_ensemble_e2e import HEAT_OBJECTIVES

    parser.add_argument("problem", help=f"problem: {', '.join(BOON_TRAIN_PROBLEMS)}")
    parser.add_argument("--backbone", required=True, choices=OPERATOR_TRAINABLE_BACKBONES)
    parser.add_argument(
        "--objective",
        default="posthoc",
        choices=HEAT_OBJECTIVES,
        help="posthoc: members alone (default); constrained-nll / constrained-crps: then all "
        "members and s fine-tuned jointly on the NLL / CRPS of the prediction conditioned "
        "exactly on the heat rows",
    )
    parser.add_argument("--members", type=int, default=3, help="ensemble members (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="data, members and fine-tuning")
    parser.add_argument("--n-train", type=int, default=200, help="training samples")
    parser.add_argument(
        "--n-test", type=int, default=100, help="test samples drawn before the validation set"
    )
    parser.add_argument(
        "--n-validation", type=int, default=50, help="held-out samples that calibrate s and c"
    )
    parser.add_argument("--n-x", type=int, default=65, help="grid nodes on [0, 1]")
    parser.add_argument("--epochs", type=int, default=120, help="epochs of member 0")
    parser.add_argument("--member-epochs", type=int, default=50, help="epochs of the others")
    parser.add_argument("--fine-tune-epochs", type=int, default=40, help="constrained-* epochs")
    parser.add_argument("--fine-tune-learning-rate", type=float, default=1e-4)
    parser.add_argument("--fine-tune-batch-size", type=int, default=20)
    parser.add_argument(
        "--no-covariance-scale",
        action="store_true",
        help="skip the last step, the fit of the covariance scale c (c = 1)",
    )
    parser.add_argument(
        "--out", default=None, help="run folder (default checkpoints/PROBLEM-boon-ensemble-OBJ)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT")
    parser.add_argument("--export", default=None, help="also write the ensemble to this .pt")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def boon_ensemble_run(args: argparse.Namespace):
    """The checked (recipe, out folder, run settings) of the parsed flags; raises UsageError
    naming the flag before anything is written."""
    from probcons.backbones.boon_ensemble_e2e import HeatRecipe
    from probcons.training.command import check_run_paths
    from probcons.validation import check_positive_int

    if args.problem not in BOON_TRAIN_PROBLEMS:
        raise UsageError(
            f"problem: --backbone {args.backbone} trains on {', '.join(BOON_TRAIN_PROBLEMS)} "
            f"only, got {args.problem!r}"
        )
    check_positive_int(args.threads, "threads")
    recipe = HeatRecipe(
        members=args.members,
        seed=args.seed,
        n_train=args.n_train,
        n_test=args.n_test,
        n_validation=args.n_validation,
        n_x=args.n_x,
        epochs=args.epochs,
        member_epochs=args.member_epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        fine_tune_batch_size=args.fine_tune_batch_size,
    )
    default = Path("checkpoints") / f"{args.problem}-{args.backbone}-{args.objective}"
    out = Path(args.out) if args.out else default
    check_run_paths(out, args.export)
    settings = {
        "problem": args.problem,
        "backbone": args.backbone,
        "objective": args.objective,
        "covariance_scale": not args.no_covariance_scale,
        "recipe": vars(recipe).copy(),
    }
    stored = out / RUN_SETTINGS
    if out.is_dir() and any(out.iterdir()):
        if not args.resume:
            raise UsageError(
                f"out: {str(out)!r} exists and is not empty; pass --resume to continue it or "
                "choose another folder"
            )
        found = json.loads(stored.read_text()) if stored.is_file() else None
        if found != settings:
            raise UsageError(
                f"resume: {str(out)!r} holds a run of {found}, not of {settings}; resume with "
                "the same flags or choose another folder"
            )
    return recipe, out, settings


def handle_boon_ensemble(args: argparse.Namespace) -> int:
    """Train (or resume) the BOON heat ensemble; write OUT/ensemble.pt and the export."""
    import torch

    from probcons.backbones.boon_ensemble_e2e import train_heat_ensemble
    from probcons.io import write_json

    recipe, out, settings = boon_ensemble_run(args)
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_SETTINGS, settings)
    ensemble = train_heat_ensemble(
        recipe,
        args.objective,
        out,
        fit_scale=not args.no_covariance_scale,
        progress=not args.no_progress,
    )
    ensemble.save(out / "ensemble.pt")
    record = ensemble.training
    scores = record.get("validation_scores_calibrated", record["validation_scores"])
    conditioned = scores["conditioned"]
    print(
        f"trained {args.problem}-{args.backbone} ({args.objective}): {recipe.members} members, "
        f"s {ensemble.noise_variance:.3g}, c {ensemble.covariance_scale:.3g}, "
        f"{record['seconds']:.0f} s wall this session; validation after the update: rel. L2 "
        f"{conditioned['rel_l2']:.3g}, NLL {conditioned['nll']:.3f}, CRPS "
        f"{conditioned['crps']:.3g}, 90 % coverage {conditioned['coverage90']:.3f}"
    )
    print(f"ensemble: {out / 'ensemble.pt'}")
    if args.export:
        ensemble.save(args.export)
        print(f"exported: {args.export}")
    return 0


def handle(args: argparse.Namespace) -> int:
    from probcons.training.command import train_command

    return train_command(args)


def handle_ensemble(args: argparse.Namespace) -> int:
    from probcons.backbones.member_training import ensemble_train_command

    return ensemble_train_command(args)


__all__ = [
    "EPILOG",
    "add_arguments",
    "add_boon_ensemble_arguments",
    "add_parser",
    "chosen_backbone",
    "handle",
    "handle_boon_ensemble",
    "handle_ensemble",
]
