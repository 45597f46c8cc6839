"""A report on a user's own Pyro model: Predictive samples -> InferenceData -> report."""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive

from probcons.grid import Grid
from probcons.report import (
    MethodData,
    summarize_method,
    to_inference_data,
    write_inference_data,
    write_report,
)

NOISE = 0.05


def decaying_wave(t: torch.Tensor, x: torch.Tensor) -> None:
    """A plain Pyro model: uncertain amplitude and rate, a latent field u on the (t, x) grid."""
    amplitude = pyro.sample("amplitude", dist.Normal(1.0, 0.1))
    rate = pyro.sample("rate", dist.LogNormal(0.0, 0.2))
    mean = amplitude * torch.exp(-rate * t[:, None]) * torch.sin(x[None, :])
    pyro.sample("u", dist.Normal(mean, NOISE).to_event(2))


@pytest.fixture
def grid():
    return Grid.uniform((0.0, 1.0), (0.0, 2 * math.pi), 9, 17)


@pytest.fixture
def samples(grid):
    pyro.set_rng_seed(0)
    return Predictive(decaying_wave, num_samples=200)(grid.t, grid.x)


def truth_of(grid: Grid) -> torch.Tensor:
    tt, xx = grid.mesh()
    return torch.exp(-tt) * torch.sin(xx)


def test_report_on_a_user_pyro_model_end_to_end(tmp_path, grid, samples):
    idata = to_inference_data(samples, truth_of(grid), grid, method="wave", problem="toy")
    assert idata.posterior_predictive["u"].dims == ("chain", "draw", "function", "t", "x")
    assert idata.posterior_predictive["u"].dtype == np.float32
    path = write_inference_data(idata, tmp_path / "toy-run")
    assert path == tmp_path / "toy-run" / "wave.nc"
    with MethodData(path) as data:
        assert (data.n_functions, data.n_draws, data.grid.shape) == (1, 200, grid.shape)
        torch.testing.assert_close(data.draws(0), samples["u"].to(torch.float32).double())
    written = write_report([tmp_path / "toy-run"])
    markdown = written["markdown"].read_text()
    assert "| wave |" in markdown and "problem: toy" in markdown
    assert "shock" not in written and written["html"].stat().st_size > 10_000


def test_from_pyro_inference_data_and_several_functions(grid, samples):
    from_pyro = az.from_pyro(posterior_predictive=samples)
    direct = to_inference_data(samples, truth_of(grid), grid)
    converted = to_inference_data(from_pyro, truth_of(grid), grid)
    np.testing.assert_array_equal(
        converted.posterior_predictive["u"].values, direct.posterior_predictive["u"].values
    )
    # Two functions, flattened draws (n_draws, F * n_t * n_x), t-major within each function.
    stacked = torch.stack([samples["u"], 2 * samples["u"]], dim=1).reshape(200, -1)
    truth = torch.stack([truth_of(grid), 2 * truth_of(grid)])
    two = to_inference_data(
        {"field": stacked}, truth, grid, parameter=[1.0, 2.0], mass=torch.zeros(2, grid.n_t)
    )
    values = two.posterior_predictive["u"].values
    assert values.shape == (1, 200, 2, *grid.shape)
    np.testing.assert_allclose(values[0, :, 1], 2 * values[0, :, 0], rtol=1e-6)
    assert set(two.constant_data.data_vars) == {"parameter", "mass"}


def test_to_inference_data_validates_arguments(grid, samples):
    truth = truth_of(grid)
    with pytest.raises(ValueError, match="variable"):
        to_inference_data({"a": samples["u"], "b": samples["u"]}, truth, grid)
    with pytest.raises(ValueError, match="variable"):
        to_inference_data(samples, truth, grid, variable="v")
    with pytest.raises(ValueError, match="truth"):
        to_inference_data(samples, truth[:-1], grid)
    with pytest.raises(ValueError, match="grid"):
        to_inference_data(samples, truth, (grid.t, grid.x))
    with pytest.raises(ValueError, match="samples"):
        to_inference_data(samples["u"][:, :-1], truth, grid)
    with pytest.raises(ValueError, match="mean, variance"):
        to_inference_data(samples, truth, grid, mean=truth)
    with pytest.raises(ValueError, match="method"):
        to_inference_data(samples, truth, grid, method="a/b")


def test_user_front_threshold_gives_shock_positions(tmp_path, grid):
    """A field with a front at x = s, s ~ N(3, 0.2^2): posterior fronts centre on the truth."""
    pyro.set_rng_seed(1)
    front = 3.0 + 0.2 * torch.randn(300, 1, 1, dtype=torch.float64)
    tt, xx = grid.mesh()
    draws = (xx < front).double() + 0.01 * torch.randn(300, *grid.shape, dtype=torch.float64)
    truth = (xx < 3.0).double()
    idata = to_inference_data(draws, truth, grid, method="step", front_threshold=0.5)
    path = write_inference_data(idata, tmp_path / "step-run")
    with MethodData(path) as data:
        summary = summarize_method(data, "step-run")
    values, reference = summary.shock.pooled()
    spacing = float(grid.x[1] - grid.x[0])
    assert abs(reference - 3.0) < spacing and values.shape == (300,)
    assert abs(np.median(values) - reference) < 2 * spacing


def test_draws_read_in_chunk_aligned_blocks(tmp_path, grid):
    """A file chunked across 3 functions: every function's draws come back unchanged."""
    generator = torch.Generator().manual_seed(2)
    draws = torch.randn(12, 5 * grid.size, generator=generator)
    truth = torch.zeros(5, *grid.shape)
    idata = to_inference_data(draws, truth, grid, method="chunked")
    path = tmp_path / "chunked.nc"
    encoding = {"u": {"zlib": True, "chunksizes": (1, 4, 3, 5, 5)}}
    idata.posterior_predictive.to_netcdf(
        path, group="posterior_predictive", engine="h5netcdf", encoding=encoding
    )
    idata.observed_data.to_netcdf(path, group="observed_data", engine="h5netcdf", mode="a")
    expected = idata.posterior_predictive["u"].values[0]
    with MethodData(path) as data:
        assert data.block_size == 3
        for f in (0, 4, 1, 3, 2):
            np.testing.assert_array_equal(data.draws(f).numpy(), expected[:, f])
