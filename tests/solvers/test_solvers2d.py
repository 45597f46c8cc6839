"""2-D solvers: the lid-driven cavity against Ghia, Ghia & Shin (1982), divergence and wall values;
the 2-D Neumann wave equation against its cosine series, the discrete Neumann condition and energy."""

import math

import numpy as np
import pytest
import torch

from probcons.constraints.boundary_condition import neumann
from probcons.solvers.cavity import (
    cavity_trajectories,
    cavity_vorticity,
    ghia_errors,
    random_cavity_streamfunction,
    solve_cavity,
    steady_cavity,
)
from probcons.solvers.wave2d import (
    solve_wave2d_neumann,
    wave2d_cosine_series,
    wave2d_random_coefficients,
    wave2d_trajectories,
)

torch.set_num_threads(1)


def test_cavity_matches_ghia_at_re100_on_a_coarse_grid():
    """Max error over Ghia's tabulated centre-line points, relative to the lid speed U = 1."""
    error_u, error_v = ghia_errors(steady_cavity(100.0, 32))
    assert error_u < 0.02 and error_v < 0.02


@pytest.mark.slow
def test_cavity_matches_ghia_at_re100_on_a_fine_grid():
    error_u, error_v = ghia_errors(steady_cavity(100.0, 128))
    assert error_u < 0.01 and error_v < 0.02


def central_divergence(velocity, h):
    u, v = velocity[..., 0, :, :], velocity[..., 1, :, :]
    u_x = (u[..., 2:, 1:-1] - u[..., :-2, 1:-1]) / (2 * h)
    v_y = (v[..., 1:-1, 2:] - v[..., 1:-1, :-2]) / (2 * h)
    return u_x + v_y


@pytest.fixture(scope="module")
def cavity_data():
    return cavity_trajectories(3, n_steps=4, t_end=0.4, n_out=25, seed=3)


def test_cavity_trajectories_divergence_free_to_round_off(cavity_data):
    assert cavity_data.shape == (3, 5, 2, 25, 25) and cavity_data.dtype == torch.float64
    divergence = central_divergence(cavity_data, 1 / 24)
    scale = float(cavity_data.abs().max()) / (1 / 24)
    assert float(divergence.abs().max()) < 1e-12 * scale


def check_walls(velocity):
    u, v = velocity[..., 0, :, :], velocity[..., 1, :, :]
    assert bool((u[..., :, -1] == 1.0).all())  # the lid row y = 1, top corners included
    for wall in (u[..., 0, :-1], u[..., -1, :-1], u[..., :, 0]):
        assert bool((wall == 0.0).all())
    for wall in (v[..., 0, :], v[..., -1, :], v[..., :, 0], v[..., :, -1]):
        assert bool((wall == 0.0).all())


def test_cavity_trajectories_default_sizes():
    data = cavity_trajectories(1)
    assert data.shape == (1, 26, 2, 50, 50)
    check_walls(data)
    assert float(central_divergence(data, 1 / 49).abs().max()) < 1e-11


def test_cavity_walls_hold_the_dirichlet_data_exactly(cavity_data):
    check_walls(cavity_data)
    # Resampled by a cubic spline (49 output cells, 32 solver cells): walls still exact.
    resampled = cavity_trajectories(1, n_steps=2, t_end=0.1, n_out=50, resolution=32)
    check_walls(resampled)
    assert float(resampled[..., 1:-1, 1:-1].abs().max()) > 0.05


def test_cavity_initial_states_are_varied_and_seeded(cavity_data):
    again = cavity_trajectories(2, n_steps=4, t_end=0.4, n_out=25, seed=3)
    # sample i does not depend on n_samples (up to the batch size's round-off in BLAS)
    assert torch.allclose(cavity_data[:2], again, rtol=0, atol=1e-12)
    first = cavity_data[:, 0, :, 1:-1, 1:-1]
    assert float((first[0] - first[1]).abs().max()) > 0.1
    # The lid drags the fluid: the flow changes in time away from the initial state.
    assert float((cavity_data[:, -1] - cavity_data[:, 0]).abs().max()) > 0.1


def test_solve_cavity_starts_from_the_given_streamfunction_or_from_rest():
    psi = random_cavity_streamfunction(2, 16, np.random.default_rng(0))
    velocity = solve_cavity(100.0, 0.0, 16, psi, n_saves=1)
    h = 1 / 16
    u_expected = (psi[:, 1:-1, 2:] - psi[:, 1:-1, :-2]) / (2 * h)
    assert np.allclose(velocity[:, 0, 0, 1:-1, 1:-1].numpy(), u_expected, atol=1e-12)
    speed = velocity[:, 0, :, 1:-1, 1:-1].pow(2).sum(1).sqrt().amax((-2, -1))
    assert bool(((speed >= 0.25 - 1e-12) & (speed <= 1.0 + 1e-12)).all())
    rest = solve_cavity(100.0, 0.5, 16, None, n_saves=3)
    assert rest.shape == (1, 3, 2, 17, 17)
    assert float(rest[0, 0, :, :, :-1].abs().max()) == 0.0
    assert float(central_divergence(rest, h).abs().max()) < 1e-11


