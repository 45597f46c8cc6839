"""Stokes' theorem on a velocity field: the circulation row of a 2-D flow, and channel embedding.

For a velocity (u, v) on a rectangle R with vorticity omega = v_x - u_y (the sign of
`probcons.solvers.cavity`: omega = -(psi_xx + psi_yy), u = psi_y, v = -psi_x),

    integral_R omega dx dy = line integral of u . dl around the boundary, counter-clockwise.

Discretely the row is sum_ik w_i w_k (D_x v - D_y u)_ik with w the trapezoid weights and D the
first-derivative matrix with central rows inside and first-order one-sided rows at the two ends.
Then w^T D f = f_last - f_first exactly (a telescoping sum), so the row equals the trapezoid line
integral of the tangential velocity over the four walls: a discrete Stokes theorem that holds to
round-off for any field. In the lid-driven cavity (no slip, lid y = top moving with U in +x) the
walls give sum = -U (x_last - x_first): the circulation is -U L, counter-clockwise.

Because the row only reads wall values it lies in the span of the Dirichlet wall rows: on a
prediction whose walls are exact (BOON) it holds already, and stacked beside all the wall rows
it is redundant. Second-order one-sided end rows would read the near-wall nodes, but on the
solver's flows they miss -U L by 0.25 U at t = 0 (the lid starts against a smooth interior) and at
t = 2 by 0.048, 0.019, 0.008 at n = 17, 33, 65 nodes (first order: the lid corners' velocity jump;
tests/constraints/test_circulation2d.py): the telescoping rule is the one that matches the grid.

Fields with C channels live on a flat grid of C n_x n_y positions per time slice, channel-major
(position c n_x n_y + i n_y + k); `embed_channel` places one channel's rows there.
"""

from __future__ import annotations

import torch

from probcons.constraints.linear import LinearConstraint
from probcons.errors import UsageError
from probcons.grid import trapezoid_weights
from probcons.grid2d import Grid2d, check_grid2d
from probcons.validation import as_float64_tensor, check_nonnegative, describe

VELOCITY_CHANNELS = 2
"""(u, v): the channels of a velocity field, in this order."""


def telescoping_derivative(nodes: torch.Tensor) -> torch.Tensor:
    """(n, n) first-derivative matrix D: central rows inside, first-order one-sided rows at the
    ends, so that w^T D f = f[-1] - f[0] for the trapezoid weights w of `nodes`."""
    n = nodes.numel()
    matrix = torch.zeros(n, n, dtype=torch.float64)
    inside = torch.arange(1, n - 1)
    gap = nodes[2:] - nodes[:-2]
    matrix[inside, inside - 1] = -1 / gap
    matrix[inside, inside + 1] = 1 / gap
    for row, (a, b) in ((0, (0, 1)), (n - 1, (n - 2, n - 1))):
        step = nodes[b] - nodes[a]
        matrix[row, a], matrix[row, b] = -1 / step, 1 / step
    return matrix


def circulation_weights(grid2d: Grid2d) -> torch.Tensor:
    """(2, n_x, n_y) weights c with sum c * (u, v) = trapezoid integral of D_x v - D_y u."""
    check_grid2d(grid2d)
    w_x, w_y = trapezoid_weights(grid2d.x), trapezoid_weights(grid2d.y)
    d_x, d_y = telescoping_derivative(grid2d.x), telescoping_derivative(grid2d.y)
    on_u = -torch.outer(w_x, d_y.T @ w_y)  # - sum_ik w_i w_k (D_y u)_ik
    on_v = torch.outer(d_x.T @ w_x, w_y)  # + sum_ik w_i w_k (D_x v)_ik
    return torch.stack([on_u, on_v])


def lid_circulation(lid_velocity: float, length: float) -> float:
    """-U L: the counter-clockwise circulation of a cavity whose top wall moves with U in +x."""
    return -float(lid_velocity) * float(length)


def circulation_constraint2d(grid2d: Grid2d, circulation, noise_std: float = 0.0):
    """One row per time slice on a velocity (2, n_x, n_y) flattened channel-major:
    integral of omega = circulation[j] (a scalar or (n_t,)); row name "circulation"."""
    check_grid2d(grid2d)
    values = as_float64_tensor(circulation, "circulation").reshape(-1)
    if values.numel() == 1:
        values = values.expand(grid2d.n_t)
    if values.numel() != grid2d.n_t:
        raise UsageError(
            f"circulation: expected a scalar or shape ({grid2d.n_t},), got {describe(values)}"
        )
    noise_std = check_nonnegative(noise_std, "noise_std")
    row = circulation_weights(grid2d).reshape(1, 1, -1)
    return LinearConstraint(
        row.expand(grid2d.n_t, 1, row.shape[-1]),
        values.reshape(-1, 1).clone(),
        torch.tensor(noise_std, dtype=torch.float64),
        ("circulation",),
    )


def embed_channel(constraint: LinearConstraint, channel: int, channels: int) -> LinearConstraint:
    """The rows of `constraint` (on one channel's P positions) on a field of `channels` channels
    flattened channel-major (channels P positions): zero weight on the other channels."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise UsageError(f"channels: expected a positive integer, got {channels!r}")
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < channels:
        raise UsageError(f"channel: expected an integer in [0, {channels}), got {channel!r}")
    weights = constraint.weights
    n_t, rows, points = weights.shape
    shared = weights.stride(0) == 0 or n_t == 1
    source = weights[:1] if shared else weights
    wide = source.new_zeros(source.shape[0], rows, channels * points)
    wide[:, :, channel * points : (channel + 1) * points] = source
    if shared:
        wide = wide.expand(n_t, rows, channels * points)
    names = tuple(f"c{channel}:{name}" for name in constraint.names)
    return LinearConstraint(wide, constraint.values, constraint.noise_std, names)


__all__ = [
    "VELOCITY_CHANNELS",
    "circulation_constraint2d",
    "circulation_weights",
    "embed_channel",
    "lid_circulation",
    "telescoping_derivative",
]
