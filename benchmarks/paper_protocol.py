"""The ProbConserv reference code's metrics (`probcons.metrics` protocol "paper": MSE, LL and
signed CE at the time of interest t*) of the ANP, HardC-ANP and ProbConserv-ANP rows of
benchmarks/results/gpme.json, recomputed with the library and the same seeds, so that our rows
compare with the published ones under the published definitions.

    OMP_NUM_THREADS=1 python benchmarks/paper_protocol.py                  # every problem
    OMP_NUM_THREADS=1 python benchmarks/paper_protocol.py --problems stefan --n-functions 20

Per problem and test parameter, functions 0 .. n-1 of gpme.json's run (seed 0): the contexts
(`runner.function_contexts`), the shipped ANP's prediction (`runner.predict_function`, 100
latent samples), the problem's Pyro model's constraint sites (`runner.collect_sites`) and each
method's posterior, exactly as `benchmarks/gpme.py` and `probcons run` make them. No posterior
draws are needed: the paper protocol reads only the mean and variance at t*. Each row also holds
the whole-grid ("probcons" protocol) MSE, LL and CE of the same functions, which equal gpme.json's
to round-off when n is gpme.json's 50. Prints a table with the machine and writes
benchmarks/results/paper_protocol.json (merged, problem by problem).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from probcons import metrics
from probcons.backbones.anp import ANPBackbone, default_checkpoint
from probcons.inference import ExactConditioning
from probcons.io import write_json
from probcons.machine import cpu_name
from probcons.problems import get_problem
from probcons.runner import collect_sites, function_contexts, load_model, predict_function

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "paper_protocol.json"
METHODS = {"anp": "unconstrained", "hardc-anp": "hardc", "probconserv-anp": "probconserv"}
"""gpme.json's row name: the runner's method, applied to the shipped ANP's prediction."""
PAPER_FUNCTIONS = 50
"""Test functions per parameter value in the paper (and in gpme.json's ANP rows)."""


def machine() -> str:
    """One line: CPU, cores, torch threads, Python and torch (as benchmarks/gpme.py prints it)."""
    return (
        f"{cpu_name()}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def evaluate(problem, parameter: float, backbone, model, args) -> dict[str, dict]:
    """Both protocols' MSE, LL and CE of each method over functions 0 .. n-1 (mean and standard
    error), and the mean |CE| at t* (what the signed mean hides)."""
    grid = problem.grid(args.n_t, args.n_x)
    times, positions = grid.mesh()
    truth = problem.solution(times, positions, parameter)
    mass = problem.mass(grid.t, parameter)
    index = grid.time_index(problem.time_of_interest)
    rows: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    for function in range(args.n_functions):
        contexts = function_contexts(problem, parameter, args.seed, function)
        prediction = predict_function(
            backbone, problem, parameter, grid, args.seed, function, contexts
        )
        sites = collect_sites(ExactConditioning(model), prediction, problem, parameter, 0.0)
        for method, runner_method in METHODS.items():
            posterior = sites.posterior(runner_method)
            mean, variance = posterior.mean, posterior.variance
            scores = metrics.protocol_scores(
                "paper", mean, variance, truth, x=grid.x, time_index=index, mass=mass
            )
            scores["paper_ce_abs"] = abs(scores["paper_ce"])
            scores.update(
                metrics.protocol_scores("probcons", mean, variance, truth, constraint=sites)
            )
            rows[method].append(scores)
    return {method: metrics.summarize(values) for method, values in rows.items()}


def table(name: str, key: str, records: dict[str, dict], t_star: float) -> str:
    """Markdown table of one problem and parameter value, both protocols labelled."""
    lines = [
        f"### {name}, parameter {key}: paper protocol (t* = {t_star:g}) and probcons protocol",
        "",
        "| method | fns | MSE@t* (paper) | LL@t* (paper) | CE@t* signed (paper) | mean abs CE@t* "
        "| MSE (probcons) | LL (probcons) | CE (probcons) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, values in records.items():
        cells = [
            f"{values[k]:.3g} ± {values[k + '_se']:.1g}"
            for k in ("paper_mse", "paper_ll", "paper_ce", "paper_ce_abs", "mse", "ll", "ce")
        ]
        lines.append(f"| {method} | {values['n_functions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default="diffusion,pme,stefan")
    parser.add_argument("--params", default=None, help="comma-separated (default: test values)")
    parser.add_argument("--n-functions", type=int, default=PAPER_FUNCTIONS)
    parser.add_argument("--n-t", type=int, default=201)
    parser.add_argument("--n-x", type=int, default=201)
    parser.add_argument("--latent-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    command = "OMP_NUM_THREADS=1 python benchmarks/paper_protocol.py" + "".join(
        f" {flag}" for flag in (argv if argv is not None else sys.argv[1:])
    )
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in [p.strip() for p in args.problems.split(",") if p.strip()]:
        problem = get_problem(name)
        model = load_model(ROOT / "models" / f"{name}.py")
        backbone = ANPBackbone.from_checkpoint(
            default_checkpoint(name, "anp"), n_samples=args.latent_samples, name="anp"
        )
        params = (
            [float(v) for v in args.params.split(",")] if args.params else list(problem.test_values)
        )
        for parameter in params:
            key = f"{parameter:g}"
            started, cpu_started = time.perf_counter(), time.process_time()
            records = evaluate(problem, parameter, backbone, model, args)
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            for values in records.values():
                values["n_functions"] = args.n_functions
            stored.setdefault(name, {})[key] = {
                "protocol": {
                    "n_functions": args.n_functions,
                    "functions": f"0 .. {args.n_functions - 1} of gpme.json's run",
                    "grid": [args.n_t, args.n_x],
                    "latent_samples": args.latent_samples,
                    "time_of_interest": problem.time_of_interest,
                    "sigma_G": 0.0,
                    "seed": args.seed,
                    "paper": metrics.PROTOCOLS["paper"],
                    "probcons": metrics.PROTOCOLS["probcons"],
                },
                "command": command,
                "machine": machine(),
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "methods": records,
            }
            print(f"{name} {key}: {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU")
            print(table(name, key, records, problem.time_of_interest) + "\n", flush=True)
            if not args.no_write:
                write_json(args.out, stored)
    if not args.no_write:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
