"""Held-out variance calibration of a trained ANP: a scale s0 and a context exponent gamma.

The ANP's predictive is the mixture (1/S) sum_s N(mu_s, sigma_s^2) over latent draws
z_s ~ p(z | C). Its decoder variance sigma^2 is fitted to the training functions and comes out
too wide or too narrow on new ones (see the README's coverage columns), so the calibrated
predictive is

    p(u | C) = (1/S) sum_s N(u | mu_s, s0 f^gamma sigma_s^2),

f the function's own fit to its contexts (`probcons.backbones.context_scale`: the mean squared
standardised error at the contexts, shrunk to 1), and (s0, gamma >= 0) the maximiser of
sum_i log p(u_i | C) over the targets u_i of held-out functions: new parameters of the training
range, drawn from their own seed (the checkpoint's training seed + CALIBRATION_SEED_OFFSET,
disjoint from the training and validation streams), contexts and targets as in training.
gamma = 0 is one scalar for every function. A positive scale per function cannot move the
mean; and with sigma_G = 0 the ProbConserv mean of each latent sample,
mu + Sigma G^T (G Sigma G^T)^-1 (b - G mu), does not change when Sigma is scaled, so
calibration changes uncertainty only.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
from scipy.optimize import minimize_scalar

from probcons.backbones.anp import ANPNetwork, Batch, load_anp_network
from probcons.backbones.context_scale import context_scale_factor
from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.errors import UsageError
from probcons.training.data import sample_batch
from probcons.training.trainer import (
    TrainingOptions,
    mixture_log_likelihood,
    mixture_scores,
    predictive_draws,
)
from probcons.validation import check_positive_int, describe

CALIBRATION_SEED_OFFSET = 2_000_029
"""Calibration functions come from the training seed + this offset (not training, not validation)."""
SCALE_BOUNDS = (1e-4, 1e4)
"""Search interval of s: four decades either way of the trained variance."""
EXPONENT_BOUNDS = (0.0, 2.0)
"""Search interval of gamma: from one scalar (0) to twice the contexts' own misfit (2)."""


