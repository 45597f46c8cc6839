"""The circulation row on the cavity solver's output, its wall-only form, and channel embedding."""

import pytest
import torch

from probcons.constraints import dirichlet_constraint2d
from probcons.constraints.circulation2d import (
    circulation_constraint2d,
    circulation_weights,
    embed_channel,
    lid_circulation,
    telescoping_derivative,
)
from probcons.constraints.finite_difference import derivative_weights
from probcons.errors import UsageError
from probcons.grid import trapezoid_weights
from probcons.grid2d import Grid2d
from probcons.solvers.cavity import LID_VELOCITY, cavity_trajectories, cavity_vorticity

N = 17


@pytest.fixture(scope="module")
def cavity():
    states = cavity_trajectories(2, n_steps=3, t_end=0.24, n_out=N, seed=3)  # (2, 4, 2, N, N)
    grid2d = Grid2d.uniform((0.0, 0.24), (0, 1), (0, 1), 4, N, N)
    return states, grid2d


def test_telescoping_derivative_sums_to_end_difference():
    nodes = torch.tensor([0.0, 0.1, 0.35, 0.5, 0.9, 1.3], dtype=torch.float64)
    f = torch.sin(3 * nodes)
    total = trapezoid_weights(nodes) @ telescoping_derivative(nodes) @ f
    assert abs(float(total - (f[-1] - f[0]))) < 1e-14


def test_circulation_on_solver_output_is_minus_lid_times_length(cavity):
    states, grid2d = cavity
    constraint = circulation_constraint2d(grid2d, lid_circulation(LID_VELOCITY, 1.0))
    fields = states.reshape(2, 4, -1)  # channel-major (u, v)
    assert constraint.residual(fields).abs().max() < 1e-13
    # the sign: the solver's vorticity is negative under the lid (omega = v_x - u_y)
    omega = cavity_vorticity(states[0, -1], 1.0 / (N - 1))
    assert float(omega[:, -2].mean()) < 0


def test_circulation_row_reads_the_walls_only_and_is_in_their_span(cavity):
    _, grid2d = cavity
    weights = circulation_weights(grid2d)  # (2, N, N)
    assert weights[:, 1:-1, 1:-1].abs().max() == 0
    walls = dirichlet_constraint2d(grid2d, {w: 0.0 for w in ("left", "right", "bottom", "top")})
    rows = torch.cat([embed_channel(walls, c, 2).weights[0] for c in (0, 1)])  # (r, 2 N^2)
    target = weights.reshape(-1)
    coefficients = torch.linalg.lstsq(rows.T, target[:, None]).solution
    assert (rows.T @ coefficients[:, 0] - target).abs().max() < 1e-12


def test_second_order_end_rows_miss_the_lid_circulation_at_first_order():
    """Why the telescoping rule: one-sided 2nd-order rows read the lid's corner singularity."""
    misses = []
    for n in (17, 33):
        states = cavity_trajectories(1, n_steps=25, t_end=2.0, n_out=n, seed=0)
        x = torch.linspace(0, 1, n, dtype=torch.float64)
        d = telescoping_derivative(x)
        d[0] = 0
        d[-1] = 0
        d[0, :3] = derivative_weights(x[:3], 0.0)
        d[-1, -3:] = derivative_weights(x[-3:], 1.0)
        u, v = states[0, -1, 0], states[0, -1, 1]  # t = 2
        omega = d @ v - u @ d.T
        w = trapezoid_weights(x)
        misses.append(abs(float(w @ omega @ w) + 1.0))
    assert misses[1] > 1e-2 and misses[0] / misses[1] < 3.0  # not second order


def test_embed_channel_places_rows_on_one_channel(cavity):
    _, grid2d = cavity
    walls = dirichlet_constraint2d(grid2d, {"top": 1.0})
    wide = embed_channel(walls, 1, 2)
    field = torch.randn(4, 2, N * N, dtype=torch.float64)
    assert torch.allclose(wide.apply(field.reshape(4, -1)), walls.apply(field[:, 1]))
    assert wide.weights.stride(0) == 0 and wide.names[0].startswith("c1:")
    with pytest.raises(UsageError, match="channel: expected an integer in \\[0, 2\\), got 2"):
        embed_channel(walls, 2, 2)


def test_circulation_values_are_checked(cavity):
    _, grid2d = cavity
    with pytest.raises(UsageError, match="circulation: expected a scalar or shape \\(4,\\)"):
        circulation_constraint2d(grid2d, torch.zeros(3))
