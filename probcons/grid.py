"""Space-time grids: point values u[j, i] = u(t_j, x_i), flattened t-major (index j * n_x + i)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from probcons.errors import UsageError
from probcons.validation import as_float64_vector, check_positive_int


@dataclass(frozen=True, eq=False)
class Grid:
    """A tensor-product grid of times `t` (n_t,) and positions `x` (n_x,), both increasing.

    One time is a snapshot (n_t = 1: the form of `dense_constraint` and of index grids). One
    position is rejected unless `allow_single_point=True`: a one-point x-axis has no extent, so
    its quadrature weights are 0 and every mass, boundary or derivative row on it is empty.
    """

    t: torch.Tensor
    x: torch.Tensor
    allow_single_point: bool = field(default=False, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        for name in ("t", "x"):
            values = as_float64_vector(getattr(self, name), name, min_length=1)
            if values.numel() > 1 and not bool((values[1:] > values[:-1]).all()):
                raise UsageError(f"{name}: expected strictly increasing values, got {values}")
            object.__setattr__(self, name, values)
        if self.x.numel() == 1 and self.allow_single_point is not True:
            raise UsageError(
                f"x: expected at least 2 positions (a one-point axis has no extent: its "
                f"quadrature weight is 0), got 1 ({float(self.x[0]):g}); pass "
                "allow_single_point=True for an index grid"
            )

    @classmethod
    def index(cls, n_t: int, n_x: int) -> Grid:
        """An index grid t = 0..n_t-1, x = 0..n_x-1 (labels, not coordinates; any n >= 1)."""
        check_positive_int(n_t, "n_t")
        check_positive_int(n_x, "n_x")
        t = torch.arange(n_t, dtype=torch.float64)
        return cls(t, torch.arange(n_x, dtype=torch.float64), allow_single_point=True)

    def flattened(self) -> Grid:
        """The index grid of one slice over all N = n_t n_x points (t-major order kept)."""
        return Grid.index(1, self.size)

    @classmethod
    def uniform(
        cls,
        t_range: tuple[float, float],
        x_range: tuple[float, float],
        n_t: int,
        n_x: int,
    ) -> Grid:
        """Uniform grid with endpoints included: n_t times over t_range, n_x points over x_range."""
        check_positive_int(n_t, "n_t")
        check_positive_int(n_x, "n_x")
        t = torch.linspace(float(t_range[0]), float(t_range[1]), n_t, dtype=torch.float64)
        x = torch.linspace(float(x_range[0]), float(x_range[1]), n_x, dtype=torch.float64)
        return cls(t, x)

    @property
    def n_t(self) -> int:
        return self.t.numel()

    @property
    def n_x(self) -> int:
        return self.x.numel()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_t, self.n_x)

    @property
    def size(self) -> int:
        return self.n_t * self.n_x

    def mesh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, X), each (n_t, n_x)."""
        return torch.meshgrid(self.t, self.x, indexing="ij")

    def points(self) -> torch.Tensor:
        """(N, 2) array of [t, x] rows in t-major order."""
        tt, xx = self.mesh()
        return torch.stack([tt.reshape(-1), xx.reshape(-1)], dim=-1)

    def trapezoid_weights(self) -> torch.Tensor:
        """(n_x,) trapezoid weights of x (`trapezoid_weights`)."""
        return trapezoid_weights(self.x)

    def time_index(self, time: float) -> int:
        """Index of the grid time nearest to `time`."""
        return int(torch.argmin((self.t - float(time)).abs()))

    def __repr__(self) -> str:
        return (
            f"Grid(n_t={self.n_t}, n_x={self.n_x}, t=[{float(self.t[0]):g}, {float(self.t[-1]):g}],"
            f" x=[{float(self.x[0]):g}, {float(self.x[-1]):g}])"
        )


def trapezoid_weights(axis: torch.Tensor) -> torch.Tensor:
    """(n,) trapezoid weights of an increasing axis: w_i = (v_{i+1} - v_{i-1}) / 2, halves at the
    two ends (zero for a single point)."""
    if axis.numel() == 1:
        return torch.zeros(1, dtype=torch.float64)
    weights = torch.zeros_like(axis)
    weights[1:-1] = (axis[2:] - axis[:-2]) / 2
    weights[0] = (axis[1] - axis[0]) / 2
    weights[-1] = (axis[-1] - axis[-2]) / 2
    return weights


def check_grid(grid, name: str = "grid") -> Grid:
    """Raise unless `grid` is a Grid."""
    if not isinstance(grid, Grid):
        raise UsageError(f"{name}: expected a probcons.grid.Grid, got {type(grid).__name__}")
    return grid
