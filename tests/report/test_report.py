"""Calibration report: metrics against independent formulas, calibration flags, documents."""

from __future__ import annotations

import json
import math
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats

from probcons.problems import get_problem
from probcons.report import (
    MethodData,
    calibration_flag,
    pit_uniformity,
    randomized_pit,
    summarize_method,
)

SIGMA = 0.05  # predictive standard deviation of the synthetic models


def make_run(
    directory: Path,
    problem_name: str = "stefan",
    methods: dict[str, float] | None = None,
    *,
    n_functions: int = 4,
    n_draws: int = 100,
    n_t: int = 11,
    n_x: int = 21,
    constant_data: bool = True,
    seed: int = 0,
    attrs: dict | None = None,
) -> Path:
    """A run directory in the `probcons run` schema, written here with xarray/ArviZ directly.

    Model of each method: mean m = u + SIGMA z, draws m + (SIGMA / ratio) eps with z, eps
    standard normal and independent; ratio 1 is calibrated, ratio > 1 over-confident.
    """
    methods = methods or {"unconstrained": 1.0, "hardc": 1.0, "probconserv": 1.0}
    problem = get_problem(problem_name)
    grid = problem.grid(n_t, n_x)
    parameter = float(problem.test_values[-1])
    tt, xx = grid.mesh()
    truth = problem.solution(tt, xx, parameter).expand(n_functions, n_t, n_x).numpy()
    mass = problem.mass(grid.t, parameter).expand(n_functions, n_t).numpy()
    generator = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    coords = {"function": np.arange(n_functions), "t": grid.t.numpy(), "x": grid.x.numpy()}
    field = ("function", "t", "x")
    for method, ratio in methods.items():
        root = {
            "problem": problem_name,
            "backbone": "synthetic",
            "method": method,
            "sigma_G": 0.0,
            "parameter_name": problem.parameter_name,
            "time_of_interest": problem.time_of_interest,
            **(attrs or {}),
        }
        mean = truth + SIGMA * generator.standard_normal(truth.shape)
        spread = SIGMA / ratio
        draws = mean[None] + spread * generator.standard_normal((n_draws, *truth.shape))
        groups = {
            "posterior_predictive": xr.Dataset(
                {"u": (("chain", "draw", *field), draws[None].astype(np.float32))},
                coords={"chain": [0], "draw": np.arange(n_draws), **coords},
                attrs=root,
            ),
            "observed_data": xr.Dataset({"u": (field, truth)}, coords=coords, attrs=root),
        }
        if constant_data:
            groups["constant_data"] = xr.Dataset(
                {
                    "parameter": (("function",), np.full(n_functions, parameter)),
                    "mass": (("function", "t"), mass),
                    "u_mean": (field, mean),
                    "u_variance": (field, np.full(truth.shape, spread**2)),
                },
                coords=coords,
                attrs=root,
            )
        az.InferenceData(**groups).to_netcdf(str(directory / f"{method}.nc"), engine="h5netcdf")
    (directory / "metrics.json").write_text(json.dumps({method: {} for method in methods}))
    return directory


def summarize(path: Path, **options):
    with MethodData(path) as data:
        return summarize_method(data, path.parent.name, **options)


