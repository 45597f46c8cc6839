"""Scores of ANP checkpoints after ProbConserv on whole x-slices, with k of the contexts.

    python -m probcons.training.constrained_scores --problem stefan \\
        models/checkpoints/stefan-anp.pt models/checkpoints/stefan-anp-e2e.pt --contexts 1,10,100

Held-out functions (parameters from the training range with their own seed, never the test
values), each with its stratified contexts of which a random k are kept, and J x-slices at
stratified times. Each checkpoint predicts through `ANPBackbone.predict` (its stored variance
calibration applied, as the benchmark does) on the slices' grid, the prediction is conditioned
by `GaussianMixture.condition` on the slices' mass rows, and the truth is scored pointwise:
NLL of the mixture, CRPS (closed form), MSE of the mixture mean, 90 % coverage of
N(mean, total variance). Prints one markdown table.
"""

from __future__ import annotations

import argparse
import math

import torch

from probcons.backbones.anp import ANPBackbone
from probcons.constraints import conservation_constraint
from probcons.grid import Grid
from probcons.problems import get_problem, sample_contexts
from probcons.problems.contexts import Contexts
from probcons.training.constrained import mixture_crps, mixture_nll, stratified_times
from probcons.training.trainer import Z_90
from probcons.validation import check_positive_int

SCORES_SEED = 2_000_003
"""Seed of the held-out functions, contexts and slices (disjoint from training's streams)."""


def context_subset(contexts: Contexts, k: int, generator: torch.Generator) -> Contexts:
    """A random k of the contexts (all of them when k >= their number)."""
    if k >= len(contexts):
        return contexts
    keep = torch.randperm(len(contexts), generator=generator)[:k].sort().values
    return Contexts(t=contexts.t[keep], x=contexts.x[keep], u=contexts.u[keep])


def conditioned_scores(
    backbone: ANPBackbone,
    problem,
    n_functions: int,
    k: int,
    n_slices: int = 4,
    n_points: int = 201,
    seed: int = SCORES_SEED,
) -> dict[str, float]:
    """nll, crps, mse, coverage_90 (means over functions and points) and conservation (max
    |w . mean - U|) of the backbone's ProbConserv posterior on the slices, k contexts each."""
    check_positive_int(n_functions, "n_functions")
    check_positive_int(k, "k")
    generator = torch.Generator().manual_seed(seed)
    parameters = problem.sample_parameters(n_functions, generator)
    x = torch.linspace(*(float(v) for v in problem.x_range), n_points, dtype=torch.float64)
    totals = {"nll": 0.0, "crps": 0.0, "mse": 0.0, "coverage_90": 0.0, "conservation": 0.0}
    for index, parameter in enumerate(parameters.tolist()):
        contexts = context_subset(sample_contexts(problem, parameter, generator), k, generator)
        grid = Grid(stratified_times(problem.t_range, n_slices, generator), x)
        times, positions = grid.mesh()
        truth = problem.solution(times, positions, parameter)
        constraint = conservation_constraint(grid, problem.mass(grid.t, parameter))
        draws = torch.Generator().manual_seed(seed + 1 + index)
        posterior = backbone.predict(problem, parameter, contexts, grid, draws).condition(
            constraint
        )
        means, variances = posterior.means, posterior.variances
        mean, total = posterior.mean, posterior.variance
        totals["nll"] += float(mixture_nll(means, variances, truth).mean())
        totals["crps"] += float(mixture_crps(means, variances, truth).mean())
        totals["mse"] += float((mean - truth).square().mean())
        inside = (truth - mean).abs() <= Z_90 * total.sqrt()
        totals["coverage_90"] += float(inside.double().mean())
        defect = float((constraint.apply(mean) - constraint.values).abs().max())
        totals["conservation"] = max(totals["conservation"], defect)
    return {
        key: value if key == "conservation" else value / n_functions
        for key, value in totals.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="ANP checkpoints (.pt)")
    parser.add_argument("--problem", required=True)
    parser.add_argument("--contexts", default="1,10,100", help="comma-separated k")
    parser.add_argument("--n-functions", type=int, default=32)
    parser.add_argument("--samples", type=int, default=32, help="latent draws per function")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--points", type=int, default=201)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    problem = get_problem(args.problem)
    counts = [int(value) for value in args.contexts.split(",")]
    print(
        f"{problem.name}: {args.n_functions} held-out functions, {args.slices} x-slices of "
        f"{args.points} points, {args.samples} latent draws, ProbConserv on each slice's mass"
    )
    print("\n| checkpoint | k | NLL | CRPS | MSE | cov90 | max CE |\n|---|---|---|---|---|---|---|")
    for path in args.checkpoints:
        backbone = ANPBackbone.from_checkpoint(path, n_samples=args.samples)
        for k in counts:
            scores = conditioned_scores(
                backbone, problem, args.n_functions, k, args.slices, args.points
            )
            print(
                f"| {path} | {k} | {scores['nll']:.3f} | {scores['crps']:.3e} | "
                f"{scores['mse']:.3e} | {scores['coverage_90']:.3f} | "
                f"{scores['conservation']:.1e} |",
                flush=True,
            )
    return 0 if all(math.isfinite(c) for c in counts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
