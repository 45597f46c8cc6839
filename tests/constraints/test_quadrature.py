"""Quadrature rules of conservation rows: orders of convergence, the periodic rule on an open
periodic grid (viscous Burgers), user weights, and the grid's one-point x-axis rejection."""

import math

import numpy as np
import pytest
import torch

from probcons.constraints import conservation_constraint, quadrature_weights
from probcons.errors import UsageError
from probcons.grid import Grid


def integral(rule, n, function, lower, upper):
    grid = Grid.uniform((0, 1), (lower, upper), 1, n)
    return float(quadrature_weights(grid, rule) @ function(grid.x))


@pytest.mark.parametrize(("rule", "order"), [("trapezoid", 2), ("simpson", 4)])
def test_rules_converge_at_their_order(rule, order):
    """exp(x) on [0, 1]: halving dx divides the error by 2^order."""
    exact = math.e - 1
    errors = [abs(integral(rule, n, torch.exp, 0.0, 1.0) - exact) for n in (11, 21, 41, 81)]
    observed = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.allclose(observed, order, atol=0.05), observed


def test_trapezoid_converges_at_second_order_on_a_nonuniform_grid():
    errors = []
    for n in (21, 41, 81):
        uniform = torch.linspace(0, 1, n, dtype=torch.float64)
        x = uniform + 0.3 * uniform * (1 - uniform)  # smooth, increasing, ends kept
        grid = Grid(torch.zeros(1), x)
        errors.append(abs(float(quadrature_weights(grid) @ torch.exp(x)) - (math.e - 1)))
    observed = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.allclose(observed, 2, atol=0.1), observed


def periodic_grid(n, n_t=1):
    """x_i = i dx, i < n, dx = 2 pi / n: the end point 2 pi (= x_0) left out."""
    x = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return Grid(torch.linspace(0, 1, n_t, dtype=torch.float64), x)


def test_periodic_rule_is_spectral_for_smooth_periodic_functions():
    """exp(sin x) over a period = 2 pi I_0(1); 32 points give round-off."""
    exact = 2 * math.pi * float(np.i0(1.0))
    errors = {}
    for n in (4, 8, 16, 32):
        grid = periodic_grid(n)
        errors[n] = abs(
            float(quadrature_weights(grid, "periodic") @ torch.exp(torch.sin(grid.x))) - exact
        )
    assert errors[32] < 1e-12
    assert errors[8] < 1e-4 * errors[4] and errors[16] < 1e-6 * errors[8]  # faster than any power


def burgers(t, x, nu=0.1, speed=0.7):
    """Viscous Burgers u_t + u u_x = nu u_xx, 2 pi periodic, by Cole-Hopf with
    phi = 2 + exp(-nu t) cos(x - c t) moved at speed c: u = c - 2 nu phi_x / phi; mass 2 pi c."""
    phase = x - speed * t
    decay = torch.exp(-nu * t)
    return speed + 2 * nu * decay * torch.sin(phase) / (2 + decay * torch.cos(phase))


def test_burgers_mass_on_an_open_periodic_grid_with_the_periodic_rule():
    """The issue's case: x_i = i dx, i < n; the periodic rule gives the exact mass 2 pi c to
    1e-12, the trapezoid rule (halving x_0 and x_{n-1}) is off by O(dx)."""
    grid = periodic_grid(64, n_t=6)
    tt, xx = grid.mesh()
    field = burgers(tt, xx)
    mass = torch.full((grid.n_t,), 2 * math.pi * 0.7, dtype=torch.float64)
    periodic = conservation_constraint(grid, mass, quadrature="periodic")
    assert periodic.residual(field).abs().max() < 1e-12
    trapezoid = conservation_constraint(grid, mass)
    assert trapezoid.residual(field).abs().min() > 1e-3  # the wrong rule on this grid


def test_default_rule_is_the_trapezoid_rows_stored_once():
    grid = Grid.uniform((0, 1), (0, 2), 3, 7)
    constraint = conservation_constraint(grid, torch.ones(3))
    assert torch.equal(constraint.weights[1, 0], grid.trapezoid_weights())
    assert constraint.weights.stride(0) == 0
    named = conservation_constraint(grid, torch.ones(3), quadrature="trapezoid")
    assert torch.equal(named.weights, constraint.weights)


def test_user_weights_per_grid_or_per_slice():
    grid = Grid.uniform((0, 1), (0, 1), 2, 5)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.1], dtype=torch.float64)
    shared = conservation_constraint(grid, torch.zeros(2), quadrature=weights)
    assert torch.equal(shared.weights[:, 0], weights.expand(2, 5))
    per_slice = torch.stack([weights, 2 * weights])
    constraint = conservation_constraint(grid, torch.zeros(2), quadrature=per_slice)
    assert torch.equal(constraint.weights[:, 0], per_slice)


@pytest.mark.parametrize(
    ("x", "rule", "message"),
    [
        (np.linspace(0, 1, 6), "simpson", "quadrature: the 'simpson' rule expects an odd number"),
        (
            np.array([0.0, 0.1, 0.3, 0.4, 0.5]),
            "simpson",
            "quadrature: the 'simpson' rule expects a uniform",
        ),
        (
            np.array([0.0, 0.1, 0.3]),
            "periodic",
            "quadrature: the 'periodic' rule expects a uniform",
        ),
        (
            np.linspace(0, 1, 5),
            "midpoint",
            "quadrature: expected one of 'trapezoid', 'periodic', 'simpson'",
        ),
        (
            np.linspace(0, 1, 5),
            np.ones(4),
            r"quadrature: expected .* weights of shape \(5,\) or \(2, 5\)",
        ),
        (np.linspace(0, 1, 5), np.ones((3, 5)), r"got tensor of shape \(3, 5\)"),
    ],
)
def test_bad_quadrature_is_a_usage_error(x, rule, message):
    grid = Grid([0.0, 1.0], x)
    with pytest.raises(UsageError, match=message):
        conservation_constraint(grid, torch.zeros(2), quadrature=rule)


def test_grid_rejects_a_one_point_x_axis_unless_asked():
    with pytest.raises(UsageError, match=r"^x: expected at least 2 positions .* got 1 \(0.5\)"):
        Grid([0.0, 1.0], [0.5])
    grid = Grid([0.0, 1.0], [0.5], allow_single_point=True)
    assert grid.shape == (2, 1)
    assert Grid([0.0], [0.0, 1.0]).shape == (1, 2)  # one time: a snapshot


def test_index_and_flattened_grids():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    flat = grid.flattened()
    assert flat.shape == (1, 12)
    assert torch.equal(flat.t, torch.zeros(1, dtype=torch.float64))
    assert torch.equal(flat.x, torch.arange(12, dtype=torch.float64))
    assert Grid.index(1, 1).shape == (1, 1)
    with pytest.raises(UsageError, match="n_x: expected a positive integer, got 0"):
        Grid.index(2, 0)
