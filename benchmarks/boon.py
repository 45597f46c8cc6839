"""BOON benchmark: FNO, FNO with boundary-data channels, and BOON on five 1-D operator problems.

Same widths, modes, layers, epochs and seeds for the three models of a problem. Prints relative
L2 (whole domain and interior, i.e. farther than 5 % of the domain from either end), the share
of the squared error within 5 % of each end, the max boundary-condition residual with the model
in float64 and in float32, and training time; writes benchmarks/results/boon.json and the
heat-Neumann figure docs/figures/boon_heat_neumann.png. One CPU thread.

    python benchmarks/boon.py [--epochs 150] [--problems heat-neumann stokes ...]
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from probcons.boon.figures import plot_boundary_profiles
from probcons.boon.problems import OPERATOR_PROBLEMS, make_problem
from probcons.boon.training import (
    MODEL_KINDS,
    TrainingConfig,
    config_dict,
    evaluate,
    predict,
    train_model,
)
from probcons.io import write_json
from probcons.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(OPERATOR_PROBLEMS))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--n-x", type=int, default=65)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/boon.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs/figures/boon_heat_neumann.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = replace(TrainingConfig(), epochs=args.epochs, decay_every=max(1, args.epochs // 4))
    machine = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(f"machine: {machine}")
    print(
        f"config: {config_dict(config)}; n_train {args.n_train}, n_test {args.n_test}, n_x {args.n_x}"
    )
    results: dict = {}
    for name in args.problems:
        problem = make_problem(name, n_x=args.n_x)
        generator = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        train, test = (
            problem.generate(args.n_train, generator),
            problem.generate(args.n_test, generator),
        )
        print(f"\n{name}: {problem.description}")
        print(
            f"  data {time.perf_counter() - start:.1f} s; outputs (n, {problem.n_times}, {problem.n_x})"
        )
        results[name] = {}
        predictions = {}
        for kind in MODEL_KINDS:
            model, seconds = train_model(kind, problem, train, config, args.seed)
            metrics = {**evaluate(model, kind, problem, test), "train_s": seconds}
            results[name][kind] = metrics
            predictions[kind] = predict(model, kind, test).to(torch.float64)
            print(
                f"  {kind:7s} rel_l2 {metrics['rel_l2']:.3e}  interior {metrics['rel_l2_interior']:.3e}"
                f"  share L/R {metrics['error_share_left']:.2f}/{metrics['error_share_right']:.2f}"
                f"  bc f64 {metrics['boundary_error']:.1e}  f32 {metrics['boundary_error_f32']:.1e}"
                f"  train {seconds:.0f} s",
                flush=True,
            )
        if name == "heat-neumann" and args.figure:
            plot_boundary_profiles(
                problem, test, {"FNO": predictions["fno"], "BOON": predictions["boon"]}, args.figure
            )
        payload = {
            **results,
            "_meta": {
                "machine": machine,
                "config": config_dict(config),
                "sizes": vars(args) | {"out": str(args.out), "figure": str(args.figure)},
            },
        }
        write_json(args.out, payload)
    print_table(results, machine)


def print_table(results: dict, machine: dict) -> None:
    print(
        f"\nBOON benchmark ({machine['platform']}, {machine['cpu']}, torch {machine['torch']},"
        f" {machine['threads']} thread)\n"
    )
    header = (
        "| problem | model | rel. L2 | rel. L2 interior | FNO err. share L/R | BC error f64"
        " | BC error f32 | train s |"
    )
    print(header)
    print("|" + "---|" * 8)
    for name, models in results.items():
        share = models["fno"]
        for kind, m in models.items():
            shares = (
                f"{share['error_share_left']:.2f}/{share['error_share_right']:.2f}"
                if kind == "fno"
                else ""
            )
            print(
                f"| {name} | {kind} | {m['rel_l2']:.2e} | {m['rel_l2_interior']:.2e} | {shares}"
                f" | {m['boundary_error']:.1e} | {m['boundary_error_f32']:.1e} | {m['train_s']:.0f} |"
            )


if __name__ == "__main__":
    main()
