"""Solvers: observed convergence orders against exact solutions or refinement, and boundary exactness."""

import math

import pytest
import torch

from probcons.constraints.boundary_condition import neumann
from probcons.solvers import (
    gaussian_random_field,
    solve_burgers_dirichlet,
    solve_burgers_periodic,
    solve_heat_neumann,
    solve_wave_neumann,
    stokes_second_problem,
)

torch.set_num_threads(1)


def orders(errors):
    return [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


def test_heat_neumann_second_order_against_cosine_mode():
    errors = []
    for n in (17, 33, 65):
        x = torch.linspace(0, 1, n, dtype=torch.float64)
        u = solve_heat_neumann(torch.cos(2 * math.pi * x), x, [0.5], 0.1, max_step=1 / (n - 1))
        exact = math.exp(-0.1 * 4 * math.pi**2 * 0.5) * torch.cos(2 * math.pi * x)
        errors.append(float((u[0, 0] - exact).abs().max()))
    assert min(orders(errors)) > 1.8


def test_heat_flux_condition_holds_discretely():
    x = torch.linspace(0, 1, 33, dtype=torch.float64)
    u0 = torch.cos(3 * math.pi * x)[None]

    def flux(t):
        return torch.tensor([0.0, 5 * math.sin(math.pi * t)], dtype=torch.float64)

    times = torch.tensor([0.25, 0.5])
    u = solve_heat_neumann(u0, x, times, 0.01, flux)
    g = torch.stack([flux(float(t)) for t in times])[None]
    assert float(neumann(1 / 32).residual(u, g).abs().max()) < 1e-10


def test_wave_neumann_second_order_against_standing_wave():
    errors = []
    for n in (17, 33, 65):
        x = torch.linspace(0, 1, n, dtype=torch.float64)
        u = solve_wave_neumann(torch.cos(2 * math.pi * x), x, [0.3, 0.6], 1.0)
        exact = math.cos(2 * math.pi * 0.6) * torch.cos(2 * math.pi * x)
        errors.append(float((u[0, 1] - exact).abs().max()))
    assert min(orders(errors)) > 1.8


def test_burgers_dirichlet_second_order_by_refinement():
    generator = torch.Generator().manual_seed(0)
    grids = [torch.linspace(0, 1, 16 * 2**i + 1, dtype=torch.float64) for i in range(4)]
    a = gaussian_random_field(1, grids[-1], generator, period=2.0)
    solutions = [
        solve_burgers_dirichlet(a[:, :: 2 ** (3 - i)], x, [0.25])[:, 0, :: 2**i]
        for i, x in enumerate(grids)
    ]
    assert torch.equal(solutions[-1][:, [0, -1]], a[:, [0, -1]])
    errors = [float((solutions[i] - solutions[i + 1]).abs().max()) for i in range(3)]
    assert min(orders(errors)) > 1.8


def test_burgers_periodic_high_order_in_time_and_spectral_in_space():
    nodes = torch.arange(64, dtype=torch.float64) / 64
    fine = torch.arange(128, dtype=torch.float64) / 128
    # 16 modes: the same function on both grids (below the coarse grid's 2/3 dealiasing cut)
    a = gaussian_random_field(1, nodes, torch.Generator().manual_seed(1), n_modes=16)
    a_fine = gaussian_random_field(1, fine, torch.Generator().manual_seed(1), n_modes=16)
    reference = solve_burgers_periodic(a, [0.1], max_step=5e-5)
    errors = [
        float((solve_burgers_periodic(a, [0.1], max_step=dt) - reference).abs().max())
        for dt in (1e-3, 5e-4, 2.5e-4)
    ]
    assert min(orders(errors)) > 3.5  # integrating-factor RK4: order 4
    u_fine = solve_burgers_periodic(a_fine, [0.1], max_step=5e-5)[..., ::2]
    assert float((reference - u_fine).abs().max()) < 1e-8  # spectral accuracy in space


def test_stokes_analytic_solution_satisfies_the_pde_at_second_order():
    errors = []
    for h in (1e-2, 5e-3, 2.5e-3):
        x = torch.tensor([0.3], dtype=torch.float64)
        t = torch.tensor([0.7], dtype=torch.float64)

        def u(xx, tt):
            return stokes_second_problem(xx, tt, 1.2, 5.0, 0.05)

        u_t = (u(x, t + h) - u(x, t - h)) / (2 * h)
        u_xx = (u(x + h, t) - 2 * u(x, t) + u(x - h, t)) / h**2
        errors.append(float((u_t - 0.05 * u_xx).abs()))
    assert min(orders(errors)) > 1.8
    wall = stokes_second_problem(0.0, torch.linspace(0, 2, 9), 1.2, 5.0, 0.05)
    assert torch.allclose(wall, 1.2 * torch.cos(5.0 * torch.linspace(0, 2, 9, dtype=torch.float64)))


def test_gaussian_random_field_variance_matches_the_spectrum():
    x = torch.tensor([0.0, 0.5], dtype=torch.float64)
    draws = gaussian_random_field(20000, x, torch.Generator().manual_seed(2), n_modes=64)
    k = torch.arange(1, 65, dtype=torch.float64)
    variance = 625 / 25**2 + 2 * (625 * ((2 * math.pi * k) ** 2 + 25) ** -2).sum()
    assert abs(float(draws[:, 0].var()) / float(variance) - 1) < 0.05


def test_solver_arguments_are_validated():
    x = torch.linspace(0, 1, 9, dtype=torch.float64)
    with pytest.raises(ValueError, match="u0"):
        solve_heat_neumann(torch.zeros(2, 8), x, [0.1], 0.1)
    with pytest.raises(ValueError, match="times"):
        solve_wave_neumann(torch.zeros(9), x, [0.2, 0.1], 1.0)
    with pytest.raises(ValueError, match="x"):
        solve_burgers_dirichlet(torch.zeros(3), torch.tensor([0.0, 0.2, 0.1]), [0.1])
    with pytest.raises(ValueError, match="frequency"):
        stokes_second_problem(0.0, 0.0, 1.0, -1.0, 0.1)
