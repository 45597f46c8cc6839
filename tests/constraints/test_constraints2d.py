"""Constraints on (t, x, y) grids: Grid2d's flattening, the mass and wall rows, the exact update
per time slice on `grid2d.flat`, and agreement with BOON's BoundaryCondition2d."""

from __future__ import annotations

import math

import pytest
import torch

from probcons import (
    GaussianPrediction,
    Grid2d,
    SingularConstraintError,
    UsageError,
    boundary_condition2d_constraint,
    conditioning,
    dirichlet_constraint2d,
    mass_constraint2d,
    neumann_constraint2d,
    periodic_constraint2d,
)
from probcons.constraints.boundary_condition import dirichlet, neumann
from probcons.constraints.boundary_condition2d import BoundaryCondition2d, dirichlet2d, neumann2d
from probcons.constraints.conservation2d import space_quadrature_weights
from probcons.covariance import DiagonalCovariance, LowRankCovariance
from probcons.solvers.wave2d import solve_wave2d_neumann, wave2d_random_coefficients

WALLS = ("left", "right", "bottom", "top")


def stretched(n: int, low: float, high: float, bend: float = 0.6) -> torch.Tensor:
    """A non-uniform increasing axis with both ends, a smooth map of a uniform one (|bend| < 1)."""
    s = torch.linspace(0, 1, n, dtype=torch.float64)
    return low + (high - low) * (s + bend * s * (1 - s))


def nonuniform_grid(n_t: int = 4, n_x: int = 9, n_y: int = 7) -> Grid2d:
    return Grid2d(torch.linspace(0, 1, n_t), stretched(n_x, 0.0, 1.0), stretched(n_y, -1.0, 1.0))


def wall_data(function, grid2d: Grid2d) -> dict[str, torch.Tensor]:
    """{wall: function(t, x, y) on the wall's points, (n_t, n_wall)}."""
    tt, xx, yy = grid2d.mesh()
    values = function(tt, xx, yy)
    return {
        "left": values[:, 0, :],
        "right": values[:, -1, :],
        "bottom": values[:, :, 0],
        "top": values[:, :, -1],
    }


def smooth(t, x, y):
    return torch.exp(-t) * torch.sin(1 + x) * torch.cos(y) + t * x * y


# --- Grid2d ---


def test_flat_grid_is_x_major_and_round_trips():
    grid = nonuniform_grid()
    field = torch.randn(2, *grid.shape, dtype=torch.float64)
    flat = grid.from_field(field)
    assert flat.shape == (2, grid.n_t, grid.n_x * grid.n_y)
    assert grid.flat.shape == (grid.n_t, grid.n_x * grid.n_y)
    assert torch.equal(grid.flat.t, grid.t)
    for i, k in ((0, 0), (3, 5), (grid.n_x - 1, grid.n_y - 1)):
        assert torch.equal(flat[..., grid.index(i, k)], field[..., i, k])
    assert torch.equal(grid.to_field(flat), field)
    tt, xx, yy = grid.mesh()
    assert torch.equal(xx[0, :, 0], grid.x) and torch.equal(yy[0, 0, :], grid.y)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ((torch.zeros(1), torch.tensor([0.0]), torch.linspace(0, 1, 3)), "x"),
        ((torch.zeros(1), torch.linspace(0, 1, 3), torch.tensor([0.0, 1.0, 0.5])), "y"),
        ((torch.tensor([1.0, 0.0]), torch.linspace(0, 1, 3), torch.linspace(0, 1, 3)), "t"),
        ((torch.zeros(1), torch.linspace(0, 1, 3), [0.0, float("nan")]), "y"),
    ],
)
def test_grid2d_rejects_bad_axes_by_name(arguments, name):
    with pytest.raises(UsageError, match=f"^{name}:"):
        Grid2d(*arguments)


