"""Boundary conditions on all four sides of a 2-D grid (batch, C, n1, n2).

Axis 0 = x (index i), axis 1 = y (index j). The sides normal to axis 0 ("x-sides") carry a 1-D
`BoundaryCondition` applied along axis 0 for every j; the sides normal to axis 1 ("y-sides")
one applied along axis 1 for every i. Consumed by BOON's 2-D kernel correction
(`probcons.boon.correction2d`) and its output solve (`BoundaryCondition2d.enforce`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probcons.constraints.boundary_condition import BoundaryCondition, dirichlet, neumann
from probcons.errors import UsageError

AXES = (0, 1)


def _fold(u: torch.Tensor, axis: int) -> torch.Tensor:
    """(B, C, n1, n2) -> (B, C * n_other, n_axis): the lines along `axis` as 1-D signals."""
    if axis == 0:
        u = u.transpose(-1, -2)
    return u.reshape(u.shape[0], -1, u.shape[-1])


def _unfold(lines: torch.Tensor, axis: int, channels: int) -> torch.Tensor:
    """Inverse of `_fold`."""
    u = lines.reshape(lines.shape[0], channels, -1, lines.shape[-1])
    return u.transpose(-1, -2) if axis == 0 else u


def _fold_data(data: torch.Tensor | None) -> torch.Tensor | None:
    """(B, C, r, m) side data -> (B, C * m, r), the 1-D condition's data layout for `_fold`."""
    if data is None:
        return None
    return data.transpose(-1, -2).reshape(data.shape[0], -1, data.shape[2])


@dataclass(frozen=True)
class BoundaryCondition2d:
    """Conditions on the x-sides (rows along axis 0) and the y-sides (rows along axis 1).

    Data: a pair (g_x, g_y), g_x broadcastable to (batch, C, r_x, n2), g_y to
    (batch, C, r_y, n1); None (or a None entry) means zero data.
    """

    x: BoundaryCondition
    y: BoundaryCondition

    def __post_init__(self) -> None:
        for name in ("x", "y"):
            condition = getattr(self, name)
            if not isinstance(condition, BoundaryCondition):
                raise UsageError(
                    f"{name}: expected a BoundaryCondition, got {type(condition).__name__}"
                )
            if condition.kind == "periodic":
                raise UsageError(f"{name}: expected a Dirichlet or Neumann condition, got periodic")

    def along(self, axis: int) -> BoundaryCondition:
        return self.x if axis == 0 else self.y

    def minimum_nodes(self) -> tuple[int, int]:
        return self.x.minimum_nodes(), self.y.minimum_nodes()

    def check_shape(self, shape: tuple[int, ...], name: str = "u") -> None:
        need = self.minimum_nodes()
        if len(shape) != 4 or shape[-2] < need[0] or shape[-1] < need[1]:
            raise UsageError(
                f"{name}: expected (batch, channels, n1 >= {need[0]}, n2 >= {need[1]}),"
                f" got {tuple(shape)}"
            )

    def _side_data(self, data, axis: int, u: torch.Tensor) -> torch.Tensor | None:
        value = None if data is None else data[axis]
        if value is None:
            return None
        condition = self.along(axis)
        shape = (u.shape[0], u.shape[1], condition.n_rows, u.shape[3 - axis])
        value = torch.as_tensor(value, dtype=u.dtype, device=u.device)
        try:
            return value.expand(shape)
        except RuntimeError as error:
            side = "g_x" if axis == 0 else "g_y"
            raise UsageError(
                f"data: expected {side} broadcastable to {shape}, got {tuple(value.shape)}"
            ) from error

    def residuals(self, u: torch.Tensor, data=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(R_x u - g_x (B, C, r_x, n2), R_y u - g_y (B, C, r_y, n1)) on all four sides."""
        self.check_shape(tuple(u.shape))
        out = []
        for axis in AXES:
            condition = self.along(axis)
            rows, _ = condition.rows(u.shape[2 + axis])
            values = torch.einsum("kn,bcn->bck", rows.to(u.dtype), _fold(u, axis))
            values = values.reshape(u.shape[0], u.shape[1], -1, condition.n_rows).transpose(-1, -2)
            side = self._side_data(data, axis, u)
            out.append(values if side is None else values - side)
        return out[0], out[1]

    def residual_max(self, u: torch.Tensor, data=None) -> float:
        """max |R u - g| over all rows of all four sides."""
        return max(float(r.detach().abs().max()) for r in self.residuals(u, data))

    def functionals(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R_x u, R_y u): the data that u itself satisfies (Dirichlet: its boundary values)."""
        return self.residuals(u, None)

    def enforce(self, u: torch.Tensor, data=None) -> torch.Tensor:
        """u with its anchor nodes solved so that every row on the four sides holds (see doc).

        y-sides first on the lines i that are not x-side anchors, then x-sides on every line j.
        Differentiable; returns a new tensor.
        """
        self.check_shape(tuple(u.shape))
        channels, n1 = u.shape[1], u.shape[2]
        _, x_anchors = self.x.rows(n1)
        keep = [i for i in range(n1) if i not in x_anchors]
        out = u.clone()
        g_y = self._side_data(data, 1, u)
        g_y = None if g_y is None else g_y[..., keep]
        out[:, :, keep, :] = _unfold(
            self.y.enforce(_fold(out[:, :, keep, :], 1), _fold_data(g_y)), 1, channels
        )
        g_x = _fold_data(self._side_data(data, 0, u))
        return _unfold(self.x.enforce(_fold(out, 0), g_x), 0, channels)


def dirichlet2d() -> BoundaryCondition2d:
    """u = g on all four sides."""

    return BoundaryCondition2d(dirichlet(), dirichlet())


def neumann2d(step_x: float, step_y: float, order: int = 2) -> BoundaryCondition2d:
    """du/dn-type rows on all four sides: u_x = g on the x-sides, u_y = g on the y-sides."""

    return BoundaryCondition2d(neumann(step_x, order), neumann(step_y, order))
