"""Exact conditioning equals brute-force Gaussian conditioning (Schur complement in NumPy)."""

import numpy as np
import pytest
import torch
from conftest import random_covariances

from probcons.conditioning import ConditionedCovariance, condition, project
from probcons.constraints import (
    conservation_constraint,
    dirichlet_constraint,
    neumann_constraint,
    periodic_constraint,
)
from probcons.constraints.linear import LinearConstraint
from probcons.covariance import (
    BlockCovariance,
    DenseCovariance,
    DiagonalCovariance,
    LowRankCovariance,
)
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction

STRUCTURES = ["diagonal", "lowrank", "dense", "block"]


def brute_force(mean, covariance, matrix, values, noise):
    """Joint-Gaussian conditioning with NumPy: Schur complement of [[Sigma, Sigma G^T], ...]."""
    joint_cross = covariance @ matrix.T
    schur = matrix @ covariance @ matrix.T + np.diag(noise**2)
    gain = np.linalg.solve(schur, joint_cross.T).T
    return mean + gain @ (values - matrix @ mean), covariance - gain @ joint_cross.T


def all_constraints(grid, noise, seed=1):
    generator = torch.Generator().manual_seed(seed)
    mass = torch.rand(grid.n_t, generator=generator, dtype=torch.float64)
    right = torch.rand(grid.n_t, generator=generator, dtype=torch.float64)
    return conservation_constraint(grid, mass, noise).stack(
        dirichlet_constraint(grid, left=0.3, right=right, noise_std=noise),
        neumann_constraint(grid, right=-1.0, noise_std=noise),
    )


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("noise", [0.0, 1e-3, 0.5])
def test_matches_brute_force(small_grid, structure, noise):
    covariance = random_covariances(small_grid)[structure]
    mean = torch.randn(
        small_grid.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    constraint = all_constraints(small_grid, noise)
    posterior = condition(GaussianPrediction(mean, covariance, small_grid), constraint)
    expected_mean, expected_cov = brute_force(
        mean.reshape(-1).numpy(),
        covariance.to_dense().numpy(),
        constraint.to_dense().numpy(),
        constraint.values.reshape(-1).numpy(),
        constraint.noise_std.reshape(-1).numpy(),
    )
    np.testing.assert_allclose(posterior.mean.reshape(-1).numpy(), expected_mean, atol=1e-10)
    dense = posterior.covariance.to_dense().numpy()
    np.testing.assert_allclose(dense, expected_cov, atol=1e-10)
    np.testing.assert_allclose(
        posterior.variance.reshape(-1).numpy(), np.diag(expected_cov), atol=1e-10
    )


@pytest.mark.parametrize("structure", STRUCTURES)
def test_exact_constraint_holds_for_every_sample(small_grid, structure):
    covariance = random_covariances(small_grid)[structure]
    prior = GaussianPrediction(torch.zeros(small_grid.shape), covariance, small_grid)
    constraint = all_constraints(small_grid, 0.0)
    posterior = condition(prior, constraint)
    draws = posterior.sample(500, torch.Generator().manual_seed(3))
    assert constraint.residual(draws).abs().max() < 1e-10
    assert constraint.residual(posterior.mean).abs().max() < 1e-10
    assert constraint.residual(prior.sample(10)).abs().max() > 1e-3


@pytest.mark.parametrize("structure", STRUCTURES)
def test_posterior_samples_have_posterior_moments(small_grid, structure):
    covariance = random_covariances(small_grid)[structure]
    prior = GaussianPrediction(torch.zeros(small_grid.shape), covariance, small_grid)
    posterior = condition(prior, all_constraints(small_grid, 0.1))
    draws = posterior.sample(20000, torch.Generator().manual_seed(4)).reshape(20000, -1)
    empirical = torch.cov(draws.T)
    expected = posterior.covariance.to_dense()
    scale = expected.diagonal().max()
    assert (empirical - expected).abs().max() < 0.05 * scale
    assert (draws.mean(0) - posterior.mean.reshape(-1)).abs().max() < 0.05 * scale.sqrt()


@pytest.mark.parametrize("structure", STRUCTURES)
def test_posterior_covariance_symmetric_psd(small_grid, structure):
    covariance = random_covariances(small_grid)[structure]
    prior = GaussianPrediction(torch.zeros(small_grid.shape), covariance, small_grid)
    dense = condition(prior, all_constraints(small_grid, 0.0)).covariance.to_dense()
    assert torch.allclose(dense, dense.T, atol=1e-12)
    eigenvalues = torch.linalg.eigvalsh(dense)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()


def test_correction_lands_where_variance_is(small_grid):
    variance = torch.full((small_grid.size,), 1e-4, dtype=torch.float64)
    variance.reshape(small_grid.shape)[:, 3] = 1.0
    prior = GaussianPrediction(
        torch.zeros(small_grid.shape), DiagonalCovariance(variance), small_grid
    )
    constraint = conservation_constraint(small_grid, torch.ones(small_grid.n_t))
    shift = condition(prior, constraint).mean
    assert (shift[:, 3] > 100 * shift[:, 0].abs()).all()


def test_hardc_is_orthogonal_projection(small_grid):
    covariance = random_covariances(small_grid)["diagonal"]
    mean = torch.randn(small_grid.shape, dtype=torch.float64)
    constraint = all_constraints(small_grid, 0.0)
    projected = project(GaussianPrediction(mean, covariance, small_grid), constraint)
    matrix = constraint.to_dense()
    values = constraint.values.reshape(-1)
    expected = mean.reshape(-1) - matrix.T @ torch.linalg.solve(
        matrix @ matrix.T, matrix @ mean.reshape(-1) - values
    )
    assert torch.allclose(projected.mean.reshape(-1), expected, atol=1e-12)
    assert projected.covariance is covariance


def test_redundant_rows_are_reported(small_grid):
    covariance = random_covariances(small_grid)["diagonal"]
    prior = GaussianPrediction(torch.zeros(small_grid.shape), covariance, small_grid)
    mass = conservation_constraint(small_grid, torch.ones(small_grid.n_t))
    with pytest.raises(ValueError, match="singular"):
        condition(prior, mass.stack(mass))


def test_zero_variance_under_constraint_is_reported(small_grid):
    variance = torch.ones(small_grid.size, dtype=torch.float64)
    variance.reshape(small_grid.shape)[:, 0] = 0.0
    prior = GaussianPrediction(
        torch.zeros(small_grid.shape), DiagonalCovariance(variance), small_grid
    )
    with pytest.raises(ValueError, match="zero prior variance"):
        condition(prior, dirichlet_constraint(small_grid, left=1.0))
    noisy = condition(prior, dirichlet_constraint(small_grid, left=1.0, noise_std=0.1))
    assert torch.isfinite(noisy.mean).all()


def test_empty_constraint_list_is_identity(small_grid):
    prior = GaussianPrediction(
        torch.zeros(small_grid.shape), random_covariances(small_grid)["dense"], small_grid
    )
    assert condition(prior, []) is prior


def test_mismatched_grid_is_rejected(small_grid):
    prior = GaussianPrediction(
        torch.zeros(small_grid.shape), random_covariances(small_grid)["diagonal"], small_grid
    )
    other = Grid.uniform((0, 1), (0, 1), 3, 7)
    with pytest.raises(ValueError, match="constraint: expected rows on a grid of shape"):
        condition(prior, periodic_constraint(other))


def test_large_diagonal_update_is_linear_in_n():
    grid = Grid.uniform((0, 1), (0, 1), 1000, 1000)
    prior = GaussianPrediction(
        torch.zeros(grid.shape), DiagonalCovariance(torch.ones(grid.size)), grid
    )
    constraint = conservation_constraint(grid, torch.ones(grid.n_t)).stack(
        dirichlet_constraint(grid, left=0.0, right=0.0)
    )
    posterior = condition(prior, constraint)
    assert isinstance(posterior.covariance, ConditionedCovariance)
    assert constraint.residual(posterior.mean).abs().max() < 1e-10
    variance = posterior.variance
    assert variance[:, 0].abs().max() < 1e-12 and (variance[:, 1:-1] > 0.99).all()


# --- the pseudo-inverse update, singular="pinv" ---------------------------------------------


def brute_force_pinv(mean, covariance, matrix, values, noise):
    """Conditioning with NumPy's pseudo-inverse of the Schur complement S = G Sigma G^T + R."""
    joint_cross = covariance @ matrix.T
    schur = matrix @ covariance @ matrix.T + np.diag(noise**2)
    gain = joint_cross @ np.linalg.pinv(schur, rcond=1e-10, hermitian=True)
    return mean + gain @ (values - matrix @ mean), covariance - gain @ joint_cross.T


def masked(covariance, mask):
    """The same structure with zero variance (and covariance) where `mask` is False, (N,)."""
    keep = mask.to(torch.float64)
    if isinstance(covariance, DiagonalCovariance):
        return DiagonalCovariance(covariance.variance * keep)
    if isinstance(covariance, LowRankCovariance):
        return LowRankCovariance(covariance.diagonal_part * keep, covariance.factor * keep[:, None])
    if isinstance(covariance, BlockCovariance):
        rows = keep.reshape(covariance.n_t, covariance.n_x)
        return BlockCovariance(covariance.blocks * rows[:, :, None] * rows[:, None, :])
    return DenseCovariance(covariance.matrix * keep[:, None] * keep[None, :])


def singular_case(grid, structure, case):
    """(prior, constraint) whose S is singular but whose rows agree (consistent)."""
    covariance = random_covariances(grid)[structure]
    generator = torch.Generator().manual_seed(7)
    mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    mass = conservation_constraint(grid, torch.rand(grid.n_t, generator=generator).double())
    if case == "redundant":  # the mass rows again, scaled by 3, and a row a sum of two others
        wall = dirichlet_constraint(grid, left=0.2, right=-0.4)
        rows = mass.stack(wall)
        combined = LinearConstraint(
            rows.weights.sum(dim=1, keepdim=True), rows.values.sum(dim=1, keepdim=True), 0.0
        )
        again = LinearConstraint(3 * mass.weights, 3 * mass.values, 0.0)
        return GaussianPrediction(mean, covariance, grid), rows.stack(again, combined)
    if case == "zero-variance":  # a Dirichlet row on points the prior already pins to mean
        mask = torch.ones(grid.shape, dtype=torch.bool)
        mask[:, 0] = False
        wall = dirichlet_constraint(grid, left=mean[:, 0])
        prior = GaussianPrediction(mean, masked(covariance, mask.reshape(-1)), grid)
        return prior, mass.stack(wall)
    # redundant exact rows beside noisy rows
    noisy = dirichlet_constraint(grid, right=0.5, noise_std=0.3)
    again = LinearConstraint(-2 * mass.weights, -2 * mass.values, 0.0)
    return GaussianPrediction(mean, covariance, grid), mass.stack(noisy, again)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("case", ["redundant", "zero-variance", "noisy"])
def test_pseudo_inverse_matches_numpy_pinv(small_grid, structure, case):
    prior, constraint = singular_case(small_grid, structure, case)
    if case != "noisy":
        with pytest.raises(ValueError, match="singular"):
            condition(prior, constraint)
    posterior = condition(prior, constraint, singular="pinv")
    expected_mean, expected_cov = brute_force_pinv(
        prior.mean.reshape(-1).numpy(),
        prior.covariance.to_dense().numpy(),
        constraint.to_dense().numpy(),
        constraint.values.reshape(-1).numpy(),
        constraint.noise_std.reshape(-1).numpy(),
    )
    np.testing.assert_allclose(posterior.mean.reshape(-1).numpy(), expected_mean, atol=1e-10)
    np.testing.assert_allclose(posterior.covariance.to_dense().numpy(), expected_cov, atol=1e-10)
    np.testing.assert_allclose(
        posterior.variance.reshape(-1).numpy(), np.diag(expected_cov), atol=1e-10
    )
    exact = constraint.noise_std == 0
    draws = posterior.sample(50, torch.Generator().manual_seed(5))
    assert constraint.residual(posterior.mean)[exact].abs().max() < 1e-10
    assert constraint.residual(draws)[:, exact].abs().max() < 1e-10


@pytest.mark.parametrize("structure", STRUCTURES)
def test_pseudo_inverse_is_the_default_update_when_regular(small_grid, structure):
    covariance = random_covariances(small_grid)[structure]
    mean = torch.randn(small_grid.shape, generator=torch.Generator().manual_seed(8)).double()
    prior = GaussianPrediction(mean, covariance, small_grid)
    constraint = all_constraints(small_grid, 0.0)
    default = condition(prior, constraint)
    pseudo = condition(prior, constraint, singular="pinv")
    assert torch.equal(default.mean, pseudo.mean)
    assert torch.equal(default.variance, pseudo.variance)


@pytest.mark.parametrize("structure", ["diagonal", "dense"])
def test_pseudo_inverse_refuses_rows_that_disagree(small_grid, structure):
    covariance = random_covariances(small_grid)[structure]
    prior = GaussianPrediction(torch.zeros(small_grid.shape), covariance, small_grid)
    mass = conservation_constraint(small_grid, torch.ones(small_grid.n_t))
    off = LinearConstraint(mass.weights, mass.values + 1e-6, 0.0)
    with pytest.raises(ValueError, match="inconsistent"):
        condition(prior, mass.stack(off), singular="pinv")
    pinned = masked(covariance, torch.arange(small_grid.size) % small_grid.n_x != 0)
    prior = GaussianPrediction(torch.zeros(small_grid.shape), pinned, small_grid)
    with pytest.raises(ValueError, match="inconsistent"):  # the prior pins u = 0 there
        condition(prior, dirichlet_constraint(small_grid, left=0.5), singular="pinv")


def test_pseudo_inverse_projection_is_the_minimum_norm_correction(small_grid):
    mean = torch.randn(small_grid.shape, generator=torch.Generator().manual_seed(9)).double()
    prior = GaussianPrediction(mean, random_covariances(small_grid)["diagonal"], small_grid)
    constraint = all_constraints(small_grid, 0.0)
    doubled = LinearConstraint(2 * constraint.weights, 2 * constraint.values, 0.0)
    projected = project(prior, constraint.stack(doubled), singular="pinv")
    assert torch.allclose(projected.mean, project(prior, constraint).mean, atol=1e-12)
    with pytest.raises(ValueError, match="singular"):
        project(prior, constraint.stack(doubled))


def test_pseudo_inverse_at_scale_counts_redundant_rows_once():
    grid = Grid.uniform((0, 1), (0, 1), 300, 300)
    generator = torch.Generator().manual_seed(10)
    variance = torch.rand(grid.size, generator=generator, dtype=torch.float64) + 0.1
    prior = GaussianPrediction(
        torch.randn(grid.shape, generator=generator).double(), DiagonalCovariance(variance), grid
    )
    mass = conservation_constraint(grid, torch.rand(grid.n_t, generator=generator).double())
    expected = condition(prior, mass)
    result = condition(prior, [mass, mass], singular="pinv")
    assert torch.allclose(result.mean, expected.mean, atol=1e-12)
    assert torch.allclose(result.variance, expected.variance, atol=1e-12)


@pytest.mark.parametrize("singular", ["pseudo", None, 1])
def test_singular_option_is_checked(small_grid, singular):
    prior = GaussianPrediction(
        torch.zeros(small_grid.shape), random_covariances(small_grid)["diagonal"], small_grid
    )
    constraint = conservation_constraint(small_grid, torch.ones(small_grid.n_t))
    message = rf"singular: expected one of 'raise', 'pinv', got {singular!r}"
    with pytest.raises(ValueError, match=message):
        condition(prior, constraint, singular=singular)
    with pytest.raises(ValueError, match=message):
        project(prior, [], singular=singular)


def test_pseudo_inverse_with_a_large_low_rank_prior_says_what_works():
    grid = Grid.uniform((0, 1), (0, 1), 150, 150)
    covariance = LowRankCovariance(
        torch.ones(grid.size, dtype=torch.float64), torch.ones(grid.size, 2, dtype=torch.float64)
    )
    prior = GaussianPrediction(torch.zeros(grid.shape), covariance, grid)
    mass = conservation_constraint(grid, torch.zeros(grid.n_t))
    with pytest.raises(ValueError, match="singular='pinv' with a low-rank prior works up to"):
        condition(prior, [mass, mass], singular="pinv")
