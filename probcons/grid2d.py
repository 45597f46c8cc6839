"""Space-time grids in two space dimensions: u[j, i, k] = u(t_j, x_i, y_k).

A `Grid2d` is kept for the exact update as an ordinary `Grid` (`grid2d.flat`) with the same
times and n_x n_y index positions per time slice, space flattened x-major: point (i, k) of a
slice is position p = i n_y + k (the C order of a (n_x, n_y) array, so `field.reshape(n_t, -1)`
is the flattening). The flattened grid's positions are labels 0..n_x n_y - 1, not coordinates:
build rows from the `Grid2d` (`probcons.constraints.mass_constraint2d`, the wall builders).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from probcons.errors import UsageError
from probcons.grid import Grid, trapezoid_weights
from probcons.validation import as_float64_tensor, as_float64_vector, check_positive_int, describe


@dataclass(frozen=True, eq=False)
class Grid2d:
    """Times t (n_t,), positions x (n_x,) and y (n_y,), each strictly increasing, n_x, n_y >= 2.

    Fields are (..., n_t, n_x, n_y) on this grid and (..., n_t, n_x n_y) on `flat` (x-major:
    point (i, k) is p = i n_y + k); `to_field` and `from_field` convert between the two.
    """

    t: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    flat: Grid = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name, min_length in (("t", 1), ("x", 2), ("y", 2)):
            values = as_float64_vector(getattr(self, name), name, min_length=1)
            if values.numel() < min_length:
                raise UsageError(
                    f"{name}: expected at least {min_length} positions (a one-point space axis "
                    f"has no extent), got {values.numel()}"
                )
            if values.numel() > 1 and not bool((values[1:] > values[:-1]).all()):
                raise UsageError(f"{name}: expected strictly increasing values, got {values}")
            object.__setattr__(self, name, values)
        positions = torch.arange(self.n_x * self.n_y, dtype=torch.float64)
        object.__setattr__(self, "flat", Grid(self.t, positions))

    @classmethod
    def uniform(
        cls,
        t_range: tuple[float, float],
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        n_t: int,
        n_x: int,
        n_y: int,
    ) -> Grid2d:
        """Uniform axes with their endpoints: n_t times, n_x and n_y positions over the ranges."""
        axes = []
        for count, name, bounds in (
            (n_t, "n_t", t_range),
            (n_x, "n_x", x_range),
            (n_y, "n_y", y_range),
        ):
            check_positive_int(count, name)
            low, high = float(bounds[0]), float(bounds[1])
            axes.append(torch.linspace(low, high, count, dtype=torch.float64))
        return cls(*axes)

    @property
    def n_t(self) -> int:
        return self.t.numel()

    @property
    def n_x(self) -> int:
        return self.x.numel()

    @property
    def n_y(self) -> int:
        return self.y.numel()

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_t, n_x, n_y)."""
        return (self.n_t, self.n_x, self.n_y)

    @property
    def size(self) -> int:
        """N = n_t n_x n_y."""
        return self.n_t * self.n_x * self.n_y

    def index(self, i: int, k: int) -> int:
        """Flat position p = i n_y + k of the point (x_i, y_k) within a time slice."""
        return i * self.n_y + k

    def mesh(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T, X, Y), each (n_t, n_x, n_y)."""
        return torch.meshgrid(self.t, self.x, self.y, indexing="ij")

    def trapezoid_weights(self) -> torch.Tensor:
        """(n_x, n_y) product trapezoid weights w_x[i] w_y[k]: the integral over the rectangle is
        sum_ik w_ik u_ik + O(dx^2 + dy^2) (any increasing axes)."""
        return torch.outer(trapezoid_weights(self.x), trapezoid_weights(self.y))

    def to_field(self, values) -> torch.Tensor:
        """(..., n_t, n_x n_y) values on `flat` -> (..., n_t, n_x, n_y) (a view where possible)."""
        values = as_float64_tensor(values, "values")
        if values.dim() < 2 or tuple(values.shape[-2:]) != (self.n_t, self.n_x * self.n_y):
            raise UsageError(
                f"values: expected shape (..., {self.n_t}, {self.n_x * self.n_y}) "
                f"(n_t, n_x n_y), got {describe(values)}"
            )
        return values.reshape(*values.shape[:-1], self.n_x, self.n_y)

    def from_field(self, field) -> torch.Tensor:
        """(..., n_t, n_x, n_y) -> (..., n_t, n_x n_y) on `flat`, x-major (p = i n_y + k)."""
        field = as_float64_tensor(field, "field")
        if field.dim() < 3 or tuple(field.shape[-3:]) != self.shape:
            raise UsageError(
                f"field: expected shape (..., {self.n_t}, {self.n_x}, {self.n_y}) "
                f"(n_t, n_x, n_y), got {describe(field)}"
            )
        return field.reshape(*field.shape[:-2], self.n_x * self.n_y)

    def __repr__(self) -> str:
        return (
            f"Grid2d(n_t={self.n_t}, n_x={self.n_x}, n_y={self.n_y}, "
            f"t=[{float(self.t[0]):g}, {float(self.t[-1]):g}], "
            f"x=[{float(self.x[0]):g}, {float(self.x[-1]):g}], "
            f"y=[{float(self.y[0]):g}, {float(self.y[-1]):g}])"
        )


def check_grid2d(grid2d, name: str = "grid2d") -> Grid2d:
    """Raise unless `grid2d` is a Grid2d."""
    if not isinstance(grid2d, Grid2d):
        raise UsageError(f"{name}: expected a probcons.grid2d.Grid2d, got {type(grid2d).__name__}")
    return grid2d


__all__ = ["Grid2d", "check_grid2d"]
