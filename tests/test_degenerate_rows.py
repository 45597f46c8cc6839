"""Exact rows the prior already fixes: g Sigma g^T at round-off of its Cauchy-Schwarz bound
(|g| sd)^2 raises a SingularConstraintError naming the row and slice, or is dropped on request;
rows with healthy variance condition exactly as before."""

import math
import warnings

import pytest
import torch

from probcons.conditioning import (
    DEGENERATE_TOLERANCE,
    _corrected_mean,
    condition,
    constraint_update,
    project,
)
from probcons.constraints import (
    LinearConstraint,
    conservation_constraint,
    dirichlet_constraint,
    periodic_constraint,
)
from probcons.covariance import (
    BlockCovariance,
    DenseCovariance,
    DiagonalCovariance,
    LowRankCovariance,
)
from probcons.errors import SingularConstraintError, UsageError
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction


def periodic_kernel_prior(structure, n_t=3, n_x=17, scale=1.0):
    """A GP with the periodic kernel exp(-2 sin^2((x - x') / 2) / l^2) on [0, 2 pi], both ends
    on the grid: u(0) and u(2 pi) are the same random variable, up to round-off."""
    grid = Grid.uniform((0, 1), (0, 2 * math.pi), n_t, n_x)
    x = grid.x
    block = scale * torch.exp(-2 * torch.sin((x[:, None] - x[None, :]) / 2) ** 2 / 0.8**2)
    blocks = block.expand(n_t, n_x, n_x)
    if structure == "block":
        covariance = BlockCovariance(blocks)
    else:
        covariance = DenseCovariance(torch.block_diag(*blocks))
    mean = torch.sin(grid.mesh()[1])
    return GaussianPrediction(mean, covariance, grid)


def relative_row_variance(prior, constraint, j, k):
    g = constraint.to_dense()[j * constraint.rows_per_slice + k]
    sd = prior.covariance.diagonal().sqrt()
    return float(g @ prior.covariance.matmul(g[:, None])[:, 0]) / float(g.abs() @ sd) ** 2


@pytest.mark.parametrize("structure", ["block", "dense"])
@pytest.mark.parametrize("scale", [1.0, 1e-20])
def test_periodic_row_on_a_periodic_kernel_raises_naming_the_row(structure, scale):
    """The issue's case: var(u(0) - u(2 pi)) at round-off (about 1e-16 relative) plus the
    periodic row: one line naming the row, not a silent 28 % cut of the variance."""
    prior = periodic_kernel_prior(structure, scale=scale)
    constraint = periodic_constraint(prior.grid)
    assert relative_row_variance(prior, constraint, 0, 0) < DEGENERATE_TOLERANCE
    with pytest.raises(SingularConstraintError) as error:
        condition(prior, constraint)
    message = str(error.value)
    assert "\n" not in message
    assert "row 'periodic' of time slice 0 (t = 0)" in message
    assert "on_degenerate='drop'" in message and "2 more degenerate rows" in message


def test_degenerate_row_beside_healthy_rows_names_the_right_one():
    prior = periodic_kernel_prior("block")
    mass = conservation_constraint(prior.grid, torch.zeros(3), quadrature="trapezoid")
    with pytest.raises(SingularConstraintError, match="row 'periodic' of time slice 0"):
        condition(prior, [mass, periodic_constraint(prior.grid)])


def test_drop_removes_only_the_degenerate_rows_with_a_warning():
    prior = periodic_kernel_prior("block")
    mass = conservation_constraint(prior.grid, torch.full((3,), 0.5))
    with pytest.warns(RuntimeWarning, match="dropped 3 exact row.*'periodic' of time slice 2"):
        dropped = prior.condition([mass, periodic_constraint(prior.grid)], on_degenerate="drop")
    expected = condition(prior, mass)
    assert torch.allclose(dropped.mean, expected.mean, rtol=0, atol=1e-12)
    assert torch.allclose(dropped.variance, expected.variance, rtol=0, atol=1e-12)
    assert mass.residual(dropped.mean).abs().max() < 1e-12


def test_low_rank_prior_with_identical_end_points():
    """Sigma = F F^T with equal rows of F at x_0 and x_{n-1} and no diagonal there: the update's
    own factorisation fails, and the row screening names the periodic row."""
    grid = Grid.uniform((0, 1), (0, 1), 2, 6)
    factor = torch.randn(grid.size, 2, generator=torch.Generator().manual_seed(0)).double()
    factor = factor.reshape(2, 6, 2)
    factor[:, -1] = factor[:, 0]
    diagonal = torch.full((2, 6), 0.1, dtype=torch.float64)
    diagonal[:, [0, -1]] = 0.0
    prior = GaussianPrediction(
        torch.zeros(grid.shape),
        LowRankCovariance(diagonal.reshape(-1), factor.reshape(-1, 2)),
        grid,
    )
    with pytest.raises(SingularConstraintError, match="row 'periodic' of time slice 0"):
        condition(prior, periodic_constraint(grid))


