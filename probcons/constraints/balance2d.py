"""The mass balance of the 2-D wave equation with Neumann walls, as one row per time slice.

u_tt = c^2 (u_xx + u_yy), du/dn = 0 on the walls: d^2/dt^2 integral u = c^2 (line integral of
du/dn) = 0, so integral u_t is conserved, and with the fluid at rest at t = 0 (u_t(0) = 0)

    M(t) = integral of u(t, x, y) dx dy = M(0)   for all t.

The quadrature must match the grid of the data. `probcons.solvers.wave2d` eliminates the wall
nodes by the one-sided stencil (u = T U T^T, U the interior block) and steps U'' = A U + U A^T,
A = L T (interior second differences after the elimination). With q the left null vector of A
(A^T q = 0), m(U) = q^T U q obeys m'' = 0 exactly, and the leapfrog start u(-dt) = u(dt) keeps
it constant: on the solver's own output the row holds to round-off. q is scaled to sum to the
side length, so q^T U q is a quadrature of the integral (uniform nodes: weights h inside, 3h/2
next to each wall, 0 on the walls). The trapezoid rule misses the discrete balance by O(h^2)
(measured in tests/constraints/test_balance2d.py).
"""

from __future__ import annotations

import torch

from probcons.constraints.linear import LinearConstraint
from probcons.errors import UsageError
from probcons.grid2d import Grid2d, check_grid2d
from probcons.solvers.neumann import laplacian_rows, neumann_elimination
from probcons.validation import as_float64_tensor, check_nonnegative, check_positive_int, describe

NULL_TOLERANCE = 1e-8
"""Largest smallest-singular-value of A relative to its largest for a left null vector to exist."""


def balance_axis_weights(nodes: torch.Tensor, order: int = 2) -> torch.Tensor:
    """(n,) weights on one axis: 0 at the two walls, inside the left null vector of the
    eliminated second-difference operator A = L T (order-`order` Neumann stencils), scaled to
    sum to nodes[-1] - nodes[0]."""
    nodes = as_float64_tensor(nodes, "nodes").reshape(-1)
    order = check_positive_int(order, "order")
    transfer, _ = neumann_elimination(nodes, order)
    operator = laplacian_rows(nodes) @ transfer  # (n - 2, n - 2)
    _, singular, right = torch.linalg.svd(operator.T)
    if float(singular[-1]) > NULL_TOLERANCE * float(singular[0]):
        raise UsageError(
            f"nodes: the Neumann operator of order {order} on these nodes has no left null "
            f"vector (smallest singular value {float(singular[-1]):.3g})"
        )
    null = right[-1]
    weights = torch.zeros_like(nodes)
    weights[1:-1] = null * (float(nodes[-1] - nodes[0]) / float(null.sum()))
    return weights


def balance_weights(grid2d: Grid2d, order: int = 2) -> torch.Tensor:
    """(n_x, n_y) product weights q_x q_y of `balance_axis_weights` on both axes."""
    check_grid2d(grid2d)
    return torch.outer(balance_axis_weights(grid2d.x, order), balance_axis_weights(grid2d.y, order))


def wave_balance_constraint2d(
    grid2d: Grid2d, initial, noise_std: float = 0.0, order: int = 2, quadrature=None
) -> LinearConstraint:
    """Rows sum_ik q_ik u[j, i, k] = sum_ik q_ik initial[i, k] on every slice of `grid2d.flat`.

    initial (n_x, n_y): the state at rest whose mass is conserved; quadrature: weights (n_x, n_y)
    (default `balance_weights(grid2d, order)`, exact on the solver's output). Row name "balance".
    """
    check_grid2d(grid2d)
    initial = as_float64_tensor(initial, "initial")
    if tuple(initial.shape) != (grid2d.n_x, grid2d.n_y):
        raise UsageError(
            f"initial: expected shape ({grid2d.n_x}, {grid2d.n_y}), got {describe(initial)}"
        )
    noise_std = check_nonnegative(noise_std, "noise_std")
    if quadrature is None:
        weights = balance_weights(grid2d, order)
    else:
        weights = as_float64_tensor(quadrature, "quadrature")
        if tuple(weights.shape) != (grid2d.n_x, grid2d.n_y):
            raise UsageError(
                f"quadrature: expected shape ({grid2d.n_x}, {grid2d.n_y}), got {describe(weights)}"
            )
    mass = float((weights * initial).sum())
    row = weights.reshape(1, 1, -1)
    return LinearConstraint(
        row.expand(grid2d.n_t, 1, row.shape[-1]),
        torch.full((grid2d.n_t, 1), mass, dtype=torch.float64),
        torch.tensor(noise_std, dtype=torch.float64),
        ("balance",),
    )


__all__ = [
    "NULL_TOLERANCE",
    "balance_axis_weights",
    "balance_weights",
    "wave_balance_constraint2d",
]