def test_cavity_vorticity_exact_on_quadratic_fields():
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(x, x, indexing="ij")
    velocity = torch.stack([grid_y**2 + grid_x, grid_x**2 - grid_y])[None]
    omega = cavity_vorticity(velocity, 0.1)
    assert torch.allclose(omega[0], 2 * grid_x - 2 * grid_y, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: solve_cavity(-1.0, 1.0, 16), "reynolds"),
        (lambda: solve_cavity(100.0, 1.0, 2), "resolution"),
        (lambda: solve_cavity(100.0, 1.0, 16, np.ones((1, 17, 17))), "initial"),
        (lambda: solve_cavity(100.0, 1.0, 16, np.zeros((1, 16, 16))), "initial"),
        (lambda: cavity_trajectories(0), "n_samples"),
        (lambda: cavity_vorticity(torch.zeros(3, 5, 5), 0.1), "velocity"),
        (lambda: wave2d_trajectories(2, method="chebyshev"), "method"),
        (lambda: solve_wave2d_neumann(torch.zeros(1, 9, 9), [0.1], courant=0.9), "courant"),
        (lambda: solve_wave2d_neumann(torch.zeros(1, 9, 8), [0.1]), "u0"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def wave_orders(errors):
    return [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


def test_wave2d_leapfrog_converges_at_second_order_to_the_cosine_series():
    a = wave2d_random_coefficients(2, torch.Generator().manual_seed(0), n_modes=4)
    times = torch.tensor([0.5, 1.0], dtype=torch.float64)
    errors = []
    for n in (33, 65, 129):
        exact = wave2d_cosine_series(a, n, times)
        u0 = wave2d_cosine_series(a, n, [0.0])[:, 0]
        errors.append(float((solve_wave2d_neumann(u0, times) - exact).abs().max()))
    assert errors[0] > errors[1] > errors[2]
    assert wave_orders(errors)[-1] > 1.7


def test_wave2d_discrete_neumann_condition_holds_on_all_walls():
    u = wave2d_trajectories(3, n_steps=5, n_out=20, seed=1)
    condition = neumann(1 / 19, order=2)
    along_x = u.transpose(-1, -2).reshape(-1, 1, 20)  # lines of constant y, x varying
    along_y = u.reshape(-1, 1, 20)
    scale = float(u.abs().max()) * 19
    assert float(condition.residual(along_x).abs().max()) < 1e-12 * scale
    assert float(condition.residual(along_y).abs().max()) < 1e-12 * scale


def test_wave2d_leapfrog_conserves_its_discrete_energy():
    """E = |(U^{k+1} - U^k) / dt|_W^2 - c^2 <U^{k+1}, Lap_h U^k>_W, W = w w^T with w = (3/2, 1, ..,
    1, 3/2) on the interior nodes (the weights that make the eliminated Laplacian symmetric)."""
    n, speed = 17, 1.3
    h = 1 / (n - 1)
    dt = 0.4 * h / speed  # the solver's step, so that every saved time is one step
    a = wave2d_random_coefficients(2, torch.Generator().manual_seed(2))
    u0 = wave2d_cosine_series(a, n, [0.0])[:, 0]
    u = solve_wave2d_neumann(u0, dt * torch.arange(300, dtype=torch.float64), speed)
    weight = torch.ones(n - 2, dtype=torch.float64)
    weight[[0, -1]] = 1.5
    weights = weight[:, None] * weight[None]
    laplacian = (
        u[..., 2:, 1:-1] + u[..., :-2, 1:-1] + u[..., 1:-1, 2:] + u[..., 1:-1, :-2]
    ) / h**2 - 4 * u[..., 1:-1, 1:-1] / h**2
    inner = u[..., 1:-1, 1:-1]
    kinetic = (((inner[:, 1:] - inner[:, :-1]) / dt) ** 2 * weights).sum((-2, -1))
    potential = -(speed**2) * (inner[:, 1:] * laplacian[:, :-1] * weights).sum((-2, -1))
    energy = kinetic + potential
    assert float(energy.min()) > 0
    assert float(((energy - energy[:, :1]).abs() / energy[:, :1]).max()) < 1e-12


def test_wave2d_velocity_and_methods_agree():
    """Leapfrog (u, u_t) approaches the exact series (u, u_t) at second order."""
    errors = []
    for n in (33, 65):
        fd = wave2d_trajectories(2, n_steps=4, n_out=n, seed=4, with_velocity=True)
        exact = wave2d_trajectories(
            2, n_steps=4, n_out=n, seed=4, with_velocity=True, method="spectral"
        )
        assert fd.shape == exact.shape == (2, 5, 2, n, n)
        assert float(fd[:, 0, 1].abs().max()) == 0.0 == float(exact[:, 0, 1].abs().max())
        difference = (fd - exact).transpose(0, 2).reshape(2, -1).norm(dim=1)
        errors.append(difference / exact.transpose(0, 2).reshape(2, -1).norm(dim=1))
    assert bool((errors[1] < 1e-2).all()) and bool((errors[0] / errors[1] > 3).all())
    plain = wave2d_trajectories(1, n_steps=4, n_out=65, seed=4)
    # sample i does not depend on n_samples (up to the batch size's round-off in BLAS)
    assert torch.allclose(plain, fd[:1, :, 0], rtol=0, atol=1e-12)
