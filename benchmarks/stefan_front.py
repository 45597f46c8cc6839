"""Where the Stefan front error comes from: the backbone's mean, its latent, or the draws.

gpme.py places the front of each posterior draw (the first x where the profile at t = 0.05 drops
to u*/2) and reports the mean of those positions. This script splits that number, per test
function, for the ANP, HardC-ANP and ProbConserv-ANP of the shipped Stefan checkpoint, on the
test functions of gpme.py (the same contexts, latent draws and grid, so function 0 is the one in
the shock figure; `--n-functions` of them, u* = `--param`):

    mean front     front of the posterior mean profile, minus the truth alpha sqrt(t)
    latent sd      sd over the latent samples of the front of each sample's mean profile
    draw front     mean front of 1,000 posterior draws (as in the figure), minus the truth
    draw - mean    what the draws' own noise adds to the mean profile's front
    covered        truth inside the 5-95 % interval of the draw fronts
    mass shift     (w . mean - U(t)) / u*, the mass defect of the mean profile at t divided by
                   the jump u* at the front: how far a pure shift of the front that restores the
                   mass would move it (0 for HardC and ProbConserv, which conserve exactly)

and over the functions the mean absolute errors (with standard errors), the mean of
|mean front - mass shift| (the part of the front error that the mass at t does not show), the
share of the ANP's mean-front error that each method removes (1 - sum |e_method| / sum |e_ANP|),
and the correlation over functions of ProbConserv's signed mean-front error with the ANP's, and
with the ANP's mean front error minus its mass shift.

    python benchmarks/stefan_front.py

Writes benchmarks/results/stefan_front.json ({param: {"protocol", "functions", "summary"}},
merged by param).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from probcons import metrics
from probcons.backbones.anp import ANPBackbone, default_checkpoint
from probcons.inference import ExactConditioning
from probcons.io import write_json
from probcons.problems import get_problem, sample_contexts
from probcons.runner import collect_sites, load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anp_selection import check_protocol_arguments  # noqa: E402
from gpme import SHOCK_CHUNK, SHOCK_DRAWS, SHOCK_SEED, machine, one_line_errors  # noqa: E402
from results_pages import stefan_front_table as table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "stefan_front.json"
METHODS = {"anp": "unconstrained", "hardc-anp": "hardc", "probconserv-anp": "probconserv"}


def front_decomposition(
    posterior, grid, index: int, threshold: float, truth: float, truth_grid: float, mass_row
) -> dict:
    """Signed front errors of one posterior at time row `index` (module docstring); truth_grid
    is the front of the exact field on the grid, the reference of gpme.py's `front err`;
    mass_row = (w (n_x,), U(t), jump): the trapezoid weights, the exact mass and u*."""
    components = getattr(posterior, "components", [posterior])
    component_fronts = metrics.front_positions(
        torch.stack([component.mean[index] for component in components]), grid.x, threshold
    )
    mean_front = float(metrics.front_positions(posterior.mean[index][None], grid.x, threshold)[0])
    generator = torch.Generator().manual_seed(SHOCK_SEED)
    draws = torch.cat(
        [
            posterior.sample(SHOCK_CHUNK, generator)[:, index]
            for _ in range(SHOCK_DRAWS // SHOCK_CHUNK)
        ]
    )
    draw_fronts = metrics.front_positions(draws, grid.x, threshold)
    lower, upper = (float(bound) for bound in metrics.central_interval(draw_fronts, 0.9))
    weights, mass, jump = mass_row
    return {
        "mean_front_error": mean_front - truth,
        "mass_shift": float(weights @ posterior.mean[index] - mass) / jump,
        "latent_sd": float(component_fronts.std()) if len(components) > 1 else 0.0,
        "draw_front_error": float(draw_fronts.mean()) - truth,
        "draw_front_error_grid": float(draw_fronts.mean()) - truth_grid,
        "draw_minus_mean": float(draw_fronts.mean()) - mean_front,
        "draw_sd": float(draw_fronts.std()),
        "covered": float(lower <= truth <= upper),
    }


def evaluate(arguments) -> dict:
    """Per-function decompositions and their summary at u* = arguments.param."""
    problem = get_problem("stefan")
    parameter = problem.check_parameter(arguments.param)
    model = load_model(ROOT / "models" / "stefan.py")
    backbone = ANPBackbone.from_checkpoint(arguments.checkpoint, n_samples=arguments.latent_samples)
    grid = problem.grid(arguments.n_t, arguments.n_x)
    index = grid.time_index(problem.time_of_interest)
    threshold = problem.front_threshold(parameter)
    truth = problem.front_position(problem.time_of_interest, parameter)
    exact = problem.solution(*grid.mesh(), parameter)[index]
    truth_grid = float(metrics.front_positions(exact[None], grid.x, threshold)[0])
    functions = []
    for function in tqdm(range(arguments.n_functions), desc="functions", leave=False):
        # gpme.py's seeds: its function `function` with its default --seed 0
        contexts = sample_contexts(problem, parameter, torch.Generator().manual_seed(function))
        prediction = backbone.predict(
            problem, parameter, contexts, grid, torch.Generator().manual_seed(function)
        )
        sites = collect_sites(ExactConditioning(model), prediction, problem, parameter, 0.0)
        constraint = sites.constraint
        mass_row = (constraint.weights[index, 0], float(constraint.values[index, 0]), parameter)
        row = {}
        for name, method in METHODS.items():
            posterior = sites.posterior(method)
            row[name] = front_decomposition(
                posterior, grid, index, threshold, truth, truth_grid, mass_row
            )
        functions.append(row)
    return {
        "protocol": {
            "param": parameter,
            "n_functions": arguments.n_functions,
            "grid": [arguments.n_t, arguments.n_x],
            "latent_samples": arguments.latent_samples,
            "draws": SHOCK_DRAWS,
            "checkpoint": str(arguments.checkpoint),
            "truth": truth,
            "truth_grid": truth_grid,
            "threshold": threshold,
            "machine": machine(),
        },
        "functions": functions,
        "summary": summarize(functions),
    }


def summarize(functions: list[dict]) -> dict:
    """Per method: mean |error| (with standard error), coverage, and the share of the ANP's
    mean-front error removed; two correlations of ProbConserv's signed errors (docstring)."""
    summary: dict[str, dict] = {}
    anp = np.array([row["anp"]["mean_front_error"] for row in functions])
    for name in METHODS:
        values = {
            key: np.array([row[name][key] for row in functions]) for key in functions[0][name]
        }
        entry = {}
        for key in ("mean_front_error", "draw_front_error", "draw_front_error_grid"):
            mean, error = metrics.mean_and_standard_error(np.abs(values[key]))
            entry[f"abs_{key}"], entry[f"abs_{key}_se"] = mean, error
        for key in ("draw_minus_mean", "latent_sd", "draw_sd", "covered"):
            entry[key] = float(values[key].mean())
        entry["abs_mass_shift"] = float(np.abs(values["mass_shift"]).mean())
        entry["abs_unseen_by_mass"] = float(
            np.abs(values["mean_front_error"] - values["mass_shift"]).mean()
        )
        entry["removed_share"] = 1.0 - float(
            np.abs(values["mean_front_error"]).sum() / np.abs(anp).sum()
        )
        summary[name] = entry
    probconserv = np.array([row["probconserv-anp"]["mean_front_error"] for row in functions])
    unseen = anp - np.array([row["anp"]["mass_shift"] for row in functions])
    enough = len(functions) > 2
    summary["correlation_anp_probconserv"] = (
        float(np.corrcoef(anp, probconserv)[0, 1]) if enough else float("nan")
    )
    summary["correlation_probconserv_unseen_by_mass"] = (
        float(np.corrcoef(unseen, probconserv)[0, 1]) if enough else float("nan")
    )
    return summary


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--param", type=float, default=0.6, help="u* (default 0.6)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped one")
    parser.add_argument("--n-functions", type=int, default=50)
    parser.add_argument("--latent-samples", type=int, default=100)
    parser.add_argument("--n-t", type=int, default=201)
    parser.add_argument("--n-x", type=int, default=201)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    arguments = parser.parse_args(argv)
    check_protocol_arguments(parser, arguments)
    arguments.checkpoint = arguments.checkpoint or default_checkpoint("stefan")
    if not arguments.checkpoint.is_file():
        parser.error(f"--checkpoint: {str(arguments.checkpoint)!r} is not a file")
    return arguments


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    print(f"machine: {machine()}")
    with one_line_errors("stefan_front.py"):
        result = evaluate(arguments)
    print(table(result))
    if not arguments.no_write:
        stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        stored[f"{result['protocol']['param']:g}"] = result
        write_json(RESULTS, stored)
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
