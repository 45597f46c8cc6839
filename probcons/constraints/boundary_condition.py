"""One boundary-condition type for both papers: BOON's kernel correction and the exact update.

A BoundaryCondition is consumed by the BOON layers (`rows`, `residual`, `enforce` on an
operator's output (batch, channels, n)) and by the probabilistic constraints
(`constraint(grid, left, right)`: the same rows per time slice as a LinearConstraint, built by
`dirichlet_constraint`, `neumann_constraint`, `periodic_constraint`).

Each condition is r rows per channel, sum_n R[k, n] u[c, n] = g[c, k], and each row k has an
anchor node a_k (the boundary node it is solved for):
- Dirichlet:  R = e_0 (left), e_{N-1} (right); anchors 0, N-1.
- Neumann:    one-sided first-derivative stencil of `order` (error O(h^order)) with step h,
              e.g. order 2 left (-3 u_0 + 4 u_1 - u_2) / (2 h) = g; anchors 0, N-1.
- Periodic:   R = e_0 - e_{N-1}, g = 0 (grid with both ends, x_{N-1} = x_0 + period); anchor 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probcons.constraints.boundary import (
    dirichlet_constraint,
    neumann_constraint,
    periodic_constraint,
)
from probcons.constraints.finite_difference import derivative_weights
from probcons.constraints.linear import LinearConstraint
from probcons.errors import UsageError
from probcons.grid import Grid, check_grid
from probcons.validation import check_positive_int

STEP_TOLERANCE = 1e-9
"""Relative mismatch between a Neumann condition's step h and the grid's spacing that is
refused: the stencil would not be the derivative on that grid."""

KINDS = ("dirichlet", "neumann", "periodic")
SIDES = ("left", "right")


@dataclass(frozen=True)
class BoundaryCondition:
    """A boundary condition on either or both ends; `step` and `order` only for Neumann."""

    kind: str
    sides: tuple[str, ...] = SIDES
    step: float | None = None
    order: int = 2

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        sides = tuple(self.sides)
        if not sides or len(set(sides)) != len(sides) or any(s not in SIDES for s in sides):
            raise UsageError(f"sides: expected a non-empty subset of {SIDES}, got {self.sides!r}")
        object.__setattr__(self, "sides", tuple(s for s in SIDES if s in sides))
        if self.kind == "periodic" and self.sides != SIDES:
            raise UsageError(f"sides: a periodic condition couples both ends, got {self.sides!r}")
        if self.kind == "neumann":
            if self.step is None or not float(self.step) > 0:
                raise UsageError(
                    f"step: expected the grid step h > 0 for Neumann, got {self.step!r}"
                )
            check_positive_int(self.order, "order")

    @property
    def n_rows(self) -> int:
        """Rows per channel: one per side, one for periodic."""
        return 1 if self.kind == "periodic" else len(self.sides)

    @property
    def has_data(self) -> bool:
        """Periodic conditions carry no data (g = 0)."""
        return self.kind != "periodic"

    def minimum_nodes(self) -> int:
        return 2 * (self.order + 1) if self.kind == "neumann" else 2

    def stencil(self, side: str) -> torch.Tensor:
        """Weights on the `order` + 1 nodes nearest `side` (in increasing node order)."""
        if self.kind == "dirichlet":
            return torch.ones(1, dtype=torch.float64)
        nodes = float(self.step) * torch.arange(self.order + 1, dtype=torch.float64)
        at = 0.0 if side == "left" else float(nodes[-1])
        return derivative_weights(nodes, at, order=1)

    def rows(self, n: int, length: int | None = None) -> tuple[torch.Tensor, list[int]]:
        """(R (r, length) float64, anchors) for a field of n physical nodes stored in `length` >= n."""
        if n < self.minimum_nodes():
            raise UsageError(f"n: expected at least {self.minimum_nodes()} nodes, got {n}")
        length = n if length is None else length
        if self.kind == "periodic":
            rows = torch.zeros(1, length, dtype=torch.float64)
            rows[0, 0], rows[0, n - 1] = 1.0, -1.0
            return rows, [0]
        rows = torch.zeros(len(self.sides), length, dtype=torch.float64)
        anchors = []
        for k, side in enumerate(self.sides):
            weights = self.stencil(side)
            if side == "left":
                rows[k, : weights.numel()] = weights
                anchors.append(0)
            else:
                rows[k, n - weights.numel() : n] = weights
                anchors.append(n - 1)
        return rows, anchors

    def constraint(
        self, grid: Grid, left=0.0, right=0.0, noise_std: float = 0.0
    ) -> LinearConstraint:
        """The condition's rows at every time slice of `grid`, as a LinearConstraint.

        left, right: the boundary data g at each end (scalars or (n_t,)); ignored for the ends
        the condition does not cover, and for periodic. A Neumann condition's step must be the
        grid's spacing (uniform grid), else the rows would not be its derivative there.
        """
        check_grid(grid)
        values = {side: value for side, value in (("left", left), ("right", right))}
        chosen = {side: values[side] for side in self.sides}
        if self.kind == "periodic":
            return periodic_constraint(grid, noise_std)
        if self.kind == "dirichlet":
            return dirichlet_constraint(grid, **chosen, noise_std=noise_std)
        spacing = grid.x[1:] - grid.x[:-1]
        step = float(self.step)
        if float((spacing - step).abs().max()) > STEP_TOLERANCE * step:
            raise UsageError(
                f"step: the Neumann condition's step {step:g} is not the grid's spacing "
                f"(from {float(spacing.min()):g} to {float(spacing.max()):g})"
            )
        return neumann_constraint(grid, **chosen, order=self.order, noise_std=noise_std)

    def _data(self, data, u: torch.Tensor) -> torch.Tensor:
        """Boundary data broadcast to (batch, channels, r); zeros when absent."""
        shape = (u.shape[0], u.shape[1], self.n_rows)
        if data is None or not self.has_data:
            return u.new_zeros(shape)
        data = torch.as_tensor(data, dtype=u.dtype, device=u.device)
        try:
            return data.expand(shape)
        except RuntimeError as error:
            raise UsageError(
                f"data: expected a tensor broadcastable to {shape}, got {tuple(data.shape)}"
            ) from error

    def residual(self, u: torch.Tensor, data=None) -> torch.Tensor:
        """R u - g, (batch, channels, r), for u (batch, channels, n)."""
        rows, _ = self.rows(u.shape[-1])
        return torch.einsum("kn,bcn->bck", rows.to(u.dtype), u) - self._data(data, u)

    def enforce(self, u: torch.Tensor, data=None) -> torch.Tensor:
        """u with its anchor nodes solved from the rows, so that R u = g exactly (up to round-off).

        Periodic: both end nodes set to their average. Differentiable; returns a new tensor.
        """
        n = u.shape[-1]
        rows, anchors = self.rows(n)
        rows = rows.to(u.dtype)
        target = self._data(data, u)
        out = u.clone()
        if self.kind == "periodic":
            mean = 0.5 * (u[..., 0] + u[..., n - 1])
            out[..., 0] = mean
            out[..., n - 1] = mean
            return out
        for k, anchor in enumerate(anchors):
            others = rows[k].clone()
            others[anchor] = 0
            out[..., anchor] = (target[..., k] - u @ others) / rows[k, anchor]
        return out


def dirichlet(sides: tuple[str, ...] = SIDES) -> BoundaryCondition:
    """u = g at the chosen ends."""
    return BoundaryCondition("dirichlet", sides)


def neumann(step: float, order: int = 2, sides: tuple[str, ...] = SIDES) -> BoundaryCondition:
    """u_x = g at the chosen ends, one-sided stencil of `order` with grid step `step`."""
    return BoundaryCondition("neumann", sides, float(step), order)


def periodic() -> BoundaryCondition:
    """u(x_0) = u(x_{N-1})."""
    return BoundaryCondition("periodic")
