"""Linear-Gaussian constraints on a (t, x) grid, structured per time slice.

Row k of time slice j reads  sum_i W[j, k, i] u[j, i] = b[j, k] + eps[j, k],
eps ~ N(0, noise_std[j, k]^2). So G is block-diagonal across time: W is (n_t, r, n_x),
never a dense (m, N) matrix (m = n_t r rows, N = n_t n_x unknowns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from probcons.errors import UsageError
from probcons.validation import as_float64_tensor, check_shape, describe

LARGEST_SQUARABLE = math.sqrt(torch.finfo(torch.float64).max)
"""Largest |value| whose square is finite in float64 (1.3e154): G Sigma G^T and R square the
weights and noise_std."""
FLOAT64_MAX = torch.finfo(torch.float64).max
SMALLEST_SQUARABLE = math.sqrt(torch.finfo(torch.float64).tiny)
"""Smallest nonzero |value| whose square is a normal float64 (1.5e-154); below it R = noise_std^2
is subnormal or zero and S^-1 overflows."""


def _check_squares_in_range(tensor: torch.Tensor, name: str) -> None:
    """Refuse entries whose squares overflow float64, or are nonzero but below its normal
    range, naming `name` (the message would otherwise blame a singular S or a NaN mean)."""
    magnitude = tensor.abs()
    largest = float(magnitude.max()) if magnitude.numel() else 0.0
    if largest > 0 and math.isfinite(largest):
        # the largest sum of squares of a row (weights) or entry (noise_std), without overflow
        scaled = float((magnitude / largest).square().reshape(*tensor.shape[:2], -1).sum(-1).max())
        if largest > LARGEST_SQUARABLE / math.sqrt(scaled):
            raise UsageError(
                f"{name}: expected sums of squares per row <= {FLOAT64_MAX:.3g} (squared in "
                f"G Sigma G^T + R, larger ones overflow float64), got about "
                f"{scaled:.3g} x {largest:.3g}^2 (largest |value| {largest:.3g})"
            )
    tiny = magnitude[(magnitude > 0) & (magnitude < SMALLEST_SQUARABLE)]
    if name == "noise_std" and tiny.numel():
        raise UsageError(
            f"{name}: expected 0 or values >= {SMALLEST_SQUARABLE:.3g} (their squares fall "
            f"below float64's normal range), got {float(tiny.min()):.3g}"
        )


def _broadcast(tensor: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """`tensor` broadcast to `shape` (a copy); a ValueError naming `name` if it cannot be."""
    try:
        return torch.broadcast_to(tensor, shape).clone()
    except RuntimeError:
        raise UsageError(
            f"{name}: expected shape {tuple(shape)} or one that broadcasts to it, "
            f"got {tuple(tensor.shape)}"
        ) from None


@dataclass(frozen=True, eq=False)
class LinearConstraint:
    """G u = b + eps with G block-diagonal over time slices.

    weights: (n_t, r, n_x) rows of G per time slice; values: (n_t, r) right-hand side b;
    noise_std: (n_t, r) slack standard deviation sigma_G (0 = exact); names: r row labels.
    """

    weights: torch.Tensor
    values: torch.Tensor
    noise_std: torch.Tensor
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        weights = as_float64_tensor(self.weights, "weights")
        if weights.dim() != 3:
            raise UsageError(f"weights: expected shape (n_t, r, n_x), got {describe(weights)}")
        n_t, r, _ = weights.shape
        values = as_float64_tensor(self.values, "values")
        if values.dim() == 1 and r == 1:
            values = values[:, None]
        check_shape(values, (n_t, r), "values")
        noise = as_float64_tensor(self.noise_std, "noise_std")
        noise = _broadcast(noise, (n_t, r), "noise_std")
        if bool((noise < 0).any()):
            raise UsageError(f"noise_std: expected values >= 0, got minimum {float(noise.min())}")
        _check_squares_in_range(weights, "weights")
        _check_squares_in_range(noise, "noise_std")
        names = tuple(self.names) or tuple(f"row{k}" for k in range(r))
        if len(names) != r:
            raise UsageError(f"names: expected {r} row names, got {len(names)}")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "noise_std", noise)
        object.__setattr__(self, "names", names)

    @property
    def n_t(self) -> int:
        return self.weights.shape[0]

    @property
    def rows_per_slice(self) -> int:
        return self.weights.shape[1]

    @property
    def n_x(self) -> int:
        return self.weights.shape[2]

    @property
    def num_rows(self) -> int:
        """m = n_t * r."""
        return self.n_t * self.rows_per_slice

    @property
    def is_exact(self) -> bool:
        """True when every row has zero slack (sigma_G = 0)."""
        return bool((self.noise_std == 0).all())

    def apply(self, field: torch.Tensor) -> torch.Tensor:
        """G u for fields (..., n_t, n_x) -> (..., n_t, r)."""
        return torch.einsum("jki,...ji->...jk", self.weights.to(field.dtype), field)

    def apply_transpose(self, rows: torch.Tensor) -> torch.Tensor:
        """G^T y for row values (..., n_t, r) -> (..., n_t, n_x)."""
        return torch.einsum("jki,...jk->...ji", self.weights.to(rows.dtype), rows)

    def residual(self, field: torch.Tensor) -> torch.Tensor:
        """G u - b, (..., n_t, r)."""
        return self.apply(field) - self.values.to(field.dtype)

    def stack(self, *others: LinearConstraint) -> LinearConstraint:
        """Rows of `self` then of each of `others`, per time slice."""
        parts = (self, *others)
        for index, other in enumerate(others):
            if (other.n_t, other.n_x) != (self.n_t, self.n_x):
                raise UsageError(
                    f"others[{index}]: expected a constraint on a grid of shape "
                    f"({self.n_t}, {self.n_x}), got ({other.n_t}, {other.n_x})"
                )
        weights = [part.weights for part in parts]
        if all(w.shape[0] == 1 or w.stride(0) == 0 for w in weights):
            rows = torch.cat([w[0] for w in weights], dim=0)  # the same rows on every slice
            stacked = rows.expand(self.n_t, *rows.shape)
        else:
            stacked = torch.cat(weights, dim=1)
        return LinearConstraint(
            stacked,
            torch.cat([part.values for part in parts], dim=1),
            torch.cat([part.noise_std for part in parts], dim=1),
            tuple(name for part in parts for name in part.names),
        )

    def with_noise(self, noise_std: float) -> LinearConstraint:
        """The same rows with every slack standard deviation set to `noise_std`."""
        return LinearConstraint(
            self.weights,
            self.values,
            torch.tensor(float(noise_std), dtype=torch.float64),
            self.names,
        )

    def to_dense(self) -> torch.Tensor:
        """Dense G, (m, N), rows ordered (slice, row); for small problems and tests."""
        n_t, r, n_x = self.weights.shape
        dense = torch.zeros(n_t, r, n_t, n_x, dtype=torch.float64)
        index = torch.arange(n_t)
        dense[index, :, index, :] = self.weights
        return dense.reshape(n_t * r, n_t * n_x)

    def flattened(self) -> LinearConstraint:
        """The same m rows on the flattened grid (n_t = 1, n_x = N), to stack with rows that mix
        time slices; row k of slice j is named "name[j]". Dense: m N entries."""
        n_t, r, _ = self.weights.shape
        names = tuple(f"{name}[{j}]" for j in range(n_t) for name in self.names)
        return LinearConstraint(
            self.to_dense()[None],
            self.values.reshape(1, -1),
            self.noise_std.reshape(1, -1),
            names,
        )

    def __repr__(self) -> str:
        return (
            f"LinearConstraint(n_t={self.n_t}, rows_per_slice={self.rows_per_slice}, "
            f"n_x={self.n_x}, names={self.names}, exact={self.is_exact})"
        )


def dense_constraint(
    matrix: torch.Tensor, values: torch.Tensor, noise_std: float | torch.Tensor = 0.0
) -> LinearConstraint:
    """A general G (m, n) on a field with a single slice (n_t = 1, r = m)."""
    matrix = as_float64_tensor(matrix, "matrix")
    if matrix.dim() != 2:
        raise UsageError(f"matrix: expected shape (m, n), got {describe(matrix)}")
    values = as_float64_tensor(values, "values").reshape(1, -1)
    noise = as_float64_tensor(noise_std, "noise_std")
    noise = _broadcast(noise, (matrix.shape[0],), "noise_std").reshape(1, -1)
    return LinearConstraint(matrix[None], values, noise)
