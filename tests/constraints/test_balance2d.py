"""The wave's mass balance on the solver's output: exact with the solver's quadrature."""

import pytest
import torch

from probcons.constraints.balance2d import (
    balance_axis_weights,
    balance_weights,
    wave_balance_constraint2d,
)
from probcons.errors import UsageError
from probcons.grid2d import Grid2d
from probcons.solvers.neumann import laplacian_rows, neumann_elimination
from probcons.solvers.wave2d import wave2d_trajectories


def _trajectories(n: int) -> torch.Tensor:
    return wave2d_trajectories(2, n_steps=25, t_end=2.0, n_out=n, seed=1)  # (2, 26, n, n)


def test_axis_weights_are_the_left_null_vector_and_a_quadrature():
    nodes = torch.linspace(0, 1, 21, dtype=torch.float64)
    q = balance_axis_weights(nodes)
    transfer, _ = neumann_elimination(nodes, 2)
    operator = laplacian_rows(nodes) @ transfer
    assert (operator.T @ q[1:-1]).abs().max() < 1e-10
    assert abs(float(q.sum()) - 1.0) < 1e-14 and q[0] == 0 and q[-1] == 0
    h = 1 / 20  # uniform nodes: h inside, 3h/2 next to the walls
    assert torch.allclose(
        q[1:-1],
        torch.full((19,), h, dtype=torch.float64).index_fill(0, torch.tensor([0, 18]), 1.5 * h),
    )


def test_balance_holds_to_round_off_on_solver_output_and_trapezoid_at_second_order():
    misses = {}
    for n in (17, 33):
        states = _trajectories(n)
        grid2d = Grid2d.uniform((0, 2), (0, 1), (0, 1), 26, n, n)
        fields = states.reshape(2, 26, -1)
        exact = [
            wave_balance_constraint2d(grid2d, s[0]).residual(f)
            for s, f in zip(states, fields, strict=True)
        ]
        assert max(float(r.abs().max()) for r in exact) < 1e-13
        trapezoid = grid2d.trapezoid_weights()
        drift = [
            wave_balance_constraint2d(grid2d, s[0], quadrature=trapezoid).residual(f)
            for s, f in zip(states, fields, strict=True)
        ]
        misses[n] = max(float(r.abs().max()) for r in drift)
    assert misses[17] > 1e-4 and 3.0 < misses[17] / misses[33] < 8.0  # O(h^2)


def test_balance_weights_shape_and_checks():
    grid2d = Grid2d.uniform((0, 1), (0, 1), (0, 1), 3, 9, 11)
    assert balance_weights(grid2d).shape == (9, 11)
    with pytest.raises(UsageError, match="initial: expected shape \\(9, 11\\)"):
        wave_balance_constraint2d(grid2d, torch.zeros(9, 9))
