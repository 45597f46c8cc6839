"""Held-out calibration of the conditioned predictive, by number of contexts.

An ANP trained through the constraint (`probcons.training.constrained`) is scored by its
ProbConserv posterior, so that is the predictive to calibrate; and a network trained with 100
contexts is over-confident with 1 or 10 (measured: PME 90 % coverage 0.53 at k = 1, 0.96 at
k = 100; docs/results/end-to-end.md). The calibrated predictive of a function with k contexts is

    p(u | C, G u = b) = (1/S) sum_s N(u | mu~_s, c(k) v~_s),

mu~_s, v~_s the s-th latent draw's mean and variance conditioned exactly on the mass rows, and
c(k) a `ContextCountScales`: at each count k_j of a ladder a scale c_j is fitted on held-out
functions with k_j contexts, and c is interpolated linearly in (log k, log c) between the counts.
Two fits (`FITS`):

- "likelihood" (the default): the maximiser of the held-out log-likelihood
  sum_i log p(u_i | C, G u = b) (`fit_variance_scale`, as the unconditioned calibration);
- "coverage": the least c_j at which the central 90 % interval of N(mixture mean, total
  variance) covers 90 % of the held-out values (`fit_coverage_scale`).

They differ where the errors are heavier-tailed than the mixture (a front): there the
likelihood's scale over-covers the 90 % interval, and the coverage scale can cost the likelihood
dearly, down to the search bound when the latent spread alone covers 90 % (measured on Stefan
and the PME: docs/results/end-to-end.md).

With sigma_G = 0 the update is invariant to a scale of the prior covariance in its mean,
mu + c Sigma G^T (c G Sigma G^T)^-1 (b - G mu), and multiplies its covariance by c, so scaling
the decoder's variance by c(k) before the update scales each conditioned component by c(k) and
moves no mean: calibration changes uncertainty only.

Held-out functions: parameters of the training range from the checkpoint's training seed +
CONDITIONED_CALIBRATION_SEED_OFFSET (disjoint from the training, validation, unconditioned
calibration and `constrained_scores` streams), each with a random k of its contexts and x-slices
at stratified times, as `probcons.training.constrained_scores.conditioned_slices`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch

from probcons.backbones.anp import ANPBackbone
from probcons.backbones.context_scale import ContextCountScales
from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.errors import UsageError
from probcons.training.calibration import SCALE_BOUNDS, fit_variance_scale
from probcons.training.constrained_scores import conditioned_slices, slice_scores
from probcons.training.trainer import Z_90, TrainingOptions
from probcons.validation import check_choice, check_positive_int, describe

CONDITIONED_CALIBRATION_SEED_OFFSET = 2_000_081
"""Calibration functions: the training seed + this offset."""
CALIBRATION_COUNTS = (1, 3, 10, 30, 100)
"""The ladder of context counts at which c(k) is fitted (the training contexts at the top)."""
FITS = ("likelihood", "coverage")
"""How each c_j is fitted (module docstring)."""
COVERAGE_LEVEL = 0.9
"""The central interval whose coverage the "coverage" fit matches (Z_90 its half-width in sds)."""


def fit_coverage_scale(
    means: torch.Tensor,
    variances: torch.Tensor,
    targets: torch.Tensor,
    bounds: tuple[float, float] = SCALE_BOUNDS,
) -> float:
    """The least c in `bounds` at which |y - m| <= Z_90 sqrt(c mean_s v_s + var_s mu_s) holds for
    at least COVERAGE_LEVEL of the points (bisection on log c; coverage is non-decreasing in c).

    means, variances (S, *shape) per latent sample, targets (*shape); m the mixture mean.
    """
    if means.dim() < 2 or means.shape != variances.shape or means.shape[1:] != targets.shape:
        raise UsageError(
            "means, variances, targets: expected (S, *shape), (S, *shape) and (*shape), got "
            f"{describe(means)}, {describe(variances)} and {describe(targets)}"
        )
    means, variances, targets = (v.to(torch.float64) for v in (means, variances, targets))
    squared = (targets - means.mean(0)).square() / Z_90**2
    within, between = variances.mean(0), means.var(0, unbiased=False)

    def coverage(log_c: float) -> float:
        return float((squared <= math.exp(log_c) * within + between).double().mean())

    low, high = (math.log(b) for b in bounds)
    if coverage(low) >= COVERAGE_LEVEL:
        return bounds[0]
    if coverage(high) < COVERAGE_LEVEL:
        return bounds[1]
    for _ in range(60):  # coverage(low) < level <= coverage(high)
        middle = 0.5 * (low + high)
        if coverage(middle) >= COVERAGE_LEVEL:
            high = middle
        else:
            low = middle
    return math.exp(high)


@dataclass(frozen=True)
class ConditionedCalibration:
    """What `calibrate_conditioned` fitted and stores: the scales c_j at `counts` (by `fit`), and
    per count the held-out scores of the conditioned predictive as trained ("before") and
    calibrated ("after"): nll, crps, mse, coverage_90, conservation; n_functions functions of
    `slices` x-slices of `points` points, `samples` latent draws, `seed`."""

    counts: tuple[int, ...]
    scales: tuple[float, ...]
    fit: str
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    n_functions: int
    samples: int
    slices: int
    points: int
    seed: int

    @property
    def count_scales(self) -> ContextCountScales:
        return ContextCountScales(self.counts, self.scales)

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_conditioned(
    path: str | os.PathLike,
    problem=None,
    counts: tuple[int, ...] = CALIBRATION_COUNTS,
    n_functions: int = 128,
    samples: int = 32,
    slices: int = 4,
    points: int = 201,
    write: bool = True,
    fit: str = "likelihood",
) -> ConditionedCalibration:
    """Fit c(k) of the ANP checkpoint at `path` on its conditioned predictive (module docstring)
    and (write=True) store it there (`store_conditioned_calibration`). The decoder's variance
    is taken as trained: any stored calibration is not applied while fitting, and is replaced.
    """
    from probcons.problems import get_problem

    check_choice(fit, "fit", FITS)
    scales_at = ContextCountScales(tuple(counts), tuple(1.0 for _ in counts))  # checks counts
    check_positive_int(n_functions, "n_functions")
    check_positive_int(samples, "samples")
    backbone = ANPBackbone.from_checkpoint(
        path, n_samples=samples, variance_scale=1.0, context_exponent=0.0, count_scales=None
    )
    hyper = backbone.metadata["hyperparameters"]
    problem = problem if problem is not None else get_problem(hyper["problem"])
    if getattr(problem, "name", None) != hyper.get("problem"):
        raise UsageError(
            f"problem: this ANP was trained on {hyper.get('problem')!r}, got "
            f"{getattr(problem, 'name', problem)!r}"
        )
    seed = TrainingOptions.from_dict(hyper.get("training", {})).seed
    seed += CONDITIONED_CALIBRATION_SEED_OFFSET
    scales, before, after = [], {}, {}
    for k in scales_at.counts:
        held_out = conditioned_slices(backbone, problem, n_functions, k, slices, points, seed)
        if fit == "coverage":
            scale = fit_coverage_scale(held_out.means, held_out.variances, held_out.truth)
        else:
            scale = fit_variance_scale(held_out.means, held_out.variances.sqrt(), held_out.truth)
        scales.append(scale)
        before[str(k)] = slice_scores(held_out)
        after[str(k)] = slice_scores(held_out, scale)
    calibration = ConditionedCalibration(
        tuple(scales_at.counts),
        tuple(scales),
        fit,
        before,
        after,
        n_functions,
        samples,
        slices,
        points,
        seed,
    )
    if write:
        store_conditioned_calibration(path, calibration)
    return calibration


def store_conditioned_calibration(
    path: str | os.PathLike, calibration: ConditionedCalibration
) -> None:
    """Rewrite the checkpoint at `path` (atomically) with extra count_scales and
    conditioned_calibration; variance_scale 1 and context_exponent 0 (the scales were fitted to
    the decoder's variance as trained, so an unconditioned calibration must not stack on them)."""
    payload = load_checkpoint(path)
    extra = {
        **payload["extra"],
        "variance_scale": 1.0,
        "context_exponent": 0.0,
        "count_scales": calibration.count_scales.to_dict(),
        "conditioned_calibration": calibration.to_dict(),
    }
    extra.pop("calibration", None)
    save_checkpoint(path, payload["state"], payload["hyperparameters"], extra)


__all__ = [
    "CALIBRATION_COUNTS",
    "CONDITIONED_CALIBRATION_SEED_OFFSET",
    "COVERAGE_LEVEL",
    "FITS",
    "ConditionedCalibration",
    "calibrate_conditioned",
    "fit_coverage_scale",
    "store_conditioned_calibration",
]