def test_field_helpers_name_bad_shapes():
    grid = nonuniform_grid()
    with pytest.raises(UsageError, match="^values:"):
        grid.to_field(torch.zeros(grid.n_t, grid.n_x))
    with pytest.raises(UsageError, match="^field:"):
        grid.from_field(torch.zeros(grid.n_t, grid.n_y, grid.n_x))


# --- mass ---


def test_trapezoid_mass_is_exact_for_bilinear_fields():
    grid = nonuniform_grid()
    tt, xx, yy = grid.mesh()
    u = 1 + tt + 2 * xx - 3 * yy + 5 * xx * yy  # on [0, 1] x [-1, 1]: integral 2 (1 + t + 1)
    mass = 2 * (2 + grid.t)
    rows = mass_constraint2d(grid, mass)
    assert rows.residual(grid.from_field(u)).abs().max() < 1e-12


def test_trapezoid_mass_converges_at_second_order_on_nonuniform_axes():
    exact = (math.e - 1) * 2 * math.sin(1.0)  # int_0^1 e^x dx int_-1^1 cos y dy
    errors = []
    for n in (11, 21, 41):
        grid = Grid2d(torch.zeros(1), stretched(n, 0.0, 1.0), stretched(2 * n - 1, -1.0, 1.0, -0.5))
        _, xx, yy = grid.mesh()
        rows = mass_constraint2d(grid, torch.tensor([exact]))
        errors.append(float(rows.residual(grid.from_field(torch.exp(xx) * torch.cos(yy)))[0, 0]))
    ratios = [abs(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(3.5 < ratio < 4.5 for ratio in ratios), (errors, ratios)


def test_mass_quadrature_rules_per_axis_and_given_weights():
    grid = Grid2d.uniform((0, 1), (0, 1), (0, 2), 3, 9, 11)
    _, xx, yy = grid.mesh()
    u = grid.from_field(xx**3 * yy**2)  # integral 1/4 * 8/3 = 2/3
    simpson = mass_constraint2d(
        grid, torch.full((3,), 2 / 3, dtype=torch.float64), quadrature="simpson"
    )
    assert simpson.residual(u).abs().max() < 1e-12
    weights = space_quadrature_weights(grid, ("simpson", "trapezoid"))
    assert weights.shape == (9, 11)
    per_slice = weights.expand(3, 9, 11) * torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    rows = mass_constraint2d(grid, torch.zeros(3), quadrature=per_slice)
    assert rows.weights.shape == (3, 1, 99)
    assert torch.allclose(rows.weights[2, 0], 3 * weights.reshape(-1))


def test_wave2d_solver_keeps_neumann_walls_and_mass():
    n = 17
    coefficients = wave2d_random_coefficients(1, torch.Generator().manual_seed(3), n_modes=4)
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    u0 = torch.einsum(
        "kl,ki,lj->ij",
        coefficients[0],
        torch.cos(math.pi * torch.arange(4.0, dtype=torch.float64)[:, None] * x),
        torch.cos(math.pi * torch.arange(4.0, dtype=torch.float64)[:, None] * x),
    )
    times = torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64)
    solution = solve_wave2d_neumann(u0, times)[0]  # (3, n, n)
    grid = Grid2d(times, x, x)
    field = grid.from_field(solution)
    walls = neumann_constraint2d(grid, dict.fromkeys(WALLS, 0.0), order=2)
    assert walls.residual(field).abs().max() < 1e-10 * field.abs().max()
    both_directions = neumann_constraint2d(grid, {"bottom": 0.0, "top": 0.0})  # y at corners too
    assert both_directions.residual(field).abs().max() < 1e-10 * field.abs().max()
    # u_tt = c^2 Lap u with u_n = 0 and u_t(0) = 0 keeps the mass, here 0 (a_00 = 0)
    mass = mass_constraint2d(grid, torch.zeros(3)).residual(field)
    assert mass.abs().max() < 1e-2 * field.abs().max()


# --- walls ---


def test_dirichlet_rows_hold_and_count_corners_once():
    grid = nonuniform_grid()
    rows = dirichlet_constraint2d(grid, wall_data(smooth, grid))
    field = grid.from_field(smooth(*grid.mesh()))
    assert rows.residual(field).abs().max() < 1e-12
    boundary_points = 2 * grid.n_y + 2 * (grid.n_x - 2)
    assert rows.rows_per_slice == boundary_points
    assert torch.equal(rows.weights[0].sum(0), rows.weights[0].abs().max(0).values)  # once each
    assert "dirichlet_bottom[0]" not in rows.names and "dirichlet_left[0]" in rows.names
    only_bottom = dirichlet_constraint2d(grid, {"bottom": 2.0, "right": 2.0})
    assert "dirichlet_bottom[0]" in only_bottom.names  # no left wall: the corner is bottom's
    assert "dirichlet_bottom[8]" not in only_bottom.names
    assert only_bottom.residual(torch.full((grid.n_t, grid.n_x * grid.n_y), 2.0)).abs().max() == 0


def test_dirichlet_values_scalar_per_time_and_per_point():
    grid = nonuniform_grid()
    per_time = torch.linspace(1, 2, grid.n_t, dtype=torch.float64)
    with pytest.raises(UsageError, match="corner"):
        dirichlet_constraint2d(grid, {"left": 3.0, "top": per_time})
    bottom = per_time[:, None].expand(-1, grid.n_x).clone()
    bottom[:, -1] = 3.0  # agrees with the right wall at their corner
    rows = dirichlet_constraint2d(grid, {"left": per_time, "bottom": bottom, "right": 3.0})
    field = torch.zeros(grid.shape, dtype=torch.float64)
    field[:, :, 0] = per_time[:, None]
    field[:, 0, :] = per_time[:, None]
    field[:, -1, :] = 3.0
    assert rows.residual(grid.from_field(field)).abs().max() == 0


def quadratic(t, x, y):
    return t + x**2 * y - 3 * x + y**2 + 0.5 * x * y


def test_neumann_rows_hold_for_fields_their_stencil_is_exact_on():
    grid = nonuniform_grid(n_x=8, n_y=6)
    tt, xx, yy = grid.mesh()
    u_x, u_y = 2 * xx * yy - 3 + 0.5 * yy, xx**2 + 2 * yy + 0.5 * xx
    data = {
        "left": u_x[:, 0, :],
        "right": u_x[:, -1, :],
        "bottom": u_y[:, :, 0],
        "top": u_y[:, :, -1],
    }
    rows = neumann_constraint2d(grid, data, order=2)
    assert rows.rows_per_slice == 2 * grid.n_y + 2 * (grid.n_x - 2)
    assert rows.weights.shape == (grid.n_t, rows.rows_per_slice, grid.n_x * grid.n_y)
    assert rows.residual(grid.from_field(quadratic(tt, xx, yy))).abs().max() < 1e-11
    # order 1 stencils are exact on fields linear along the normal
    linear = tt + 2 * xx - yy
    first = neumann_constraint2d(grid, {"left": 2.0, "top": -1.0}, order=1)
    assert first.residual(grid.from_field(linear)).abs().max() < 1e-12


def test_periodic_rows_hold_on_periodic_fields():
    grid = Grid2d.uniform((0, 1), (0, 2 * math.pi), (0, 1), 3, 12, 10)
    tt, xx, yy = grid.mesh()
    u = grid.from_field(tt + torch.sin(xx) * torch.cos(2 * math.pi * yy) + torch.cos(xx))
    for axis, count in (("x", grid.n_y), ("y", grid.n_x), ("both", grid.n_y + grid.n_x - 1)):
        rows = periodic_constraint2d(grid, axis)
        assert rows.rows_per_slice == count
        assert rows.residual(u).abs().max() < 1e-12
    assert torch.linalg.matrix_rank(periodic_constraint2d(grid, "both").weights[0]) == (
        grid.n_y + grid.n_x - 1
    )


# --- the exact update, per slice ---


def priors(grid: Grid2d, generator: torch.Generator) -> list[GaussianPrediction]:
    n = grid.size
    mean = torch.randn(grid.n_t, grid.n_x * grid.n_y, generator=generator, dtype=torch.float64)
    variance = 0.1 + torch.rand(n, generator=generator, dtype=torch.float64)
    factor = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return [
        GaussianPrediction(mean, DiagonalCovariance(variance), grid.flat),
        GaussianPrediction(mean, LowRankCovariance(variance, factor), grid.flat),
    ]


def test_mass_and_dirichlet_walls_hold_in_every_draw(monkeypatch):
    def no_dense(*_, **__):
        raise AssertionError("a dense N x N update was built")

    monkeypatch.setattr(conditioning, "DenseUpdate", no_dense)
    grid = nonuniform_grid()
    truth = smooth(*grid.mesh())
    mass = (grid.from_field(truth) * grid.trapezoid_weights().reshape(-1)).sum(-1)
    rows = mass_constraint2d(grid, mass).stack(
        dirichlet_constraint2d(grid, wall_data(smooth, grid))
    )
    assert rows.weights.shape == (grid.n_t, rows.rows_per_slice, grid.n_x * grid.n_y)
    assert rows.weights.stride(0) == 0  # the same rows on every slice, stored once
    generator = torch.Generator().manual_seed(0)
    for prior in priors(grid, generator):
        posterior = prior.condition(rows)
        assert isinstance(posterior.covariance, conditioning.ConditionedCovariance)
        assert isinstance(
            posterior.covariance.update, (conditioning.DiagonalUpdate, conditioning.LowRankUpdate)
        )
        draws = posterior.sample(16, generator)
        assert draws.shape == (16, grid.n_t, grid.n_x * grid.n_y)
        assert rows.residual(draws).abs().max() < 1e-10
        assert rows.residual(posterior.mean).abs().max() < 1e-10
        fields = grid.to_field(draws)
        assert (fields[..., 0, :] - truth[:, 0, :]).abs().max() < 1e-10


def test_rows_the_prior_cannot_see_raise():
    grid = nonuniform_grid()
    variance = torch.ones(grid.shape, dtype=torch.float64)
    variance[:, 0, :] = 0.0  # the left wall is known exactly
    prior = GaussianPrediction(
        torch.zeros(grid.n_t, grid.n_x * grid.n_y), DiagonalCovariance(variance), grid.flat
    )
    with pytest.raises(SingularConstraintError):
        prior.condition(dirichlet_constraint2d(grid, {"left": 1.0}))


# --- one boundary-condition type, both consumers ---


@pytest.mark.parametrize("kind", ["dirichlet", "neumann"])
def test_boundary_condition2d_rows_match_the_builders_and_enforce(kind):
    grid = Grid2d.uniform((0, 1), (0, 1), (0, 2), 3, 9, 8)
    step_x, step_y = 1 / 8, 2 / 7
    condition = dirichlet2d() if kind == "dirichlet" else neumann2d(step_x, step_y, order=2)
    generator = torch.Generator().manual_seed(1)
    g_x = torch.randn(grid.n_t, 1, 2, grid.n_y, generator=generator, dtype=torch.float64)
    g_y = torch.randn(grid.n_t, 1, 2, grid.n_x, generator=generator, dtype=torch.float64)
    u = torch.randn(grid.n_t, 1, grid.n_x, grid.n_y, generator=generator, dtype=torch.float64)
    enforced = condition.enforce(u, (g_x, g_y))
    rows = boundary_condition2d_constraint(condition, grid, (g_x, g_y))
    assert rows.residual(grid.from_field(enforced[:, 0])).abs().max() < 1e-12
    walls = {
        "left": g_x[:, 0, 0],
        "right": g_x[:, 0, 1],
        "bottom": g_y[:, 0, 0].clone(),
        "top": g_y[:, 0, 1].clone(),
    }
    if kind == "dirichlet":  # BOON's enforce writes the x-sides last: they hold the corners
        walls["bottom"][:, [0, -1]] = g_x[:, 0, :, 0]
        walls["top"][:, [0, -1]] = g_x[:, 0, :, -1]
        built = dirichlet_constraint2d(grid, walls)
    else:
        built = neumann_constraint2d(grid, walls, order=2)
    assert built.names == rows.names
    assert torch.allclose(built.weights, rows.weights, rtol=0, atol=1e-12)
    assert torch.allclose(built.values, rows.values, rtol=0, atol=0)


def test_conditioning_on_boundary_condition2d_rows_satisfies_boon_residuals():
    grid = Grid2d.uniform((0, 1), (0, 1), (0, 1), 2, 7, 6)
    condition = BoundaryCondition2d(dirichlet(("left",)), neumann(1 / 5, order=1))
    data = (torch.tensor(2.0), torch.tensor([[0.5], [-0.5]]))  # g_y per side, all i
    rows = boundary_condition2d_constraint(condition, grid, data)
    assert "dirichlet_left[0]" in rows.names and "neumann_bottom[0]" not in rows.names
    prior = priors(grid, torch.Generator().manual_seed(2))[1]
    draws = prior.condition(rows).sample(8, torch.Generator().manual_seed(3))
    fields = grid.to_field(draws).reshape(-1, 1, grid.n_x, grid.n_y)
    g_x, g_y = (torch.tensor(2.0).expand(1, 1, 1, grid.n_y), data[1].expand(1, 1, 2, grid.n_x))
    residual_x, residual_y = condition.residuals(fields, (g_x, g_y))
    assert residual_x.abs().max() < 1e-10
    assert residual_y[..., 1:].abs().max() < 1e-10  # the corner line i = 0 belongs to the x-side


# --- bad input, named ---


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda g: dirichlet_constraint2d(g, [1.0]), "walls"),
        (lambda g: dirichlet_constraint2d(g, {}), "walls"),
        (lambda g: dirichlet_constraint2d(g, {"north": 1.0}), "walls"),
        (lambda g: dirichlet_constraint2d(g, {"left": torch.zeros(4, 9)}), r"walls\['left'\]"),
        (lambda g: dirichlet_constraint2d(g, {"top": [1.0, 2.0]}), r"walls\['top'\]"),
        (lambda g: dirichlet_constraint2d(g, {"top": 1.0}, noise_std=-1), "noise_std"),
        (lambda g: dirichlet_constraint2d(g.flat, {"top": 1.0}), "grid2d"),
        (lambda g: neumann_constraint2d(g, {"left": 0.0}, order=9), "order"),
        (lambda g: neumann_constraint2d(g, {"left": 0.0}, order=True), "order"),
        (lambda g: periodic_constraint2d(g, "z"), "axis"),
        (lambda g: mass_constraint2d(g, torch.zeros(3)), "mass"),
        (lambda g: mass_constraint2d(g, torch.zeros(4), quadrature="simpson"), "quadrature"),
        (lambda g: mass_constraint2d(g, torch.zeros(4), quadrature=("trapezoid",)), "quadrature"),
        (lambda g: mass_constraint2d(g, torch.zeros(4), quadrature=torch.ones(9, 9)), "quadrature"),
        (lambda g: boundary_condition2d_constraint(dirichlet(), g), "condition"),
        (lambda g: boundary_condition2d_constraint(dirichlet2d(), g, torch.ones(3)), "data"),
        (
            lambda g: boundary_condition2d_constraint(dirichlet2d(), g, (torch.ones(5), None)),
            "data",
        ),
        (lambda g: boundary_condition2d_constraint(neumann2d(0.1, 0.1), g), "condition"),
    ],
)
def test_bad_input_is_named(build, name):
    grid = nonuniform_grid(n_t=4, n_x=9, n_y=7)
    with pytest.raises(UsageError, match=f"^{name}"):
        build(grid)
