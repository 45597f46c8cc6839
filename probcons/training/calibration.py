"""Held-out variance calibration of a trained ANP: one scalar s on the decoder's variance.

The ANP's predictive is the mixture (1/S) sum_s N(mu_s, sigma_s^2) over latent draws
z_s ~ p(z | C). Its decoder variance sigma^2 is fitted to the training functions and comes out
too wide or too narrow on new ones (see the README's coverage columns), so the calibrated
predictive is

    p_s(u | C) = (1/S) sum_s N(u | mu_s, s sigma_s^2),

s the maximiser of sum_i log p_s(u_i | C) over the targets u_i of held-out functions: new
parameters of the training range, drawn from their own seed (the checkpoint's training seed
+ CALIBRATION_SEED_OFFSET, disjoint from the training and validation streams), contexts and
targets as in training. One scalar cannot move the mean; and with sigma_G = 0 the ProbConserv
mean of each latent sample, mu + Sigma G^T (G Sigma G^T)^-1 (b - G mu), does not change when
Sigma is scaled, so calibration changes uncertainty only.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
from scipy.optimize import minimize_scalar

from probcons.backbones.anp import ANPNetwork, Batch, load_anp_network
from probcons.checkpoint import load_checkpoint, save_checkpoint
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
        raise ValueError(
            "means, stds, targets: expected (S, *shape), (S, *shape) and (*shape), got "
            f"{describe(means)}, {describe(stds)} and {describe(targets)}"
        )
    if not bool((stds > 0).all()):
        raise ValueError("stds: expected every standard deviation > 0")
    means, stds, targets = (v.to(torch.float64) for v in (means, stds, targets))
    low, high = (math.log(b) for b in bounds)
    result = minimize_scalar(
        lambda log_s: -float(mixture_log_likelihood(means, stds, targets, math.exp(log_s)).sum()),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return math.exp(float(result.x))


@dataclass(frozen=True)
class Calibration:
    """The fitted scale and the held-out scores (nll, mse, latent_share, coverage_90) before
    and after; n_functions functions of n_targets targets each, `samples` latent draws."""

    variance_scale: float
    before: dict[str, float]
    after: dict[str, float]
    n_functions: int
    n_targets: int
    samples: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def calibrate_network(
    network: ANPNetwork, batch: Batch, samples: int, seed: int
) -> tuple[float, dict[str, float], dict[str, float]]:
    """(scale, scores before, scores after) of `network` on the held-out `batch`."""
    network.eval()
    means, stds = predictive_draws(network, batch, samples, torch.Generator().manual_seed(seed))
    fitted = fit_variance_scale(means, stds, batch.target_u)
    before = mixture_scores(means, stds, batch.target_u)
    after = mixture_scores(means, stds, batch.target_u, variance_scale=fitted)
    return fitted, before, after


def calibrate_checkpoint(
    path: str | os.PathLike,
    problem=None,
    n_functions: int = 128,
    samples: int = 32,
    write: bool = True,
) -> Calibration:
    """Fit the variance scale of the ANP checkpoint at `path` and (write=True) store it there.

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
        raise ValueError(
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
    fitted, before, after = calibrate_network(network, batch, samples, seed)
    calibration = Calibration(fitted, before, after, n_functions, options.n_target, samples, seed)
    if write:
        store_calibration(path, calibration, payload)
    return calibration


def store_calibration(
    path: str | os.PathLike, calibration: Calibration, payload: dict | None = None
) -> None:
    """Rewrite the checkpoint at `path` (atomically) with extra variance_scale and calibration;
    payload: the checkpoint as already loaded from `path` (read again if None)."""
    payload = load_checkpoint(path) if payload is None else payload
    extra = {
        **payload["extra"],
        "variance_scale": calibration.variance_scale,
        "calibration": calibration.to_dict(),
    }
    save_checkpoint(path, payload["state"], payload["hyperparameters"], extra)


__all__ = [
    "CALIBRATION_SEED_OFFSET",
    "Calibration",
    "calibrate_checkpoint",
    "calibrate_network",
    "fit_variance_scale",
    "store_calibration",
]