def energy_crps(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Independent ensemble CRPS: mean |X - y| - 1/(2 D^2) sum_ij |X_i - X_j| (draws first)."""
    first = np.abs(draws - truth[None]).mean(axis=0)
    pairwise = np.abs(draws[:, None] - draws[None, :]).sum(axis=(0, 1))
    return first - pairwise / (2 * draws.shape[0] ** 2)


def sorted_crps(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The same score in O(D log D): mean |X - y| - 1/D^2 sum_i (2 i - D - 1) X_(i), i = 1..D."""
    ordered = np.sort(draws, axis=0)
    d = draws.shape[0]
    weights = (2 * np.arange(1, d + 1) - d - 1).reshape(-1, *([1] * truth.ndim))
    return np.abs(draws - truth[None]).mean(axis=0) - (weights * ordered).sum(axis=0) / d**2


def test_crps_equals_numpy_ensemble_formula_exactly(tmp_path):
    run = make_run(tmp_path / "run", methods={"probconserv": 1.0}, n_functions=3, n_draws=40)
    summary = summarize(run / "probconserv.nc")
    with MethodData(run / "probconserv.nc") as data:
        for f in range(data.n_functions):
            draws, truth = data.draws(f).numpy(), data.truth(f).numpy()
            expected = energy_crps(draws, truth)
            np.testing.assert_allclose(sorted_crps(draws, truth), expected, rtol=1e-10)
            assert summary.per_function["crps"][f] == pytest.approx(expected.mean(), rel=1e-10)
            np.testing.assert_allclose(summary.crps_time[f], expected.mean(axis=-1), rtol=1e-10)


def test_crps_equals_closed_form_gaussian_within_sampling_error(tmp_path):
    n_draws = 400
    run = make_run(tmp_path / "run", methods={"gaussian": 1.0}, n_functions=2, n_draws=n_draws)
    summary = summarize(run / "gaussian.nc")
    with MethodData(run / "gaussian.nc") as data:
        differences = []
        for f in range(data.n_functions):
            mean, variance = data.moments(f)
            z = (data.truth(f) - mean) / variance.sqrt()
            closed = variance.sqrt() * (
                z * (2 * torch.special.ndtr(z) - 1)
                + 2 * torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
                - 1 / math.sqrt(math.pi)
            )
            ensemble = torch.as_tensor(sorted_crps(data.draws(f).numpy(), data.truth(f).numpy()))
            differences.append((ensemble - closed).reshape(-1))
            assert summary.per_function["crps"][f] == pytest.approx(float(ensemble.mean()))
    difference = torch.cat(differences)
    # The ensemble (energy) estimator exceeds the CRPS by E|X - X'| / (2 D) = sigma / (sqrt(pi) D).
    bias = SIGMA / (math.sqrt(math.pi) * n_draws)
    standard_error = float(difference.std() / math.sqrt(difference.numel()))
    assert abs(float(difference.mean()) - bias) < 4 * standard_error
    assert standard_error < 0.05 * float(summary.per_function["crps"].mean())


def test_coverage_calibrated_within_binomial_error_and_over_confident_flagged(tmp_path):
    n_draws = 100
    run = make_run(
        tmp_path / "run",
        methods={"calibrated": 1.0, "overconfident": 2.0},
        n_functions=4,
        n_t=21,
        n_x=41,
        n_draws=n_draws,
    )
    calibrated = summarize(run / "calibrated.nc")
    levels, coverage, errors = calibrated.reliability_curve()
    n = calibrated.n_points
    binomial = np.sqrt(levels * (1 - levels) / n)
    assert np.all(np.abs(coverage - levels) < 3 * binomial)
    assert np.all(errors >= binomial)
    assert calibrated.calibration() == "calibrated"
    # Sample-quantile intervals of D draws cover L (D - 1) / (D + 1) in expectation.
    finite_ensemble = 0.9 * (n_draws - 1) / (n_draws + 1)
    coverage_90 = calibrated.metric("coverage_90")[0]
    assert abs(coverage_90 - finite_ensemble) < 3 * math.sqrt(0.9 * 0.1 / n)

    over = summarize(run / "overconfident.nc")
    _, over_coverage, _ = over.reliability_curve()
    assert over_coverage[-1] < 0.9 - 10 * binomial[-1]
    assert over.calibration() == "over-confident"
    assert over.metric("width_90")[0] < 0.6 * calibrated.metric("width_90")[0]


def test_calibration_flag_thresholds():
    assert calibration_flag(0.85, 0.9, 0.01) == "over-confident"
    assert calibration_flag(0.88, 0.9, 0.01) == "calibrated"
    assert calibration_flag(0.95, 0.9, 0.01) == "under-confident"
    assert calibration_flag(float("nan"), 0.9, 0.01) == "undetermined"


def test_pit_of_calibrated_model_passes_uniformity_band(tmp_path):
    run = make_run(
        tmp_path / "run", methods={"calibrated": 1.0, "overconfident": 2.0}, n_t=21, n_x=41
    )
    calibrated = summarize(run / "calibrated.nc")
    band = calibrated.pit_uniformity()
    assert band.n_values >= 1000 and band.inside
    assert stats.chisquare(calibrated.pit_histogram).pvalue > 1e-3
    assert not summarize(run / "overconfident.nc").pit_uniformity().inside


def test_randomized_pit_is_uniform_for_exchangeable_draws_and_ties():
    generator = torch.Generator().manual_seed(1)
    draws = torch.randn(9, 20000, generator=generator, dtype=torch.float64)
    truth = torch.randn(20000, generator=generator, dtype=torch.float64)
    pit = randomized_pit(draws, truth, generator)
    assert stats.kstest(pit.numpy(), "uniform").pvalue > 1e-3
    # A point mass shared by draws and truth: the PIT spreads uniformly over (0, 1).
    tied = randomized_pit(torch.zeros(9, 20000, dtype=torch.float64), torch.zeros(20000))
    assert stats.kstest(tied.numpy(), "uniform").pvalue > 1e-3
    assert pit_uniformity(pit[:500]).inside


def test_shock_positions_against_true_front(tmp_path):
    run = make_run(tmp_path / "run", methods={"probconserv": 4.0}, n_t=21, n_x=81)
    summary = summarize(run / "probconserv.nc")
    problem = get_problem("stefan")
    time = float(summary.t[np.argmin(np.abs(summary.t - problem.time_of_interest))])
    assert summary.shock is not None and summary.shock.common_truth
    values, truth = summary.shock.pooled()
    assert truth == pytest.approx(problem.front_position(time, problem.test_values[-1]))
    assert values.shape == (summary.n_functions * summary.n_draws,)
    assert abs(np.median(values) - truth) < 3 * (summary.x[1] - summary.x[0])
