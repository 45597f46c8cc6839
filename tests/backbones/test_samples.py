"""Gaussian predictions from draws, moments and xarray, against NumPy's moments."""

import numpy as np
import pytest
import torch
import xarray as xr

from probcons import (
    GaussianPrediction,
    conservation_constraint,
    from_dataarray,
    from_moments,
    from_samples,
)
from probcons.backbones.samples import VARIANCE_FLOOR
from probcons.covariance import BlockCovariance, DenseCovariance, LowRankCovariance
from probcons.errors import UsageError
from probcons.grid import Grid


def draws_on(grid, count=12, seed=0):
    rng = np.random.default_rng(seed)
    tt, xx = (v.numpy() for v in grid.mesh())
    base = np.sin(np.pi * xx) * np.exp(-tt)
    amplitudes = rng.standard_normal((count, 3))
    modes = np.stack([np.cos(k * np.pi * xx) * (1 + tt) for k in range(3)])
    return (
        base
        + np.einsum("sk,kjx->sjx", amplitudes, modes)
        + 0.01 * rng.standard_normal((count, *grid.shape))
    )


def test_full_rank_moments_equal_numpy():
    grid = Grid.uniform((0, 1), (0, 1), 4, 6)
    draws = draws_on(grid)
    prediction = from_samples(draws, grid)
    flat = draws.reshape(len(draws), -1)
    assert isinstance(prediction.covariance, LowRankCovariance)
    assert prediction.covariance.rank == len(draws) - 1  # centred draws span S - 1 directions
    np.testing.assert_allclose(prediction.mean.numpy(), draws.mean(axis=0), rtol=0, atol=1e-14)
    expected = np.cov(flat, rowvar=False)
    floor = VARIANCE_FLOOR * expected.diagonal().max()
    actual = prediction.covariance.to_dense().numpy()
    np.testing.assert_allclose(actual, expected + floor * np.eye(grid.size), rtol=0, atol=1e-12)


def test_truncated_rank_keeps_the_marginal_variances():
    grid = Grid.uniform((0, 1), (0, 1), 4, 6)
    draws = draws_on(grid, count=20)
    prediction = from_samples(draws, grid, rank=3)
    flat = draws.reshape(20, -1)
    assert prediction.covariance.rank == 3
    np.testing.assert_allclose(
        prediction.variance.numpy().reshape(-1), flat.var(axis=0, ddof=1), rtol=1e-10
    )
    # the kept part is the best rank-3 approximation of the sample covariance (Eckart-Young)
    centred = (flat - flat.mean(axis=0)) / np.sqrt(19)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    best = (vt[:3].T * s[:3] ** 2) @ vt[:3]
    factor = prediction.covariance.factor.numpy()
    np.testing.assert_allclose(factor @ factor.T, best, rtol=0, atol=1e-12)


def test_conditioning_a_sample_prediction_is_exact():
    grid = Grid.uniform((0, 1), (0, 1), 5, 30)
    prediction = from_samples(draws_on(grid, count=8), grid, variance_floor=1e-6)
    constraint = conservation_constraint(grid, torch.ones(5))
    posterior = prediction.condition(constraint)
    assert constraint.residual(posterior.mean).abs().max() < 1e-12


def test_from_moments_builds_each_structure():
    grid = Grid.uniform((0, 1), (0, 1), 2, 3)
    mean = torch.zeros(6, dtype=torch.float64)
    blocks = torch.eye(3, dtype=torch.float64).expand(2, 3, 3) * 2
    assert isinstance(from_moments(mean, blocks, grid).covariance, BlockCovariance)
    assert isinstance(
        from_moments(mean, torch.eye(6, dtype=torch.float64), grid).covariance, DenseCovariance
    )
    prediction = from_moments(mean.reshape(2, 3), torch.full((6,), 3.0), grid)
    assert isinstance(prediction, GaussianPrediction)
    assert torch.equal(prediction.variance, torch.full((2, 3), 3.0, dtype=torch.float64))
    with pytest.raises(UsageError, match=r"covariance: expected blocks of shape \(2, 3, 3\)"):
        from_moments(mean, torch.ones(3, 3, 3), grid)


@pytest.mark.parametrize("layout", ["sample", "draw-last", "chain-draw"])
def test_from_dataarray_matches_from_samples(layout):
    grid = Grid.uniform((0, 1), (0, 2), 3, 5)
    draws = draws_on(grid, count=6)
    coords = {"t": grid.t.numpy(), "x": grid.x.numpy()}
    if layout == "sample":
        data = xr.DataArray(draws, dims=("sample", "t", "x"), coords=coords)
    elif layout == "draw-last":
        data = xr.DataArray(draws.transpose(1, 2, 0), dims=("t", "x", "draw"), coords=coords)
    else:
        data = xr.DataArray(
            draws.reshape(2, 3, 3, 5), dims=("chain", "draw", "t", "x"), coords=coords
        )
    prediction = from_dataarray(data)
    expected = from_samples(draws, grid)
    assert torch.equal(prediction.grid.x, grid.x) and torch.equal(prediction.grid.t, grid.t)
    assert torch.allclose(prediction.mean, expected.mean, rtol=0, atol=1e-14)
    assert torch.allclose(prediction.variance, expected.variance, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("draws", "options", "message"),
    [
        (np.zeros((1, 2, 3)), {}, r"draws: expected shape \(S, 2, 3\) or \(S, 6\) with S >= 2"),
        (np.zeros((4, 3, 3)), {}, r"draws: expected shape"),
        (np.ones((4, 2, 3)), {"rank": 0}, r"rank: expected None or an integer in \[1, 4\], got 0"),
        (np.ones((4, 2, 3)), {"variance_floor": -1.0}, "variance_floor: expected None or a number"),
    ],
)
def test_bad_draws_are_usage_errors(draws, options, message):
    with pytest.raises(UsageError, match=message):
        from_samples(draws, Grid.uniform((0, 1), (0, 1), 2, 3), **options)


def test_bad_dataarray_dims_are_named():
    data = xr.DataArray(np.zeros((2, 3, 4)), dims=("member", "t", "x"))
    with pytest.raises(UsageError, match=r"data: expected dims \(sample or draw, t, x\)"):
        from_dataarray(data)
    data = xr.DataArray(np.zeros((2, 3, 4)), dims=("sample", "t", "x"))
    with pytest.raises(UsageError, match="grid: expected a Grid, or t and x coordinates"):
        from_dataarray(data)


def test_default_floor_keeps_exact_rows_exact():
    """24 draws on a 6 x 17 grid, one mass row per slice: with the default floor the
    conditioned mean and fresh draws hold the rows to round-off (the 1e-12 floor left 3e-12)."""
    from probcons import conservation_constraint

    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 6, 17)
    t, x = grid.mesh()
    profile = torch.sin(3 * x + t)
    generator = torch.Generator().manual_seed(0)
    draws = profile + 0.1 * torch.randn(24, *grid.shape, generator=generator, dtype=torch.float64)
    rows = conservation_constraint(grid, torch.trapezoid(profile, grid.x, dim=1))
    posterior = from_samples(draws, grid).condition(rows)
    assert rows.residual(posterior.mean).abs().max() < 1e-14
    fresh = posterior.sample(100, torch.Generator().manual_seed(1))
    assert rows.residual(fresh).abs().max() < 1e-14