def fit_variance_scale(
    means: torch.Tensor,
    stds: torch.Tensor,
    targets: torch.Tensor,
    bounds: tuple[float, float] = SCALE_BOUNDS,
) -> float:
    """argmax_s sum `mixture_log_likelihood`(s) over s in `bounds` (bounded search on log s).

    means, stds (S, *shape) per latent sample, targets (*shape). With S = 1 the maximiser is
    mean((targets - means)^2 / stds^2) (clipped to the bounds).
    """
    if means.dim() < 2 or means.shape != stds.shape or means.shape[1:] != targets.shape:
        raise UsageError(
            "means, stds, targets: expected (S, *shape), (S, *shape) and (*shape), got "
            f"{describe(means)}, {describe(stds)} and {describe(targets)}"
        )
    if not bool((stds > 0).all()):
        raise UsageError("stds: expected every standard deviation > 0")
    means, stds, targets = (v.to(torch.float64) for v in (means, stds, targets))
    low, high = (math.log(b) for b in bounds)
    result = minimize_scalar(
        lambda log_s: -float(mixture_log_likelihood(means, stds, targets, math.exp(log_s)).sum()),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return math.exp(float(result.x))


def fit_context_calibration(
    means: torch.Tensor,
    stds: torch.Tensor,
    targets: torch.Tensor,
    factors: torch.Tensor,
    bounds: tuple[float, float] = EXPONENT_BOUNDS,
) -> tuple[float, float]:
    """(s0, gamma): argmax of sum `mixture_log_likelihood` with variance s0 f^gamma sigma^2.

    means, stds (S, B, T) per latent sample, targets (B, T), factors f (B,) one per function.
    For each gamma, s0 is `fit_variance_scale` of the sds times f^(gamma/2); gamma is a bounded
    search on `bounds`.
    """
    if means.dim() != 3 or factors.shape != means.shape[1:2]:
        raise UsageError(
            "means, factors: expected (S, B, T) and (B,), got "
            f"{describe(means)} and {describe(factors)}"
        )
    if not bool((factors > 0).all()):
        raise UsageError("factors: expected every factor > 0")
    factors = factors.to(torch.float64)[:, None]
    fitted: dict[float, tuple[float, float]] = {}

    def best(exponent: float) -> tuple[float, float]:
        """(s0, log-likelihood) of the best s0 for this exponent (each exponent fitted once)."""
        if exponent not in fitted:
            scaled = stds.to(torch.float64) * factors ** (exponent / 2)
            scale = fit_variance_scale(means, scaled, targets)
            likelihood = mixture_log_likelihood(means.double(), scaled, targets.double(), scale)
            fitted[exponent] = scale, float(likelihood.sum())
        return fitted[exponent]

    result = minimize_scalar(
        lambda exponent: -best(exponent)[1],
        bounds=bounds,
        method="bounded",
        options={"xatol": 1e-4},
    )
    searched = float(result.x)
    scale, likelihood = best(searched)
    scale_at_zero, likelihood_at_zero = best(0.0)  # the search never evaluates gamma = 0 itself
    if likelihood_at_zero >= likelihood:
        return scale_at_zero, 0.0
    return scale, searched


@dataclass(frozen=True)
class Calibration:
    """What `calibrate_checkpoint` fitted and stores. variance_scale, context_exponent: the
    calibration applied (s0 f^gamma); scalar_scale: the best single scalar (gamma = 0);
    context_scale, context_fit_exponent: the best (s0, gamma), whether applied or not. Held-out
    scores (nll, mse, latent_share, coverage_90): before (the decoder as trained), scalar,
    context, and after (the applied calibration); n_functions functions of n_targets targets
    each, `samples` latent draws."""

    variance_scale: float
    context_exponent: float
    scalar_scale: float
    context_scale: float
    context_fit_exponent: float
    before: dict[str, float]
    scalar: dict[str, float]
    context: dict[str, float]
    after: dict[str, float]
    n_functions: int
    n_targets: int
    samples: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def calibrate_network(
    network: ANPNetwork, batch: Batch, samples: int, seed: int, context: bool = True
) -> dict:
    """Fits and scores of `network` on the held-out `batch`: the keyword arguments of
    `Calibration` from variance_scale to after. context=False applies the single scalar
    (gamma = 0); the context fit is made and reported either way."""
    network.eval()
    n_targets = batch.target_tx.shape[1]
    both = batch._replace(target_tx=torch.cat([batch.target_tx, batch.context_tx], dim=1))
    draws_mean, draws_std = predictive_draws(
        network, both, samples, torch.Generator().manual_seed(seed)
    )  # the same draws z at the targets and at the contexts
    means, stds = draws_mean[..., :n_targets], draws_std[..., :n_targets]
    factors = context_scale_factor(
        draws_mean[..., n_targets:].double(),
        draws_std[..., n_targets:].double(),
        batch.context_u.double(),
    )
    scalar_scale = fit_variance_scale(means, stds, batch.target_u)
    context_scale, exponent = fit_context_calibration(means, stds, batch.target_u, factors)
    scalar = mixture_scores(means, stds, batch.target_u, variance_scale=scalar_scale)
    fitted = mixture_scores(
        means, stds, batch.target_u, variance_scale=context_scale * factors[:, None] ** exponent
    )
    return {
        "variance_scale": context_scale if context else scalar_scale,
        "context_exponent": exponent if context else 0.0,
        "scalar_scale": scalar_scale,
        "context_scale": context_scale,
        "context_fit_exponent": exponent,
        "before": mixture_scores(means, stds, batch.target_u),
        "scalar": scalar,
        "context": fitted,
        "after": fitted if context else scalar,
    }


def calibrate_checkpoint(
    path: str | os.PathLike,
    problem=None,
    n_functions: int = 128,
    samples: int = 32,
    write: bool = True,
    context: bool = True,
) -> Calibration:
    """Fit the variance calibration of the ANP checkpoint at `path` (s0 and gamma; one scalar
    with context=False) and (write=True) store it there.

    The checkpoint's extra gets variance_scale and calibration (`Calibration.to_dict`); the file
    is rewritten atomically. problem: the checkpoint's problem by default.
    """
    from probcons.problems import get_problem

    check_positive_int(n_functions, "n_functions")
    check_positive_int(samples, "samples")
    network, payload = load_anp_network(path)
    hyper = payload["hyperparameters"]
    problem = problem if problem is not None else get_problem(hyper["problem"])
    if getattr(problem, "name", None) != hyper.get("problem"):
        raise UsageError(
            f"problem: this ANP was trained on {hyper.get('problem')!r}, got "
            f"{getattr(problem, 'name', problem)!r}"
        )
    options = TrainingOptions.from_dict(hyper.get("training", {}))
    seed = options.seed + CALIBRATION_SEED_OFFSET
    generator = torch.Generator().manual_seed(seed)
    parameters = problem.sample_parameters(n_functions, generator)
    batch = sample_batch(
        problem, parameters, generator, options.n_target, options.n_strata, options.per_stratum
    )
    fits = calibrate_network(network, batch, samples, seed, context)
    calibration = Calibration(
        **fits, n_functions=n_functions, n_targets=options.n_target, samples=samples, seed=seed
    )
    if write:
        store_calibration(path, calibration, payload)
    return calibration


def store_calibration(
    path: str | os.PathLike, calibration: Calibration, payload: dict | None = None
) -> None:
    """Rewrite the checkpoint at `path` (atomically) with extra variance_scale,
    context_exponent and calibration; payload: the checkpoint as already loaded from `path`
    (read again if None). A stored conditioned calibration (count_scales) is removed: this one
    was fitted to the decoder's variance as trained and replaces it."""
    payload = load_checkpoint(path) if payload is None else payload
    extra = {
        **payload["extra"],
        "variance_scale": calibration.variance_scale,
        "context_exponent": calibration.context_exponent,
        "calibration": calibration.to_dict(),
    }
    extra.pop("count_scales", None)
    extra.pop("conditioned_calibration", None)
    save_checkpoint(path, payload["state"], payload["hyperparameters"], extra)


__all__ = [
    "CALIBRATION_SEED_OFFSET",
    "EXPONENT_BOUNDS",
    "Calibration",
    "calibrate_checkpoint",
    "calibrate_network",
    "fit_context_calibration",
    "fit_variance_scale",
    "store_calibration",
]
