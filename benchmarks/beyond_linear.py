"""Bound sites and nonlinear sites against the linear ProbConserv update, with the shipped ANP.

    OMP_NUM_THREADS=1 python benchmarks/beyond_linear.py                  # the committed run
    OMP_NUM_THREADS=1 python benchmarks/beyond_linear.py --n-functions 2 --grid 31x31  # a look

Per problem and test parameter, the same test functions, contexts and ANP prediction (seeds of
`probcons.seeds`, as `probcons run`) go through
- ProbConserv: models/PROBLEM.py (the exact conservation row per time slice);
- ProbConserv + bounds: models/stefan-bounded.py (0 <= u <= 1) or models/pme-bounded.py
  (u >= 0), the same rows and the posterior truncated to the bounds (exact HMC);
- ProbConserv + inflow flux (PME only): models/pme-flux.py, the flux -u^m u_x = (m t)^(1/m)
  at x = 0 as a nonlinear site (iterated linearisation, projected draws).
For each: the fraction of draw points outside the bounds ([0, 1] on Stefan, u >= 0 on PME), the
largest |G u - b| over every draw (CE per draw), the flux site's residual over the draws, MSE,
CRPS, 90 % coverage (over the grid, and over the points where the truth lies strictly inside the
physical range: a central interval of draws that respect u >= 0 cannot hold a truth of exactly
0), the front position's error and its 90 % interval width, and the
seconds per function of the update and the draws. Prints one table per problem with the
machine and writes benchmarks/results/beyond_linear.json (merged by problem with a stored run of
the same settings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from probcons import metrics
from probcons.backbones import get_backbone
from probcons.inference import ExactConditioning
from probcons.io import atomic_write
from probcons.machine import cpu_name
from probcons.problems import get_problem
from probcons.resources import load_model, model_file
from probcons.runner import collect_sites, draw_and_score, predict_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_pages import beyond_linear_rows  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "beyond_linear.json"
CASES = {
    # problem: (parameters, {method: model file})
    "stefan": ((0.6,), {"probconserv": "stefan", "probconserv+bounds": "stefan-bounded"}),
    "pme": (
        (1.0, 3.0, 6.0),
        {
            "probconserv": "pme",
            "probconserv+bounds": "pme-bounded",
            "probconserv+flux": "pme-flux",
        },
    ),
}
PHYSICAL_RANGE = {"stefan": (0.0, 1.0), "pme": (0.0, float("inf"))}
"""Where u lies physically: the fraction of draw points outside it is reported for every method."""
METRICS = (
    "outside",
    "ce_max",
    "site_residual",
    "mse",
    "crps",
    "coverage_90",
    "coverage_90_interior",
    "shock_position_error",
    "shock_interval",
    "seconds",
)


class Settings:
    """What draw_and_score reads: draws per function and the run seed."""

    def __init__(self, draws: int, seed: int) -> None:
        self.draws, self.seed = draws, seed


def score(problem, parameter, grid, truth, sites, method, settings, function) -> dict:
    start = time.perf_counter()
    posterior = sites.posterior("probconserv")
    samples, ordered, scores = draw_and_score(
        posterior, sites, truth, problem, parameter, settings, function
    )
    seconds = time.perf_counter() - start
    low, high = PHYSICAL_RANGE[problem.name]
    interior = (truth > low) & (truth < high)
    covered = metrics.central_interval_coverage(ordered, truth, 0.9, presorted=True)
    row = {
        "coverage_90_interior": float(covered[interior].double().mean()),
        "outside": float(((samples < low) | (samples > high)).double().mean()),
        "ce_max": float(sites.residual(samples).abs().max()),
        "mse": scores["mse"],
        "crps": scores["crps"],
        "coverage_90": scores["coverage_90"],
        "seconds": seconds,
    }
    if sites.nonlinear:
        residuals = sites.site_residuals(samples)
        row["site_residual"] = max(float(r.abs().max()) for r in residuals.values())
    threshold = problem.front_threshold(parameter)
    if threshold is not None:
        index = grid.time_index(problem.time_of_interest)
        positions = metrics.front_positions(samples[:, index], grid.x, threshold)
        interval = torch.quantile(positions, torch.tensor([0.05, 0.95], dtype=positions.dtype))
        row["shock_position_error"] = scores["shock_position_error"]
        row["shock_interval"] = float(interval[1] - interval[0])
    return row


def run_case(name: str, parameter: float, args) -> dict:
    problem = get_problem(name)
    _, models = CASES[name]
    grid = problem.grid(*args.grid)
    times, positions = grid.mesh()
    truth = problem.solution(times, positions, parameter)
    backbone = get_backbone("anp")
    conditionings = {
        method: ExactConditioning(load_model(model_file(model))) for method, model in models.items()
    }
    settings = Settings(args.draws, args.seed)
    per_function: dict[str, list[dict]] = {method: [] for method in models}
    for function in range(args.n_functions):
        prediction = predict_function(backbone, problem, parameter, grid, args.seed, function)
        for method, conditioning in conditionings.items():
            sites = collect_sites(conditioning, prediction, problem, parameter, 0.0)
            row = score(problem, parameter, grid, truth, sites, method, settings, function)
            per_function[method].append(row)
        print(f"  {name} {parameter:g}: function {function + 1}/{args.n_functions}", flush=True)
    summary = {}
    for method, rows in per_function.items():
        summary[method] = {}
        for key in METRICS:
            values = [row[key] for row in rows if key in row]
            if not values:
                continue
            reduce = np.max if key in ("outside", "ce_max", "site_residual") else np.mean
            summary[method][key] = float(reduce(values))
            summary[method][f"{key}_se"] = (
                float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
            )
    return summary


def table(name: str, parameter: float, summary: dict) -> str:
    """results_pages.beyond_linear_rows, the table of docs/results/beyond-linear.md."""
    return "\n".join([f"{name}, parameter {parameter:g}", *beyond_linear_rows(summary)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="stefan,pme")
    parser.add_argument("--n-functions", type=int, default=10)
    parser.add_argument("--grid", default="51x51")
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.grid = tuple(int(part) for part in args.grid.split("x"))
    machine = {
        "cpu": cpu_name(),
        "cores_visible": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    print(f"machine: {machine['cpu']}, {machine['torch_threads']} torch thread(s)")
    results = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/beyond_linear.py "
        f"--n-functions {args.n_functions} --grid {args.grid[0]}x{args.grid[1]} "
        f"--draws {args.draws}",
        "machine": machine,
        "settings": {
            "n_functions": args.n_functions,
            "grid": list(args.grid),
            "draws": args.draws,
            "seed": args.seed,
            "backbone": "anp (shipped checkpoints, 100 latent samples)",
            "reductions": "outside, ce_max, site_residual: max over functions; others: mean "
            "over functions (standard error in *_se)",
        },
        "problems": {},
    }
    if args.out.is_file():  # keep the other problems of a run with the same settings
        stored = json.loads(args.out.read_text())
        if stored.get("settings") == results["settings"]:
            results["problems"] = stored["problems"]
    for name in args.problems.split(","):
        parameters, _ = CASES[name]
        results["problems"][name] = {}
        for parameter in parameters:
            summary = run_case(name, parameter, args)
            results["problems"][name][f"{parameter:g}"] = summary
            print(table(name, parameter, summary), flush=True)
    with atomic_write(args.out) as temporary:
        temporary.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
