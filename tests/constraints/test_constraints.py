"""Constraint rows: trapezoid mass, boundary stencils of the stated order, stacking."""

import math

import pytest
import torch

from probcons.constraints import (
    LinearConstraint,
    conservation_constraint,
    derivative_weights,
    dirichlet_constraint,
    neumann_constraint,
    periodic_constraint,
)
from probcons.grid import Grid


def test_trapezoid_weights_integrate_linear_functions_exactly_on_nonuniform_grid():
    x = torch.tensor([0.0, 0.1, 0.35, 0.5, 0.9, 1.0], dtype=torch.float64)
    grid = Grid(torch.tensor([0.0]), x)
    weights = grid.trapezoid_weights()
    assert torch.isclose((weights * (3 * x + 2)).sum(), torch.tensor(3.5, dtype=torch.float64))


def test_conservation_residual_of_exact_mass_is_zero():
    grid = Grid.uniform((0, 1), (0, math.pi), 4, 401)
    tt, xx = grid.mesh()
    field = torch.exp(-tt) * torch.sin(xx)
    mass = 2 * torch.exp(-grid.t)
    residual = conservation_constraint(grid, mass).residual(field)
    assert residual.abs().max() < 2e-5  # trapezoid error O(dx^2)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_neumann_stencil_converges_at_its_order(order):
    errors = []
    for n in (41, 81):
        grid = Grid.uniform((0, 1), (0, 1), 1, n)
        field = torch.sin(2 * grid.x)[None]
        rows = neumann_constraint(grid, left=2.0, right=2 * math.cos(2.0), order=order)
        errors.append(rows.residual(field).abs().max().item())
    observed = math.log2(errors[0] / errors[1])
    assert abs(observed - order) < 0.3


def test_derivative_weights_exact_on_polynomials():
    nodes = torch.tensor([0.0, 0.3, 0.7, 1.2], dtype=torch.float64)
    weights = derivative_weights(nodes, at=0.0, order=1)
    assert torch.isclose(
        (weights * nodes**3).sum(), torch.tensor(0.0, dtype=torch.float64), atol=1e-12
    )
    assert torch.isclose((weights * nodes).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_dirichlet_and_periodic_rows():
    grid = Grid.uniform((0, 1), (0, 1), 3, 5)
    field = torch.arange(15, dtype=torch.float64).reshape(3, 5)
    dirichlet = dirichlet_constraint(grid, left=torch.tensor([0.0, 5.0, 10.0]), right=4.0)
    assert dirichlet.residual(field)[:, 0].abs().max() == 0
    assert dirichlet.names == ("dirichlet_left", "dirichlet_right")
    periodic = periodic_constraint(grid)
    assert torch.equal(periodic.apply(field)[:, 0], torch.full((3,), -4.0, dtype=torch.float64))


def test_stack_and_dense_form_agree():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    stacked = conservation_constraint(grid, torch.ones(3)).stack(periodic_constraint(grid))
    assert stacked.rows_per_slice == 2 and stacked.num_rows == 6
    field = torch.randn(3, 4, dtype=torch.float64)
    dense = stacked.to_dense() @ field.reshape(-1)
    assert torch.allclose(dense, stacked.apply(field).reshape(-1))
    rows = torch.randn(3, 2, dtype=torch.float64)
    assert torch.allclose(
        stacked.to_dense().T @ rows.reshape(-1), stacked.apply_transpose(rows).reshape(-1)
    )


def test_stacking_rows_shared_by_every_slice_keeps_them_shared():
    grid = Grid.uniform((0, 1), (0, 1), 5, 4)
    mass = conservation_constraint(grid, torch.ones(5))
    walls = dirichlet_constraint(grid, left=0.0, right=1.0)
    stacked = mass.stack(walls)
    assert stacked.weights.stride(0) == 0  # one (r, n_x) block, not n_t copies
    expected = torch.cat([mass.weights.contiguous(), walls.weights.contiguous()], dim=1)
    assert torch.equal(stacked.weights, expected)
    varying = LinearConstraint(torch.randn(5, 1, 4, dtype=torch.float64), torch.zeros(5, 1), 0.0)
    assert torch.equal(
        mass.stack(varying).weights, torch.cat([expected[:, :1], varying.weights], dim=1)
    )


def test_bad_input_names_the_argument():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    with pytest.raises(ValueError, match="mass: expected shape"):
        conservation_constraint(grid, torch.ones(5))
    with pytest.raises(ValueError, match="noise_std: expected a finite number >= 0"):
        conservation_constraint(grid, torch.ones(3), noise_std=-1.0)
    with pytest.raises(ValueError, match="weights: expected finite values"):
        LinearConstraint(torch.full((3, 1, 4), float("nan")), torch.zeros(3, 1), 0.0)
    with pytest.raises(ValueError, match="left, right"):
        dirichlet_constraint(grid)
    with pytest.raises(ValueError, match="others"):
        periodic_constraint(grid).stack(periodic_constraint(Grid.uniform((0, 1), (0, 1), 2, 4)))


@pytest.mark.parametrize("noise_std", [0.1, 1e-50, 1e39])
def test_noise_std_is_stored_in_float64(noise_std):
    """0.1 stays 0.1 (not 0.10000000149), 1e-50 stays noisy, 1e39 stays finite."""
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    built = [
        conservation_constraint(grid, torch.ones(3), noise_std),
        dirichlet_constraint(grid, left=1.0, noise_std=noise_std),
        dirichlet_constraint(grid, left=1.0).with_noise(noise_std),
    ]
    for constraint in built:
        assert constraint.noise_std.dtype == torch.float64
        assert bool((constraint.noise_std == noise_std).all())


def test_noise_std_rejects_bool():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    with pytest.raises(ValueError, match="noise_std: expected a finite number >= 0, got True"):
        conservation_constraint(grid, torch.ones(3), True)


def test_flattened_rows_act_on_the_flattened_field():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    constraint = conservation_constraint(grid, torch.tensor([1.0, 2.0, 3.0])).stack(
        periodic_constraint(grid)
    )
    flat = constraint.flattened()
    assert (flat.n_t, flat.rows_per_slice, flat.n_x) == (1, 6, 12)
    assert flat.names[:3] == ("mass[0]", "periodic[0]", "mass[1]")
    field = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(
        flat.residual(field.reshape(1, 12)).reshape(3, 2), constraint.residual(field), atol=1e-15
    )
