"""Gaussian predictions from what a user already has: draws, moments, or an xarray DataArray.

Draws u_s (S, n_t, n_x) give the sample mean and the sample covariance
    Sigma = C C^T,  C = (u_s - mean)^T / sqrt(S - 1)  (N, S),
kept as a LowRankCovariance D + F F^T: F = the leading `rank` singular directions of C (all of
them by default), D = the variance F leaves out (diag(C C^T) - diag(F F^T)), at least a floor.
The floor keeps D > 0 so that exact rows stay solvable by Woodbury in O(N) (with D = 0 a mass
row on a sample covariance is singular as soon as the rows outnumber the draws).
"""

from __future__ import annotations

import math

import torch

from probcons.covariance import (
    BlockCovariance,
    Covariance,
    LowRankCovariance,
    covariance_from_dense_or_structure,
)
from probcons.errors import UsageError
from probcons.grid import Grid, check_grid
from probcons.prediction import GaussianPrediction
from probcons.validation import as_float64_tensor, describe

VARIANCE_FLOOR = 1e-8
"""Default floor of D relative to the largest sample variance (a scale-free jitter). Far below
any ensemble's sampling error, and large enough for exact rows: at 1e-12 the Woodbury solve lost
digits (24 draws on 6 x 17, one mass row per slice: posterior draws off the rows by 2.7e-12, up
to 7e-8 on other fields), at 1e-10 and above they hold to round-off (1e-16)."""
SAMPLE_DIMS = ("sample", "draw")
"""Names of the draw dimension accepted by `from_dataarray` (with "chain" stacked in)."""


def from_samples(
    draws, grid: Grid, rank: int | None = None, variance_floor: float | None = None
) -> GaussianPrediction:
    """N(sample mean, low-rank sample covariance) from draws (S, n_t, n_x) or (S, N), S >= 2.

    rank: columns of F kept by SVD (default: every nonzero singular value, at most S - 1);
    variance_floor: the least entry of D (default VARIANCE_FLOOR times the largest sample
    variance). Marginal variances equal the sample variances wherever they exceed the floor.
    """
    check_grid(grid)
    values = as_float64_tensor(draws, "draws")
    if values.dim() not in (2, 3) or values.shape[0] < 2 or values[0].numel() != grid.size:
        raise UsageError(
            f"draws: expected shape (S, {grid.n_t}, {grid.n_x}) or (S, {grid.size}) with S >= 2, "
            f"got {describe(values)}"
        )
    count = values.shape[0]
    flat = values.reshape(count, grid.size)
    mean = flat.mean(dim=0)
    centred = (flat - mean) / math.sqrt(count - 1)  # C^T, (S, N)
    variance = centred.square().sum(dim=0)  # the sample variances, diag(C C^T)
    _, singular, directions = torch.linalg.svd(centred, full_matrices=False)  # C^T = U s V^T
    nonzero = int((singular > singular[0] * count * torch.finfo(torch.float64).eps).sum())
    if rank is None:
        rank = nonzero
    elif isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= count:
        raise UsageError(f"rank: expected None or an integer in [1, {count}], got {rank!r}")
    rank = min(rank, nonzero) if nonzero else 1
    factor = directions[:rank].T * singular[:rank]  # F = V_r s_r, (N, rank)
    floor = _floor(variance_floor, variance)
    diagonal = (variance - factor.square().sum(dim=1)).clamp_(min=floor)
    return GaussianPrediction(mean.reshape(grid.shape), LowRankCovariance(diagonal, factor), grid)


def _floor(variance_floor, variance: torch.Tensor) -> float:
    if variance_floor is None:
        return VARIANCE_FLOOR * float(variance.max())
    if isinstance(variance_floor, bool) or not isinstance(variance_floor, int | float):
        raise UsageError(f"variance_floor: expected None or a number >= 0, got {variance_floor!r}")
    if not 0 <= variance_floor < math.inf:
        raise UsageError(f"variance_floor: expected None or a number >= 0, got {variance_floor!r}")
    return float(variance_floor)


def from_moments(mean, covariance, grid: Grid) -> GaussianPrediction:
    """N(mean, covariance) on `grid`: mean (n_t, n_x) or (N,); covariance a Covariance, a
    variance (N,) (diagonal), a matrix (N, N) (dense) or blocks (n_t, n_x, n_x) (independent
    time slices)."""
    check_grid(grid)
    if not isinstance(covariance, Covariance):
        tensor = as_float64_tensor(covariance, "covariance")
        if tensor.dim() == 3:
            if tuple(tensor.shape) != (grid.n_t, grid.n_x, grid.n_x):
                raise UsageError(
                    f"covariance: expected blocks of shape ({grid.n_t}, {grid.n_x}, {grid.n_x}), "
                    f"got {describe(tensor)}"
                )
            covariance = BlockCovariance(tensor)
        else:
            covariance = covariance_from_dense_or_structure(tensor)
    return GaussianPrediction(mean, covariance, grid)


def from_dataarray(
    data, grid: Grid | None = None, rank: int | None = None, variance_floor: float | None = None
) -> GaussianPrediction:
    """`from_samples` on an xarray DataArray with dims (sample or draw, t, x), in any order; a
    "chain" dim is stacked with "draw". The grid is read from the t and x coordinates unless
    given."""
    dims = tuple(getattr(data, "dims", ()))
    if not dims or not hasattr(data, "transpose"):
        raise UsageError(f"data: expected an xarray DataArray, got {type(data).__name__}")
    draw = [name for name in SAMPLE_DIMS if name in dims]
    expected = {"t", "x", "chain"} if "chain" in dims else {"t", "x"}
    if len(draw) != 1 or set(dims) - {draw[0]} != expected:
        raise UsageError(
            f"data: expected dims (sample or draw, t, x), optionally with chain, got {dims}"
        )
    if "chain" in dims:
        data = data.stack(__draws__=("chain", draw[0]))
        draw = ["__draws__"]
    values = data.transpose(draw[0], "t", "x").values
    if grid is None:
        if "t" not in data.coords or "x" not in data.coords:
            raise UsageError("grid: expected a Grid, or t and x coordinates on data, got neither")
        grid = Grid(data.coords["t"].values, data.coords["x"].values)
    return from_samples(values, grid, rank, variance_floor)


__all__ = ["VARIANCE_FLOOR", "from_dataarray", "from_moments", "from_samples"]
