"""Per-function metrics of a probabilistic prediction against the exact solution.

Shapes: fields (n_t, n_x); samples (D, n_t, n_x) with draws first. Pointwise scores are
averaged over the grid; summaries over functions are mean and standard error.

Two protocols name the MSE, LL and CE (`PROTOCOLS`, `protocol_scores`): "probcons", over the
whole grid with an absolute CE per time slice (the keys mse, ll, ce), and "paper", the ProbConserv
reference code's, at the time of interest t* only with a signed CE (the keys paper_mse,
paper_ll, paper_ce), so that our numbers compare with the published ones.
"""

from __future__ import annotations

import math

import numpy as np
import scoringrules
import torch
from scipy import stats

from probcons.constraints import LinearConstraint
from probcons.errors import UsageError
from probcons.grid import trapezoid_weights
from probcons.validation import check_choice, check_finite, check_shape

VARIANCE_FLOOR = 1e-12
"""Variance used in the Gaussian log-density where a prediction's variance is smaller."""


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _check_fields(reference_name: str, reference: torch.Tensor, **others: torch.Tensor) -> None:
    """Finite tensors, each of the shape of `reference` (no silent broadcasting)."""
    check_finite(reference, reference_name)
    for name, value in others.items():
        check_shape(value, tuple(reference.shape), name)
        check_finite(value, name)


PROTOCOLS = {
    "probcons": "whole grid: MSE and pointwise LL averaged over all (t, x); CE = mean over the "
    "time slices of |G mean - b| (absolute, so it cannot cancel)",
    "paper": "the ProbConserv reference code's, at the time of interest t* only: MSE and "
    "pointwise LL averaged over x at t*; CE = trapezoid mass of the mean at t* minus the true "
    "mass U(t*), signed (averaged over functions, signs can cancel)",
}
"""What each protocol's MSE, LL and CE mean (the keys of `PROTOCOL_KEYS`)."""
PROTOCOL_KEYS = {
    "probcons": ("mse", "ll", "ce"),
    "paper": ("paper_mse", "paper_ll", "paper_ce"),
}
"""The score keys each protocol writes (metrics.json, the benchmark JSON): MSE, LL, CE."""


