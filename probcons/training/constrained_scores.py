"""Scores of ANP checkpoints after ProbConserv on whole x-slices, with k of the contexts.

    python -m probcons.training.constrained_scores --problem stefan \\
        models/checkpoints/stefan-anp.pt models/checkpoints/stefan-anp-e2e.pt --contexts 1,10,100

Held-out functions (parameters from the training range with their own seed, never the test
values), each with its stratified contexts of which a random k are kept, and J x-slices at
stratified times. Each checkpoint predicts through `ANPBackbone.predict` (its stored variance
calibration applied, as the benchmark does; `--as-trained`: none) on the slices' grid, the prediction is conditioned
by `GaussianMixture.condition` on the slices' mass rows, and the truth is scored pointwise:
NLL of the mixture, CRPS (closed form), MSE of the mixture mean, 90 % coverage of
N(mean, total variance). Prints one markdown table.
"""

from __future__ import annotations

import argparse
import math
from typing import NamedTuple

import torch

from probcons.backbones.anp import ANPBackbone
from probcons.constraints import conservation_constraint
from probcons.grid import Grid
from probcons.problems import get_problem, sample_contexts
from probcons.problems.contexts import Contexts
from probcons.training.constrained import mixture_crps, mixture_nll, stratified_times
from probcons.training.trainer import Z_90
from probcons.validation import check_positive_int

CRPS_CHUNK = 8
"""Functions per chunk of the mixture CRPS (S^2 pairs per point: 32 draws, 8 functions of 804
points hold 6.6e6 values)."""
SCORES_SEED = 2_000_003
"""Seed of the held-out functions, contexts and slices (disjoint from training's streams)."""


def context_subset(contexts: Contexts, k: int, generator: torch.Generator) -> Contexts:
    """A random k of the contexts (all of them when k >= their number)."""
    if k >= len(contexts):
        return contexts
    keep = torch.randperm(len(contexts), generator=generator)[:k].sort().values
    return Contexts(t=contexts.t[keep], x=contexts.x[keep], u=contexts.u[keep])


class ConditionedSlices(NamedTuple):
    """A backbone's ProbConserv posteriors on held-out x-slices: per latent draw and function
    the conditioned means and variances (S, B, J, n_x), the truth (B, J, n_x), and the largest
    conservation defect of the mixture means (max |w . mean - U| over functions and slices)."""

    means: torch.Tensor
    variances: torch.Tensor
    truth: torch.Tensor
    conservation: float


def conditioned_slices(
    backbone: ANPBackbone,
    problem,
    n_functions: int,
    k: int,
    n_slices: int = 4,
    n_points: int = 201,
    seed: int = SCORES_SEED,
) -> ConditionedSlices:
    """`n_functions` held-out functions (parameters of the training range from `seed`), each
    with a random k of its contexts and `n_slices` x-slices of `n_points` at stratified times;
    the backbone's prediction conditioned by `GaussianMixture.condition` on the slices' mass."""
    check_positive_int(n_functions, "n_functions")
    check_positive_int(k, "k")
    generator = torch.Generator().manual_seed(seed)
    parameters = problem.sample_parameters(n_functions, generator)
    x = torch.linspace(*(float(v) for v in problem.x_range), n_points, dtype=torch.float64)
    means, variances, truths, conservation = [], [], [], 0.0
    for index, parameter in enumerate(parameters.tolist()):
        contexts = context_subset(sample_contexts(problem, parameter, generator), k, generator)
        grid = Grid(stratified_times(problem.t_range, n_slices, generator), x)
        times, positions = grid.mesh()
        constraint = conservation_constraint(grid, problem.mass(grid.t, parameter))
        draws = torch.Generator().manual_seed(seed + 1 + index)
        posterior = backbone.predict(problem, parameter, contexts, grid, draws).condition(
            constraint
        )
        means.append(posterior.means)
        variances.append(posterior.variances)
        truths.append(problem.solution(times, positions, parameter))
        defect = float((constraint.apply(posterior.mean) - constraint.values).abs().max())
        conservation = max(conservation, defect)
    return ConditionedSlices(
        torch.stack(means, 1), torch.stack(variances, 1), torch.stack(truths), conservation
    )


def slice_scores(slices: ConditionedSlices, variance_scale: float = 1.0) -> dict[str, float]:
    """nll, crps, mse, coverage_90 (means over functions and points) of the conditioned mixture
    with every component's variance times `variance_scale`, and the conservation defect."""
    means, truth = slices.means, slices.truth
    variances = variance_scale * slices.variances
    mean = means.mean(0)
    total = variances.mean(0) + means.var(0, unbiased=False)
    inside = (truth - mean).abs() <= Z_90 * total.sqrt()
    return {
        "nll": float(mixture_nll(means, variances, truth).mean()),
        "crps": float(
            torch.cat(  # by functions: the pairwise term holds S^2 values per point
                [
                    mixture_crps(
                        means[:, i : i + CRPS_CHUNK],
                        variances[:, i : i + CRPS_CHUNK],
                        truth[i : i + CRPS_CHUNK],
                    )
                    for i in range(0, truth.shape[0], CRPS_CHUNK)
                ]
            ).mean()
        ),
        "mse": float((mean - truth).square().mean()),
        "coverage_90": float(inside.double().mean()),
        "conservation": slices.conservation,
    }


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
    return slice_scores(
        conditioned_slices(backbone, problem, n_functions, k, n_slices, n_points, seed)
    )


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
    parser.add_argument(
        "--as-trained",
        action="store_true",
        help="the decoder's variance as trained (no stored calibration applied)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    problem = get_problem(args.problem)
    counts = [int(value) for value in args.contexts.split(",")]
    print(
        f"{problem.name}: {args.n_functions} held-out functions, {args.slices} x-slices of "
        f"{args.points} points, {args.samples} latent draws, ProbConserv on each slice's mass"
    )
    variance = "variance as trained" if args.as_trained else "stored calibration"
    print(f"{variance}\n\n| checkpoint | k | NLL | CRPS | MSE | cov90 | max CE |")
    print("|---|---|---|---|---|---|---|")
    for path in args.checkpoints:
        plain = dict(variance_scale=1.0, context_exponent=0.0, count_scales=None)
        backbone = ANPBackbone.from_checkpoint(
            path, n_samples=args.samples, **(plain if args.as_trained else {})
        )
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
