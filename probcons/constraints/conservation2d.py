"""Conservation on a (t, x, y) grid: one mass row per time slice, product quadrature over space.

U(t_j) = sum_ik w_x[i] w_y[k] u(t_j, x_i, y_k), w_x and w_y the weights of a 1-D rule on each
axis (`probcons.constraints.quadrature`). The rows live on `grid2d.flat` (x-major), so the exact
update stays per time slice: weights (n_t, 1, n_x n_y), stored once (stride 0 over time).
"""

from __future__ import annotations

import torch

from probcons.constraints.linear import LinearConstraint
from probcons.constraints.quadrature import QUADRATURE_RULES, quadrature_weights
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.grid2d import Grid2d, check_grid2d
from probcons.validation import as_float64_tensor, check_nonnegative, check_shape, describe


def _axis_weights(grid2d: Grid2d, axis: str, rule: str) -> torch.Tensor:
    """(n,) weights of the 1-D rule `rule` on the space axis `axis` ("x" or "y")."""
    if not isinstance(rule, str):
        raise UsageError(f"quadrature: expected rule names for x and y, got {rule!r} for {axis}")
    values = grid2d.x if axis == "x" else grid2d.y
    try:
        return quadrature_weights(Grid(grid2d.t[:1], values), rule)
    except UsageError as error:  # the 1-D message speaks of "x-grid": say which axis
        raise UsageError(f"{error} (on the {axis} axis)") from None


def space_quadrature_weights(grid2d: Grid2d, quadrature="trapezoid") -> torch.Tensor:
    """Weights of the space integral on `grid2d`: (n_x, n_y), or (n_t, n_x, n_y) if given so.

    quadrature: a rule name used on both axes ("trapezoid": any increasing axes, O(dx^2 + dy^2);
    "periodic", "simpson": see `quadrature_weights`), a pair (rule for x, rule for y), or the
    weights themselves, (n_x, n_y) or (n_t, n_x, n_y).
    """
    check_grid2d(grid2d)
    if isinstance(quadrature, str):
        quadrature = (quadrature, quadrature)
    if isinstance(quadrature, tuple) and len(quadrature) == 2:
        return torch.outer(
            _axis_weights(grid2d, "x", quadrature[0]), _axis_weights(grid2d, "y", quadrature[1])
        )
    if isinstance(quadrature, (tuple, list)) and all(isinstance(q, str) for q in quadrature):
        raise UsageError(
            f"quadrature: expected one rule or a pair (rule for x, rule for y), got {quadrature!r}"
        )
    weights = as_float64_tensor(quadrature, "quadrature")
    n_t, n_x, n_y = grid2d.shape
    if tuple(weights.shape) not in ((n_x, n_y), (n_t, n_x, n_y)):
        raise UsageError(
            f"quadrature: expected one of {', '.join(repr(r) for r in QUADRATURE_RULES)}, a pair "
            f"of them, or weights of shape ({n_x}, {n_y}) or ({n_t}, {n_x}, {n_y}), got "
            f"{describe(weights)}"
        )
    return weights


def mass_constraint2d(
    grid2d: Grid2d, mass, noise_std: float = 0.0, quadrature="trapezoid"
) -> LinearConstraint:
    """Rows sum_ik w_ik u[j, i, k] = U(t_j) + eps_j on `grid2d.flat`; mass (n_t,) holds U(t_j).

    w: `space_quadrature_weights(grid2d, quadrature)` (default the product of the 1-D trapezoid
    weights, non-uniform axes allowed), flattened x-major like the field.
    """
    check_grid2d(grid2d)
    mass = as_float64_tensor(mass, "mass")
    if mass.dim() > 1:
        raise UsageError(f"mass: expected shape ({grid2d.n_t},), got {describe(mass)}")
    mass = mass.reshape(-1)
    check_shape(mass, (grid2d.n_t,), "mass")
    noise_std = check_nonnegative(noise_std, "noise_std")
    weights = space_quadrature_weights(grid2d, quadrature)
    n_t, n_points = grid2d.n_t, grid2d.n_x * grid2d.n_y
    if weights.dim() == 2:
        rows = weights.reshape(1, 1, n_points).expand(n_t, 1, n_points)
    else:
        rows = weights.reshape(n_t, 1, n_points)
    return LinearConstraint(
        rows, mass[:, None], torch.tensor(noise_std, dtype=torch.float64), ("mass",)
    )


__all__ = ["mass_constraint2d", "space_quadrature_weights"]
