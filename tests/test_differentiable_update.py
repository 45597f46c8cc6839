"""The exact update is differentiable: gradients of a loss on the conditioned moments with
respect to the prior's mean and variance equal finite differences (float64 gradcheck).

Central differences use a step of 1e-4: their truncation error is about 1e-9 here, while at
1e-6 the update's own round-off (its refinement steps stop on a tolerance) makes the
quotients noisy at 1e-6; the analytic gradients agree with the 1e-4 quotients to 1e-8."""

import pytest
import torch

from probcons import (
    DenseCovariance,
    DiagonalCovariance,
    GaussianPrediction,
    Grid,
    LowRankCovariance,
    UsageError,
    condition,
    conservation_constraint,
    dirichlet_constraint,
)
from probcons.covariance import BlockCovariance

GRID = Grid.uniform((0.0, 1.0), (0.0, 1.0), 3, 5)
MASS = conservation_constraint(GRID, torch.linspace(0.5, 1.0, 3, dtype=torch.float64))
TRUTH = torch.randn(GRID.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
FACTOR = torch.randn(GRID.size, 2, generator=torch.Generator().manual_seed(4)).double() * 0.3


def covariance(kind: str, variance: torch.Tensor):
    if kind == "diagonal":
        return DiagonalCovariance(variance)
    if kind == "lowrank":
        return LowRankCovariance(variance, FACTOR)
    if kind == "block":
        return BlockCovariance(torch.diag_embed(variance.reshape(GRID.shape)))
    return DenseCovariance(torch.diag(variance) + FACTOR @ FACTOR.T)


def gaussian_nll(mean, variance, kind, constraint):
    posterior = GaussianPrediction(mean, covariance(kind, variance), GRID).condition(constraint)
    var = posterior.variance
    return 0.5 * ((TRUTH - posterior.mean) ** 2 / var + var.log()).sum()


@pytest.mark.parametrize("kind", ["diagonal", "lowrank", "block", "dense"])
@pytest.mark.parametrize("rows", ["mass", "mass+noisy-wall"])
def test_conditioned_nll_gradient_matches_finite_differences(kind, rows):
    constraint = (
        MASS if rows == "mass" else MASS.stack(dirichlet_constraint(GRID, 0.3, noise_std=0.1))
    )
    generator = torch.Generator().manual_seed(0)
    variance = torch.rand(GRID.size, generator=generator, dtype=torch.float64) + 0.5
    mean = torch.randn(GRID.shape, generator=generator, dtype=torch.float64)
    inputs = (mean.requires_grad_(True), variance.requires_grad_(True))
    assert torch.autograd.gradcheck(
        lambda m, v: gaussian_nll(m, v, kind, constraint), inputs, eps=1e-4, atol=1e-6, rtol=1e-5
    )


def test_differentiated_moments_equal_the_plain_ones():
    variance = torch.rand(GRID.size, generator=torch.Generator().manual_seed(1)).double() + 0.5
    mean = torch.zeros(GRID.shape, dtype=torch.float64)
    for kind in ("diagonal", "lowrank", "block", "dense"):
        plain = GaussianPrediction(mean, covariance(kind, variance), GRID).condition(MASS)
        traced = GaussianPrediction(
            mean.clone().requires_grad_(True),
            covariance(kind, variance.clone().requires_grad_(True)),
            GRID,
        ).condition(MASS)
        assert torch.allclose(traced.mean, plain.mean, atol=1e-13, rtol=0), kind
        assert torch.allclose(traced.variance, plain.variance, atol=1e-13, rtol=0), kind
        assert traced.mean.requires_grad and traced.variance.requires_grad


def test_bad_rcond_and_empty_factor_are_named():
    prior = GaussianPrediction(torch.zeros(GRID.shape), DiagonalCovariance(torch.ones(15)), GRID)
    for rcond in (None, "abc", -1.0, float("nan"), 1.0):
        with pytest.raises(UsageError, match="rcond: expected a number in"):
            condition(prior, MASS, rcond=rcond)
    with pytest.raises(UsageError, match="factor: expected at least one column"):
        LowRankCovariance(torch.ones(15), torch.ones(15, 0))
