"""GaussianMixture: law of total variance, sampling, density, per-component constraints."""

import math

import numpy as np
import pytest
import torch

from probcons.constraints import conservation_constraint
from probcons.covariance import DiagonalCovariance
from probcons.grid import Grid
from probcons.mixture import GaussianMixture
from probcons.prediction import GaussianPrediction

TOLERANCE = 1e-10


@pytest.fixture
def grid():
    return Grid.uniform((0.0, 1.0), (0.0, 1.0), 4, 6)


def random_mixture(grid, k=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    components = []
    for _ in range(k):
        mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
        variance = 0.1 + torch.rand(grid.size, generator=generator, dtype=torch.float64)
        components.append(GaussianPrediction(mean, DiagonalCovariance(variance), grid))
    return GaussianMixture(components)


def test_variance_is_the_law_of_total_variance(grid):
    mixture = random_mixture(grid)
    means = np.stack([c.mean.numpy() for c in mixture.components])
    variances = np.stack(
        [c.covariance.diagonal().numpy().reshape(grid.shape) for c in mixture.components]
    )
    expected_mean = np.zeros(grid.shape)
    expected_var = np.zeros(grid.shape)
    for j in range(grid.n_t):
        for i in range(grid.n_x):
            m = means[:, j, i]
            expected_mean[j, i] = m.sum() / len(m)
            # E[u^2] - E[u]^2 with E[u^2] = mean_k (var_k + mu_k^2)
            second = np.mean(variances[:, j, i] + m**2)
            expected_var[j, i] = second - expected_mean[j, i] ** 2
    np.testing.assert_allclose(mixture.mean.numpy(), expected_mean, atol=TOLERANCE)
    np.testing.assert_allclose(mixture.variance.numpy(), expected_var, atol=TOLERANCE)
    torch.testing.assert_close(mixture.variance, mixture.within_variance + mixture.between_variance)


def test_sample_moments_match(grid):
    mixture = random_mixture(grid, k=3)
    draws = mixture.sample(40_000, torch.Generator().manual_seed(1))
    assert draws.shape == (40_000, *grid.shape)
    assert float((draws.mean(0) - mixture.mean).abs().max()) < 0.05
    assert float((draws.var(0) / mixture.variance - 1).abs().max()) < 0.08


def test_log_density_matches_explicit_sum(grid):
    mixture = random_mixture(grid, k=4)
    values = torch.zeros(grid.shape, dtype=torch.float64)
    density = torch.zeros(grid.shape, dtype=torch.float64)
    for component in mixture.components:
        var = component.variance
        density += torch.exp(-0.5 * (values - component.mean) ** 2 / var) / torch.sqrt(
            2 * math.pi * var
        )
    torch.testing.assert_close(mixture.log_density(values), torch.log(density / len(mixture)))


def test_single_component_mixture_is_that_gaussian(grid):
    component = random_mixture(grid, k=1).components[0]
    mixture = GaussianMixture([component])
    torch.testing.assert_close(mixture.variance, component.variance)
    assert mixture.latent_variance_share() == 0.0


def test_condition_per_component_keeps_between_variance(grid):
    mixture = random_mixture(grid, k=4)
    mass = torch.linspace(0.5, 1.0, grid.n_t, dtype=torch.float64)
    constraint = conservation_constraint(grid, mass)
    conditioned = mixture.condition(constraint)
    assert len(conditioned) == len(mixture)
    for component in conditioned.components:
        assert float(constraint.residual(component.mean).abs().max()) < TOLERANCE
    # Law of total variance after conditioning: the spread of conditioned means is kept.
    expected = conditioned.within_variance + conditioned.between_variance
    torch.testing.assert_close(conditioned.variance, expected)
    assert float(conditioned.between_variance.sum()) > 0
    projected = mixture.project(constraint)
    for component, original in zip(projected.components, mixture.components, strict=True):
        assert float(constraint.residual(component.mean).abs().max()) < TOLERANCE
        torch.testing.assert_close(component.variance, original.variance)


def test_condition_options_reach_every_component(grid):
    mixture = random_mixture(grid, k=3)
    mass = conservation_constraint(grid, torch.zeros(grid.shape[0]))
    redundant = [mass, mass]  # the same exact rows twice: singular unless pinv is asked for
    with pytest.raises(ValueError):
        mixture.condition(redundant)
    once = mixture.condition(mass)
    twice = mixture.condition(redundant, singular="pinv")
    for single, doubled in zip(once.components, twice.components, strict=True):
        assert torch.allclose(single.mean, doubled.mean, atol=1e-10)
    assert torch.allclose(
        mixture.project(redundant, singular="pinv").mean, mixture.project(mass).mean, atol=1e-10
    )


def test_moment_matched_gaussian(grid):
    mixture = random_mixture(grid)
    gaussian = mixture.moment_matched()
    torch.testing.assert_close(gaussian.mean, mixture.mean)
    torch.testing.assert_close(gaussian.variance, mixture.variance)


def test_argument_errors(grid):
    with pytest.raises(ValueError, match="components"):
        GaussianMixture([])
    with pytest.raises(ValueError, match="components"):
        GaussianMixture([object()])
    other = Grid.uniform((0.0, 1.0), (0.0, 1.0), 3, 6)
    mixed = [random_mixture(grid, k=1).components[0], random_mixture(other, k=1).components[0]]
    with pytest.raises(ValueError, match=r"components\[1\]"):
        GaussianMixture(mixed)
    mixture = random_mixture(grid)
    with pytest.raises(ValueError, match="n"):
        mixture.sample(0)
    with pytest.raises(ValueError, match="values"):
        mixture.log_density(torch.zeros(2, 2))
