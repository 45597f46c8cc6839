"""Conservation in integral form: one row per time slice, trapezoid weights over x.

U(t_j) = sum_i w_i u(t_j, x_i),  w the trapezoid weights of the x-grid, U from the analytic
boundary fluxes: U(t) = U(0) + int_0^t (F(s, x_L) - F(s, x_R)) ds.
"""

from __future__ import annotations

import torch

from probcons.constraints.linear import LinearConstraint
from probcons.grid import Grid, check_grid
from probcons.validation import as_float64_tensor, check_nonnegative, check_shape


def conservation_constraint(
    grid: Grid, mass: torch.Tensor, noise_std: float = 0.0
) -> LinearConstraint:
    """Rows  sum_i w_i u[j, i] = U(t_j) + eps_j;  mass (n_t,) holds U(t_j)."""
    check_grid(grid)
    mass = as_float64_tensor(mass, "mass").reshape(-1)
    check_shape(mass, (grid.n_t,), "mass")
    noise_std = check_nonnegative(noise_std, "noise_std")
    weights = grid.trapezoid_weights().expand(grid.n_t, 1, grid.n_x)
    return LinearConstraint(
        weights, mass[:, None], torch.tensor(noise_std, dtype=torch.float64), ("mass",)
    )