def mse(mean: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean squared error of the predictive mean over all points."""
    _check_fields("mean", mean, truth=truth)
    return float(((mean - truth) ** 2).mean())


def conservation_error(field: torch.Tensor, constraint: LinearConstraint) -> float:
    """CE = mean over time slices (and rows) of |G u - b|; exact zeros stay 0."""
    return float(constraint.residual(field).abs().mean())


def gaussian_log_likelihood(
    mean: torch.Tensor, variance: torch.Tensor, truth: torch.Tensor
) -> torch.Tensor:
    """Pointwise log N(truth | mean, variance), variance floored at VARIANCE_FLOOR."""
    _check_fields("mean", mean, variance=variance, truth=truth)
    variance = variance.clamp_min(VARIANCE_FLOOR)
    return -0.5 * (math.log(2 * math.pi) + variance.log() + (truth - mean) ** 2 / variance)


def signed_mass_error(profile: torch.Tensor, x: torch.Tensor, true_mass: float) -> float:
    """CE of one profile (n_x,) on the points `x`: sum_i w_i u_i - U, w the trapezoid weights of
    `x` (the reference's (mean(u[1:]) + mean(u[:-1])) L / 2 on a uniform grid), signed."""
    check_shape(profile, tuple(x.shape), "profile")
    check_finite(profile, "profile")
    weights = trapezoid_weights(x.to(torch.float64))
    return float((weights * profile.to(torch.float64)).sum() - float(true_mass))


def paper_scores(
    mean: torch.Tensor,
    variance: torch.Tensor,
    truth: torch.Tensor,
    x: torch.Tensor,
    true_mass: float,
) -> dict[str, float]:
    """The reference code's metrics of one function at t*, from the profiles (n_x,) there:
    paper_mse = mean_x (m - u)^2, paper_ll = mean_x log N(u | m, v) with the prediction's
    variance v (floored at VARIANCE_FLOOR), paper_ce = w . m - U(t*) (`signed_mass_error`).
    Averaged over functions they are the published MSE, LL and CE."""
    _check_fields("mean", mean, variance=variance, truth=truth)
    return {
        "paper_mse": mse(mean, truth),
        "paper_ll": float(gaussian_log_likelihood(mean, variance, truth).mean()),
        "paper_ce": signed_mass_error(mean, x, true_mass),
    }


def protocol_scores(
    protocol: str,
    mean: torch.Tensor,
    variance: torch.Tensor,
    truth: torch.Tensor,
    *,
    constraint=None,
    x: torch.Tensor | None = None,
    time_index: int | None = None,
    mass: torch.Tensor | None = None,
) -> dict[str, float]:
    """MSE, LL and CE of fields (n_t, n_x) under `protocol` (`PROTOCOLS`), keyed as in
    `PROTOCOL_KEYS`. "probcons" needs `constraint` (G, b: a LinearConstraint or ConstraintSites);
    "paper" needs the grid's `x` (n_x,), `time_index` (the row of t*) and `mass` (n_t,) or the
    mass at t* (a scalar)."""
    check_choice(protocol, "protocol", tuple(PROTOCOLS))
    if protocol == "probcons":
        if constraint is None:
            raise UsageError(
                "constraint: expected the rows G u = b for protocol 'probcons', got None"
            )
        return {
            "mse": mse(mean, truth),
            "ll": float(gaussian_log_likelihood(mean, variance, truth).mean()),
            "ce": float(constraint.residual(mean).abs().mean()),
        }
    missing = [
        name
        for name, value in (("x", x), ("time_index", time_index), ("mass", mass))
        if value is None
    ]
    if missing:
        raise UsageError(
            f"{', '.join(missing)}: expected a value for protocol 'paper' (x, time_index, mass), "
            "got None"
        )
    n_t = mean.shape[0]
    if isinstance(time_index, bool) or not isinstance(time_index, int) or not 0 <= time_index < n_t:
        raise UsageError(f"time_index: expected an integer in [0, {n_t}), got {time_index!r}")
    true_mass = torch.as_tensor(mass, dtype=torch.float64).reshape(-1)
    if true_mass.numel() not in (1, n_t):
        raise UsageError(
            f"mass: expected U(t) at the {n_t} times or one value at t*, got "
            f"{true_mass.numel()} values"
        )
    true_mass = true_mass[time_index] if true_mass.numel() == n_t else true_mass[0]
    return paper_scores(
        mean[time_index], variance[time_index], truth[time_index], x, float(true_mass)
    )


def crps_gaussian(mean: torch.Tensor, variance: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Pointwise closed-form CRPS of N(mean, variance) (scoringrules)."""
    sigma = np.sqrt(np.maximum(_numpy(variance), VARIANCE_FLOOR))
    return scoringrules.crps_normal(_numpy(truth), _numpy(mean), sigma)


def sorted_draws(samples: torch.Tensor) -> torch.Tensor:
    """The draws (D, ...) sorted along the draw axis: one sort serves every quantile level and
    the CRPS of a prediction (pass it with `presorted=True`).

    Sorted by NumPy with the draws last in memory (the layout scoringrules takes; the result is
    a (D, ...) view of it): ten times faster than torch.sort along a leading axis.
    """
    draws_last = np.ascontiguousarray(np.moveaxis(_numpy(samples), 0, -1))
    draws_last.sort(axis=-1)
    return torch.from_numpy(draws_last).movedim(-1, 0)


def crps_ensemble(
    samples: torch.Tensor, truth: torch.Tensor, *, presorted: bool = False
) -> np.ndarray:
    """Pointwise CRPS of the empirical distribution of `samples` (D, ...) (scoringrules,
    quantile-decomposition estimator); presorted: `samples` is sorted along the draws."""
    if not presorted:
        return scoringrules.crps_ensemble(_numpy(truth), _numpy(samples), m_axis=0)
    # draws last and contiguous, as scoringrules lays them out after its own sort
    ensemble = np.ascontiguousarray(np.moveaxis(_numpy(samples), 0, -1))
    return scoringrules.crps_ensemble(_numpy(truth), ensemble, sorted_ensemble=True)


def sample_quantiles(sorted_samples: torch.Tensor, probabilities) -> torch.Tensor:
    """Quantiles (len(probabilities), ...) of draws sorted along the first axis (D, ...):
    torch.quantile's linear interpolation, rank q (D - 1) between its floor and ceiling,
    computed the same way so the values are equal."""
    q = torch.as_tensor(probabilities, dtype=sorted_samples.dtype).reshape(-1)
    ranks = q * (sorted_samples.shape[0] - 1)
    below = ranks.to(torch.long)
    weights = ranks - below
    above = ranks.ceil().to(torch.long)
    shape = (-1,) + (1,) * (sorted_samples.dim() - 1)
    return torch.lerp(
        sorted_samples[below],
        sorted_samples[above],
        weights.reshape(shape).expand(len(q), *sorted_samples.shape[1:]),
    )


def central_interval(
    samples: torch.Tensor, level: float, *, presorted: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pointwise (lower, upper) sample quantiles of the central `level` interval;
    presorted: `samples` is sorted along the draws (`sorted_draws`)."""
    if not 0 < level < 1:
        raise UsageError(f"level: expected a value in (0, 1), got {level!r}")
    tail = (1 - level) / 2
    if presorted:
        lower, upper = sample_quantiles(samples, [tail, 1 - tail])
        return lower, upper
    quantiles = torch.tensor([tail, 1 - tail], dtype=samples.dtype)
    lower, upper = torch.quantile(samples.reshape(samples.shape[0], -1), quantiles, dim=0)
    return lower.reshape(samples.shape[1:]), upper.reshape(samples.shape[1:])


def central_interval_coverage(
    samples: torch.Tensor, truth: torch.Tensor, level: float, *, presorted: bool = False
) -> torch.Tensor:
    """Pointwise: is the truth inside the central `level` interval of the samples?"""
    lower, upper = central_interval(samples, level, presorted=presorted)
    return (truth >= lower) & (truth <= upper)


def gaussian_interval_coverage(
    mean: torch.Tensor, variance: torch.Tensor, truth: torch.Tensor, level: float
) -> torch.Tensor:
    """Pointwise: is the truth inside mean +- z sigma, the central `level` Gaussian interval?"""
    if not 0 < level < 1:
        raise UsageError(f"level: expected a value in (0, 1), got {level!r}")
    half_width = stats.norm.ppf(0.5 + level / 2) * variance.clamp_min(0).sqrt()
    return (truth - mean).abs() <= half_width


def front_positions(profiles: torch.Tensor, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """First x where each profile (D, n_x) drops to `threshold`, linearly interpolated.

    A profile that never drops gives x[-1]; one that starts below gives x[0].
    """
    below = profiles <= threshold
    has_crossing = below.any(dim=-1)
    first = torch.where(
        has_crossing,
        below.float().argmax(dim=-1),
        torch.full_like(has_crossing, x.numel() - 1, dtype=torch.long),
    )
    previous = (first - 1).clamp_min(0)
    upper_value = profiles.gather(-1, previous[..., None])[..., 0]
    lower_value = profiles.gather(-1, first[..., None])[..., 0]
    drop = (upper_value - lower_value).clamp_min(torch.finfo(profiles.dtype).tiny)
    fraction = ((upper_value - threshold) / drop).clamp(0, 1)
    position = x[previous] + fraction * (x[first] - x[previous])
    return torch.where(has_crossing & (first > 0), position, x[first])


def mean_and_standard_error(values) -> tuple[float, float]:
    """Mean over functions and its standard error (ddof = 1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    error = array.std(ddof=1) / math.sqrt(array.size) if array.size > 1 else 0.0
    return float(array.mean()), float(error)


def summarize(per_function: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard error over functions of every metric."""
    summary: dict[str, float] = {}
    for key in per_function[0]:
        mean, error = mean_and_standard_error([scores[key] for scores in per_function])
        summary[key], summary[f"{key}_se"] = mean, error
    return summary