def test_zero_variance_point_names_the_dirichlet_row():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    variance = torch.ones(grid.shape, dtype=torch.float64)
    variance[1, 0] = 0.0
    prior = GaussianPrediction(
        torch.zeros(grid.shape), DiagonalCovariance(variance.reshape(-1)), grid
    )
    with pytest.raises(
        SingularConstraintError, match=r"row 'dirichlet_left' of time slice 1 \(t = 0.5\)"
    ):
        condition(prior, dirichlet_constraint(grid, left=0.0))


def test_small_but_resolved_variance_is_kept():
    """Relative row variance 1e-12 (a prior of condition number 1e12) is above the tolerance."""
    grid = Grid([0.0], torch.arange(3, dtype=torch.float64))
    correlation = 1 - 2e-12  # var(u0 - u1) = 2 (1 - rho) = 4e-12 of the bound 4
    matrix = torch.tensor(
        [[1.0, correlation, 0.0], [correlation, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    prior = GaussianPrediction(torch.zeros(1, 3), DenseCovariance(matrix), grid)
    rows = LinearConstraint(torch.tensor([[[1.0, -1.0, 0.0]]]), torch.zeros(1, 1), 0.0)
    posterior = condition(prior, rows)
    assert torch.isfinite(posterior.variance).all()


@pytest.mark.parametrize("structure", ["diagonal", "low-rank", "block", "dense"])
def test_healthy_rows_give_the_update_unscreened_bit_for_bit(structure):
    grid = Grid.uniform((0, 1), (0, 1), 3, 5)
    generator = torch.Generator().manual_seed(3)
    variance = torch.rand(grid.size, generator=generator, dtype=torch.float64) + 0.1
    if structure == "diagonal":
        covariance = DiagonalCovariance(variance)
    elif structure == "low-rank":
        factor = torch.randn(grid.size, 2, generator=generator, dtype=torch.float64)
        covariance = LowRankCovariance(variance, factor)
    else:
        root = torch.randn(3, 5, 5, generator=generator, dtype=torch.float64)
        blocks = root @ root.mT + torch.diag_embed(variance.reshape(3, 5))
        covariance = (
            BlockCovariance(blocks)
            if structure == "block"
            else DenseCovariance(torch.block_diag(*blocks))
        )
    mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    prior = GaussianPrediction(mean, covariance, grid)
    constraint = conservation_constraint(grid, torch.ones(3)).stack(periodic_constraint(grid))
    update = constraint_update(covariance, constraint)
    expected = _corrected_mean(mean, constraint, update)  # the update without screening
    posterior = condition(prior, constraint)
    assert torch.equal(posterior.mean, expected)
    assert torch.equal(posterior.variance.reshape(-1), update.posterior_variance())


def test_hardc_names_an_all_zero_exact_row():
    grid = Grid.uniform((0, 1), (0, 1), 2, 4)
    prior = GaussianPrediction(torch.zeros(grid.shape), DiagonalCovariance(torch.ones(8)), grid)
    empty = LinearConstraint(torch.zeros(2, 1, 4), torch.zeros(2, 1), 0.0, ("nothing",))
    with pytest.raises(SingularConstraintError, match="row 'nothing' of time slice 0"):
        project(prior, empty)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert torch.equal(prior.project(empty, on_degenerate="drop").mean, prior.mean)


def test_on_degenerate_is_checked():
    grid = Grid.uniform((0, 1), (0, 1), 2, 4)
    prior = GaussianPrediction(torch.zeros(grid.shape), DiagonalCovariance(torch.ones(8)), grid)
    with pytest.raises(
        UsageError, match="on_degenerate: expected one of 'raise', 'drop', got 'skip'"
    ):
        prior.condition(periodic_constraint(grid), on_degenerate="skip")


def test_top_level_condition_passes_on_degenerate():
    from probcons import condition
    from probcons.constraints import periodic_constraint

    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 3, 5)
    mean = torch.zeros(grid.shape, dtype=torch.float64)
    factor = torch.ones(grid.size, 1, dtype=torch.float64)  # u(0) = u(1) in every draw
    prior = GaussianPrediction(mean, LowRankCovariance(torch.zeros(grid.size), factor), grid)
    rows = periodic_constraint(grid)
    with pytest.raises(SingularConstraintError):
        condition(prior, rows)
    with pytest.warns(RuntimeWarning, match="row 'periodic' of time slice 0"):
        condition(prior, rows, on_degenerate="drop")
