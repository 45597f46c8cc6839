"""Boundary conditions as linear constraints per time slice: Dirichlet, Neumann, periodic."""

from __future__ import annotations

import torch

from probcons.constraints.finite_difference import derivative_weights
from probcons.constraints.linear import LinearConstraint
from probcons.errors import UsageError
from probcons.grid import Grid, check_grid
from probcons.validation import as_float64_tensor, check_nonnegative


def _boundary_values(value, grid: Grid, name: str) -> torch.Tensor:
    """Scalar or (n_t,) boundary data -> (n_t,)."""
    values = as_float64_tensor(value, name)
    if values.dim() == 0:
        return values.expand(grid.n_t).clone()
    values = values.reshape(-1)
    if values.numel() != grid.n_t:
        raise UsageError(f"{name}: expected a scalar or {grid.n_t} values, got {values.numel()}")
    return values


def _rows(grid: Grid, sides: dict[str, tuple[torch.Tensor, torch.Tensor]], noise_std: float):
    """Assemble rows from {side: (stencil (n_x,), values (n_t,))}."""
    if not sides:
        raise UsageError("left, right: expected at least one boundary value, got None for both")
    noise_std = check_nonnegative(noise_std, "noise_std")
    names = tuple(sides)
    weights = torch.stack([stencil for stencil, _ in sides.values()])
    values = torch.stack([value for _, value in sides.values()], dim=1)
    return LinearConstraint(
        weights.expand(grid.n_t, len(names), grid.n_x),
        values,
        torch.tensor(noise_std, dtype=torch.float64),
        names,
    )


def dirichlet_constraint(grid: Grid, left=None, right=None, noise_std: float = 0.0):
    """u(t_j, x_0) = left_j and/or u(t_j, x_{n_x - 1}) = right_j."""
    check_grid(grid)
    sides = {}
    for side, value, index in (("left", left, 0), ("right", right, grid.n_x - 1)):
        if value is not None:
            stencil = torch.zeros(grid.n_x, dtype=torch.float64)
            stencil[index] = 1.0
            sides[f"dirichlet_{side}"] = (stencil, _boundary_values(value, grid, side))
    return _rows(grid, sides, noise_std)


def neumann_constraint(grid: Grid, left=None, right=None, order: int = 2, noise_std: float = 0.0):
    """One-sided u_x(t_j, x_boundary) = g_j with a stencil of `order` + 1 nodes (error O(h^order))."""
    check_grid(grid)
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order < grid.n_x:
        raise UsageError(f"order: expected an integer in [1, {grid.n_x - 1}], got {order!r}")
    sides = {}
    for side, value in (("left", left), ("right", right)):
        if value is None:
            continue
        index = (
            torch.arange(order + 1)
            if side == "left"
            else torch.arange(grid.n_x - order - 1, grid.n_x)
        )
        at = grid.x[0] if side == "left" else grid.x[-1]
        stencil = torch.zeros(grid.n_x, dtype=torch.float64)
        stencil[index] = derivative_weights(grid.x[index], float(at), order=1)
        sides[f"neumann_{side}"] = (stencil, _boundary_values(value, grid, side))
    return _rows(grid, sides, noise_std)


def periodic_constraint(grid: Grid, noise_std: float = 0.0) -> LinearConstraint:
    """u(t_j, x_0) - u(t_j, x_{n_x - 1}) = 0."""
    check_grid(grid)
    stencil = torch.zeros(grid.n_x, dtype=torch.float64)
    stencil[0], stencil[-1] = 1.0, -1.0
    return _rows(
        grid, {"periodic": (stencil, torch.zeros(grid.n_t, dtype=torch.float64))}, noise_std
    )
