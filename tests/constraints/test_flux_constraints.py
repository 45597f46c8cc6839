"""Conservation from boundary fluxes: absolute rows (U(t_0) given) and relative rows (no U(t_0))
on the PME, against the problem's exact mass and against each other."""

import pytest
import torch

from probcons.conditioning import condition
from probcons.constraints import (
    LinearConstraint,
    conservation_constraint,
    flux_conservation_constraint,
)
from probcons.covariance import DenseCovariance, DiagonalCovariance, LowRankCovariance
from probcons.errors import UsageError
from probcons.prediction import GaussianPrediction
from probcons.problems import get_problem

PME = get_problem("pme")


def pme_fluxes(m):
    return (lambda t: PME.boundary_flux(t, m)[0]), (lambda t: PME.boundary_flux(t, m)[1])


def test_absolute_rows_from_fluxes_match_the_exact_mass_for_linear_flux():
    """m = 1: F_in = t is linear, so the trapezoid rule in time is exact and U = t^2 / 2."""
    grid = PME.grid(11, 21)
    inflow, outflow = pme_fluxes(1.0)
    constraint = flux_conservation_constraint(grid, 0.0, inflow, outflow)
    expected = conservation_constraint(grid, PME.mass(grid.t, 1.0))
    assert torch.allclose(constraint.values, expected.values, rtol=0, atol=1e-15)
    assert torch.equal(constraint.weights, expected.weights)


def test_fluxes_as_callables_values_or_scalars_agree():
    grid = PME.grid(6, 5)
    inflow, _ = pme_fluxes(3.0)
    by_callable = flux_conservation_constraint(grid, 0.5, inflow)
    by_values = flux_conservation_constraint(grid, 0.5, inflow(grid.t), torch.zeros(6))
    assert torch.equal(by_callable.values, by_values.values)
    constant = flux_conservation_constraint(grid, 0.0, 2.0, 0.5)
    assert torch.allclose(constant.values[:, 0], 1.5 * grid.t, atol=1e-15)


def test_absolute_mass_converges_in_time_to_the_exact_mass():
    """m = 3: F_in = (3 t)^(1/3), whose derivative is infinite at t = 0: the trapezoid time
    integral converges to U(t) at order 4/3 (4x finer: error / 6.3)."""
    inflow, outflow = pme_fluxes(3.0)
    errors = []
    for n_t in (11, 41, 161):
        grid = PME.grid(n_t, 5)
        rows = flux_conservation_constraint(grid, 0.0, inflow, outflow)
        errors.append(float((rows.values[:, 0] - PME.mass(grid.t, 3.0)).abs().max()))
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5, errors


def prior_on(grid, m, structure, seed=0):
    """The exact PME solution perturbed, with a covariance of `structure`."""
    generator = torch.Generator().manual_seed(seed)
    tt, xx = grid.mesh()
    truth = PME.solution(tt, xx, m)
    noise = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    mean = truth + 0.05 * noise
    variance = 0.01 + 0.02 * torch.rand(grid.size, generator=generator, dtype=torch.float64)
    if structure == "diagonal":
        covariance = DiagonalCovariance(variance)
    elif structure == "low-rank":
        factor = 0.05 * torch.randn(grid.size, 3, generator=generator, dtype=torch.float64)
        covariance = LowRankCovariance(variance, factor)
    else:
        root = torch.randn(grid.size, grid.size, generator=generator, dtype=torch.float64)
        covariance = DenseCovariance(root @ root.T / grid.size + torch.diag(variance))
    return GaussianPrediction(mean, covariance, grid)


def first_row(constraint: LinearConstraint) -> LinearConstraint:
    """The flattened constraint's first row: w . u(t_0) = U(t_0)."""
    flat = constraint.flattened()
    return LinearConstraint(flat.weights[:, :1], flat.values[:, :1], 0.0, flat.names[:1])


@pytest.mark.parametrize("structure", ["diagonal", "low-rank", "dense"])
def test_relative_rows_and_the_initial_mass_give_the_absolute_posterior(structure):
    """Claim: conditioning on the relative flux rows (inflow known, U(t_0) unknown to them)
    together with the single row w . u(t_0) = U(t_0) gives the same exact posterior, mean and
    covariance, as the absolute rows w . u(t_j) = U(t_0) + int_{t_0}^{t_j} (F_in - F_out),
    j = 0..n_t-1: the two row sets are an invertible recombination of each other (telescoping),
    and the exact (sigma_G = 0) posterior depends only on the affine set the rows fix."""
    m = 3.0
    grid = PME.grid(9, 12)
    inflow, outflow = pme_fluxes(m)
    prior = prior_on(grid, m, structure)
    initial = float(PME.mass(grid.t[0], m))
    absolute = flux_conservation_constraint(grid, initial, inflow, outflow)
    relative = flux_conservation_constraint(grid, None, inflow, outflow)
    assert relative.names == tuple(f"mass_change[{j}]" for j in range(1, 9))
    combined = relative.stack(first_row(absolute))
    by_absolute = condition(prior, absolute)
    by_relative = condition(prior, combined)
    assert torch.allclose(by_relative.mean, by_absolute.mean, rtol=0, atol=1e-10)
    assert torch.allclose(by_relative.variance, by_absolute.variance, rtol=0, atol=1e-10)
    dense = by_relative.covariance.to_dense() - by_absolute.covariance.to_dense()
    assert dense.abs().max() < 1e-10


def test_relative_rows_alone_hold_exactly_and_leave_the_initial_mass_free():
    m = 3.0
    grid = PME.grid(9, 12)
    inflow, outflow = pme_fluxes(m)
    prior = prior_on(grid, m, "diagonal")
    relative = flux_conservation_constraint(grid, None, inflow, outflow)
    posterior = condition(prior, relative)
    assert posterior.mean.shape == grid.shape
    flat_mean = posterior.mean.reshape(1, -1)
    assert relative.residual(flat_mean).abs().max() < 1e-12
    # the mass at t_0 keeps prior uncertainty: only its changes were fixed
    weights = grid.trapezoid_weights()
    mass_variance = (weights**2 * posterior.variance[0]).sum()
    assert mass_variance > 0.1 * (weights**2 * prior.variance[0]).sum()
    draws = posterior.sample(3, torch.Generator().manual_seed(1))
    assert relative.residual(draws.reshape(3, 1, -1)).abs().max() < 1e-12


def test_relative_rows_need_two_times_and_fluxes_of_the_right_shape():
    with pytest.raises(UsageError, match="grid: relative flux rows .* at least 2 times, got 1"):
        flux_conservation_constraint(PME.grid(1, 5), None, 1.0)
    with pytest.raises(UsageError, match=r"flux_in: expected a scalar, 4 values or a callable"):
        flux_conservation_constraint(PME.grid(4, 5), 0.0, torch.ones(3))
    with pytest.raises(UsageError, match="flux_out: calling it on the grid's times"):
        flux_conservation_constraint(PME.grid(4, 5), 0.0, 1.0, lambda t: t.nonexistent)
    with pytest.raises(UsageError, match="initial_mass: expected a scalar"):
        flux_conservation_constraint(PME.grid(4, 5), torch.ones(2), 1.0)
