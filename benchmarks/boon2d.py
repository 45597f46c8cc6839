"""BOON in 2-D: FNO, FNO with boundary-data channels, and BOON on the lid-driven cavity and the wave.

Map: one autoregressive time step (problems2d), trained teacher-forced on every step of the
training trajectories and rolled out on the test trajectories (25 steps to t = 2; the wave starts
from two states, so 24 predicted steps). Same widths, modes, layers, epochs and seeds for the
three models of a problem. Prints per model the mean relative L2 over the predicted steps (whole
grid and interior, farther than 5 % of the side from every wall), the final-step relative L2, the
max boundary-condition residual over the rollout with the model in float64 and in float32, and
the training time, with ratios against the FNO of the same run; writes
benchmarks/results/boon2d.json, docs/figures/boon2d_error_vs_time.png and
docs/figures/cavity_vorticity.png. One CPU thread. Each model checkpoints after every epoch under
--cache and a rerun resumes (finished models are read back, not retrained). The cavity models,
trained at Re = 100, are also rolled out on test flows at --second-reynolds (400) to show how
far they generalise ("generalisation" in the JSON).

    python benchmarks/boon2d.py [--problems cavity wave2d] [--n-train 80] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from probcons.boon.training import MODEL_KINDS
from probcons.boon.training2d import (
    config_dict,
    evaluate2d,
    train_model2d,
)
from probcons.io import write_json
from probcons.problems.operators2d import OPERATOR_PROBLEMS_2D, make_problem2d

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boon_common  # noqa: E402
from results_pages import boon2d_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"fno": "FNO", "fno-bc": "FNO + boundary channels", "boon": "BOON"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(OPERATOR_PROBLEMS_2D))
    parser.add_argument("--n-train", type=int, default=80, help="training trajectories")
    parser.add_argument("--n-test", type=int, default=16, help="test trajectories")
    parser.add_argument("--n", type=int, default=50, help="nodes per side")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--second-reynolds",
        type=float,
        default=400.0,
        help="cavity models (trained at Re = 100) are also tested at this Re (0: skip)",
    )
    parser.add_argument("--width", type=int, default=12)
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--padding", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/boon2d.json")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs/figures")
    parser.add_argument("--cache", type=Path, default=ROOT / "checkpoints/boon2d")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = boon_common.config2d(args)
    machine = boon_common.machine()
    sizes = {
        "n_train": args.n_train,
        "n_test": args.n_test,
        "n": args.n,
        "n_steps": 25,
        "t_end": 2.0,
        "seed": args.seed,
    }
    print(f"machine: {machine}")
    print(f"config: {config_dict(config)}; sizes {sizes}")
    results: dict = {}
    if args.out.is_file():  # keep the other problems' results of an earlier run
        earlier = json.loads(args.out.read_text())
        if earlier.get("_meta", {}).get("config") == config_dict(config):
            results = {key: value for key, value in earlier.items() if key != "_meta"}
    for name in args.problems:
        problem = make_problem2d(name, n=args.n)
        start = time.perf_counter()
        train = problem.generate(args.n_train, seed=args.seed)
        test = problem.generate(args.n_test, seed=args.seed + 1000)
        print(f"\n{name}: {problem.description}")
        print(f"  data {time.perf_counter() - start:.1f} s; states {tuple(train.states.shape)}")
        results[name] = {}
        predictions = {}
        unseen_problem = unseen_test = None  # the cavity at a Reynolds number not trained on
        if name == "cavity" and args.second_reynolds:
            unseen_problem = make_problem2d(name, n=args.n, reynolds=args.second_reynolds)
            unseen_test = unseen_problem.generate(args.n_test, seed=args.seed + 1000)
        for kind in MODEL_KINDS:
            checkpoint = (
                args.cache / f"{name}-{kind}-n{args.n}-train{args.n_train}-seed{args.seed}.pt"
            )
            model, seconds = train_model2d(
                kind,
                problem,
                train,
                config,
                args.seed,
                progress=not args.quiet,
                checkpoint=checkpoint,
            )
            metrics, prediction = evaluate2d(model, kind, problem, test)
            metrics["train_s"] = seconds
            if unseen_problem is not None:
                unseen, _ = evaluate2d(model, kind, unseen_problem, unseen_test)
                metrics["generalisation"] = {
                    "reynolds": args.second_reynolds,
                    **{key: unseen[key] for key in ("rel_l2", "rel_l2_interior", "boundary_error")},
                }
            results[name][kind] = metrics
            predictions[kind] = prediction
            print(
                f"  {kind:7s} rel_l2 {metrics['rel_l2']:.3e}  interior"
                f" {metrics['rel_l2_interior']:.3e}  final {metrics['rel_l2_final']:.3e}"
                f"  bc f64 {metrics['boundary_error']:.1e}  f32 {metrics['boundary_error_f32']:.1e}"
                f"  train {seconds:.0f} s",
                flush=True,
            )
            write_json(
                args.out,
                {
                    **results,
                    "_meta": {"machine": machine, "config": config_dict(config), "sizes": sizes},
                },
            )
        if name == "cavity" and args.figures:
            plot_vorticity(problem, test, predictions, args.figures / "cavity_vorticity.png")
    if args.figures:
        plot_error_vs_time(results, args.figures / "boon2d_error_vs_time.png")
    print_table(results, machine)


def print_table(results: dict, machine: dict) -> None:
    """The machine, then results_pages.boon2d_rows (the table of docs/results/boon-2d.md)."""
    print(
        f"\nBOON 2-D benchmark ({machine['platform']}, {machine['cpu']}, torch {machine['torch']},"
        f" {machine['threads']} thread)\n"
    )
    print("\n".join(boon2d_rows(results)))


def plot_error_vs_time(results: dict, path: Path) -> None:
    """Relative L2 against time for each problem and model (the paper's error-growth picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 3.5), squeeze=False)
    for axis, (name, models) in zip(axes[0], results.items(), strict=True):
        for (kind, metrics), style in zip(models.items(), ("C3-o", "C1--s", "C0-^"), strict=False):
            errors = metrics["rel_l2_per_step"]
            steps = len(errors)
            times = [2.0 * (25 - steps + 1 + k) / 25 for k in range(steps)]
            axis.semilogy(times, errors, style, ms=3, label=LABELS[kind])
        axis.set_title(name)
        axis.set_xlabel("t")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("relative L2 error of the rollout")
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_vorticity(problem, test, predictions: dict, path: Path, sample: int = 0) -> None:
    """Vorticity at t = t_end of one test sample: truth, FNO and BOON predictions and errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from probcons.solvers.cavity import cavity_vorticity

    h = problem.step
    truth = cavity_vorticity(test.states[sample, -1], h).numpy()
    panels = [("truth", truth, "RdBu_r")]
    for kind in ("fno", "boon"):
        predicted = cavity_vorticity(predictions[kind][sample, -1], h).numpy()
        panels.append((f"{LABELS[kind]} prediction", predicted, "RdBu_r"))
        panels.append((f"{LABELS[kind]} |error|", abs(predicted - truth), "magma"))
    # colour limits at the 98th percentile: the lid's corner singularities would hide the flow
    limit = float(np.quantile(abs(truth), 0.98))
    error_limit = max(float(np.quantile(p[1], 0.98)) for p in panels if "error" in p[0])
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for axis, (title, values, cmap) in zip(axes, panels, strict=True):
        bounds = (0, error_limit) if "error" in title else (-limit, limit)
        image = axis.imshow(
            values.T, origin="lower", extent=(0, 1, 0, 1), cmap=cmap, vmin=bounds[0], vmax=bounds[1]
        )
        axis.set_title(title, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
        figure.colorbar(
            image, ax=axis, fraction=0.046, extend="max" if "error" in title else "both"
        )
    figure.suptitle(
        f"lid-driven cavity, Re = {problem.parameters['reynolds']:g}: vorticity at"
        f" t = {problem.t_end:g} after {problem.n_steps} steps (test sample {sample});"
        " colours clipped at the 98th percentile",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
