"""Neumann boundaries by elimination: boundary nodes follow from a one-sided stencil.

With the stencil sum_j c_j u_j = g at each end (c from `derivative_weights`, order p), the full
grid vector is affine in the interior values: u = T u_int + S g, T (n_x, n_x - 2), S (n_x, 2).
A solution built this way satisfies the discrete Neumann condition to round-off at every time.
"""

from __future__ import annotations

import torch

from probcons.constraints.finite_difference import derivative_weights
from probcons.errors import UsageError


def neumann_stencils(x: torch.Tensor, order: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right one-sided first-derivative stencils, each (order + 1,) on the end nodes."""
    left = derivative_weights(x[: order + 1], float(x[0]), order=1)
    right = derivative_weights(x[-order - 1 :], float(x[-1]), order=1)
    return left, right


def neumann_elimination(x: torch.Tensor, order: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, S): u = T u_int + S [g_left, g_right] satisfies both one-sided Neumann stencils."""
    n = x.numel()
    if n < 2 * order + 2:
        raise UsageError(f"x: expected at least {2 * order + 2} nodes for order {order}, got {n}")
    left, right = neumann_stencils(x, order)
    transfer = torch.zeros(n, n - 2, dtype=torch.float64)
    transfer[1:-1] = torch.eye(n - 2, dtype=torch.float64)
    source = torch.zeros(n, 2, dtype=torch.float64)
    # u_0 = (g_L - sum_{j>=1} c_j u_j) / c_0; interior node j is column j - 1.
    transfer[0, :order] = -left[1:] / left[0]
    source[0, 0] = 1.0 / left[0]
    # u_{n-1} = (g_R - sum_{j<last} c_j u_j) / c_last.
    transfer[-1, n - 2 - order :] = -right[:-1] / right[-1]
    source[-1, 1] = 1.0 / right[-1]
    return transfer, source


def laplacian_rows(x: torch.Tensor) -> torch.Tensor:
    """(n_x - 2, n_x) second-difference rows at the interior nodes of a (possibly uneven) grid."""
    n = x.numel()
    h_minus = x[1:-1] - x[:-2]
    h_plus = x[2:] - x[1:-1]
    rows = torch.zeros(n - 2, n, dtype=torch.float64)
    index = torch.arange(n - 2)
    rows[index, index] = 2 / (h_minus * (h_minus + h_plus))
    rows[index, index + 1] = -2 / (h_minus * h_plus)
    rows[index, index + 2] = 2 / (h_plus * (h_minus + h_plus))
    return rows
