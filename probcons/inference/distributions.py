"""Pyro distributions that carry probcons objects: a Gaussian field and a linear constraint site."""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

from probcons.constraints import LinearConstraint
from probcons.covariance import (
    BlockCovariance,
    DenseCovariance,
    DiagonalCovariance,
    LowRankCovariance,
)
from probcons.errors import UsageError
from probcons.mixture import GaussianMixture
from probcons.posterior import Posterior

EXACT_TOLERANCE = 1e-8
"""An exact (noise_std = 0) constraint row counts as satisfied when |G u - b| <= this."""


class GaussianField(TorchDistribution):
    """u ~ a probcons Posterior over a (t, x) grid, event shape (n_t, n_x): a Gaussian
    (GaussianPrediction) or an equal-weight mixture of them (GaussianMixture)."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, prediction: Posterior, validate_args=None) -> None:
        if not isinstance(prediction, Posterior):
            raise UsageError(
                "prediction: expected a probcons Posterior (GaussianPrediction, "
                f"GaussianMixture), got {type(prediction).__name__}"
            )
        self.prediction = prediction
        super().__init__(torch.Size(), torch.Size(prediction.grid.shape), validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.prediction.mean

    @property
    def variance(self) -> torch.Tensor:
        return self.prediction.variance

    def rsample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        draws = self.prediction.sample(max(1, math.prod(shape)))
        return draws.reshape(*shape, *self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Gaussian log density for diagonal, dense, low-rank and block covariances; a mixture's
        is log (1/K) sum_k p_k(value)."""
        if isinstance(self.prediction, GaussianMixture):
            parts = [GaussianField(c).log_prob(value) for c in self.prediction.components]
            return torch.logsumexp(torch.stack(parts), 0) - math.log(len(parts))
        covariance = self.prediction.covariance
        flat = (value - self.prediction.mean).reshape(*value.shape[:-2], -1).to(torch.float64)
        zeros = torch.zeros(covariance.size, dtype=torch.float64)
        if isinstance(covariance, DiagonalCovariance):
            scale = covariance.variance.sqrt()
            return torch.distributions.Normal(zeros, scale).log_prob(flat).sum(-1)
        if isinstance(covariance, LowRankCovariance):
            return torch.distributions.LowRankMultivariateNormal(
                zeros, covariance.factor, covariance.diagonal_part
            ).log_prob(flat)
        if isinstance(covariance, DenseCovariance):
            return torch.distributions.MultivariateNormal(
                zeros, scale_tril=covariance.root()
            ).log_prob(flat)
        if isinstance(covariance, BlockCovariance):
            sliced = flat.reshape(*flat.shape[:-1], covariance.n_t, covariance.n_x)
            slice_zeros = torch.zeros(covariance.n_x, dtype=torch.float64)
            normal = torch.distributions.MultivariateNormal(
                slice_zeros, scale_tril=covariance.root()
            )
            return normal.log_prob(sliced).sum(-1)
        raise NotImplementedError(
            f"log_prob: a {type(covariance).__name__} is degenerate (an exactly constrained "
            "posterior has no density on the full grid); use samples or marginal moments"
        )


class ConstraintObservation(TorchDistribution):
    """y = G u + eps for a LinearConstraint G and a field u; event shape (n_t, r)."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, constraint: LinearConstraint, field: torch.Tensor, validate_args=None):
        if not isinstance(constraint, LinearConstraint):
            raise UsageError(
                f"constraint: expected a LinearConstraint, got {type(constraint).__name__}"
            )
        grid_shape = (constraint.n_t, constraint.n_x)
        if tuple(field.shape[-2:]) != grid_shape:
            raise UsageError(
                f"field: expected last dimensions {grid_shape}, got {tuple(field.shape)}: the "
                "constraint is on another grid"
            )
        self.constraint = constraint
        self.field = field
        self.loc = constraint.apply(field)
        batch_shape = self.loc.shape[:-2]
        super().__init__(batch_shape, self.loc.shape[-2:], validate_args=False)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.loc.shape
        noise = torch.randn(shape, dtype=self.loc.dtype) * self.constraint.noise_std
        return self.loc + noise

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Gaussian for noisy rows; 0 or -inf for exact rows (satisfied within EXACT_TOLERANCE)."""
        noise = self.constraint.noise_std
        residual = value - self.loc
        exact = noise == 0
        safe = torch.where(exact, torch.ones_like(noise), noise)
        gaussian = torch.distributions.Normal(0.0, safe).log_prob(residual)
        indicator = torch.where(residual.abs() <= EXACT_TOLERANCE, 0.0, -math.inf)
        return torch.where(exact, indicator, gaussian).sum((-2, -1))
