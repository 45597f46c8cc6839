"""The two metric protocols of `probcons.metrics`: "probcons" (whole grid, absolute CE) and
"paper" (the ProbConserv reference code's MSE, LL and signed CE at t*), checked against closed
forms and against the reference's formulas written out independently here."""

import json
import math

import numpy as np
import pytest
import torch

from probcons import metrics
from probcons.constraints import conservation_constraint
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.problems import get_problem
from probcons.runner import RunSettings, run, score_function


def _fields(seed: int = 0, n_t: int = 7, n_x: int = 9):
    generator = torch.Generator().manual_seed(seed)
    grid = Grid.uniform((0.0, 1.0), (0.0, 2.0), n_t=n_t, n_x=n_x)
    shape = grid.shape
    truth = torch.randn(shape, generator=generator, dtype=torch.float64)
    mean = truth + 0.1 * torch.randn(shape, generator=generator, dtype=torch.float64)
    variance = 0.01 + torch.rand(shape, generator=generator, dtype=torch.float64)
    return grid, mean, variance, truth


def _reference_at_t(mean_t, scale_t, truth_t, x, true_mass):
    """The reference code's analyze.py at one function and time, in NumPy: MSE over x, the
    log-density written with the scale, and (mean(u[1:]) + mean(u[:-1])) L / 2 - U."""
    mean_t, scale_t, truth_t, x = (
        np.asarray(v, dtype=np.float64) for v in (mean_t, scale_t, truth_t, x)
    )
    error = mean_t - truth_t
    loglik = -0.5 * error**2 / scale_t**2 - np.log(scale_t) - 0.5 * np.log(2 * np.pi)
    length = x[-1] - x[0]
    trap = (mean_t[1:].mean() * length + mean_t[:-1].mean() * length) / 2
    return float((error**2).mean()), float(loglik.mean()), float(trap - true_mass)


def test_paper_protocol_equals_the_reference_formulas_at_the_time_of_interest():
    grid, mean, variance, truth = _fields()
    mass = torch.linspace(0.3, 0.9, grid.n_t, dtype=torch.float64)
    for index in (0, 3, grid.n_t - 1):
        scores = metrics.protocol_scores(
            "paper", mean, variance, truth, x=grid.x, time_index=index, mass=mass
        )
        expected = _reference_at_t(
            mean[index], variance[index].sqrt(), truth[index], grid.x, float(mass[index])
        )
        got = (scores["paper_mse"], scores["paper_ll"], scores["paper_ce"])
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-14)
        assert set(scores) == set(metrics.PROTOCOL_KEYS["paper"])


def test_paper_protocol_closed_forms():
    """Mean = truth: MSE 0, LL = -log(2 pi v)/2 exactly; the trapezoid mass of sin(pi x) on
    [0, 1] with n points, h = 1/(n-1), is h cot(pi h / 2), so the CE against 2/pi is known."""
    n = 11
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t=3, n_x=n)
    t, x = grid.mesh()
    truth = torch.sin(math.pi * x)
    variance = torch.full_like(truth, 0.04)
    scores = metrics.protocol_scores(
        "paper", truth, variance, truth, x=grid.x, time_index=1, mass=2 / math.pi
    )
    h = 1 / (n - 1)
    trapezoid_mass = h / math.tan(math.pi * h / 2)
    assert scores["paper_mse"] == 0.0
    assert scores["paper_ll"] == pytest.approx(-0.5 * math.log(2 * math.pi * 0.04), rel=1e-14)
    assert scores["paper_ce"] == pytest.approx(trapezoid_mass - 2 / math.pi, rel=1e-12)
    assert scores["paper_ce"] < 0  # the trapezoid rule underestimates a concave profile's mass


def test_probcons_protocol_is_the_whole_grid_and_the_absolute_ce():
    grid, mean, variance, truth = _fields(seed=1)
    mass = torch.linspace(0.3, 0.9, grid.n_t, dtype=torch.float64)
    constraint = conservation_constraint(grid, mass)
    scores = metrics.protocol_scores("probcons", mean, variance, truth, constraint=constraint)
    m, v, u = mean.numpy(), variance.numpy(), truth.numpy()
    defect = np.trapezoid(m, grid.x.numpy(), axis=1) - mass.numpy()
    assert scores["mse"] == pytest.approx(((m - u) ** 2).mean(), rel=1e-12)
    log_density = -0.5 * (np.log(2 * np.pi * v) + (u - m) ** 2 / v)
    assert scores["ll"] == pytest.approx(log_density.mean(), rel=1e-12)
    assert scores["ce"] == pytest.approx(np.abs(defect).mean(), rel=1e-12)
    assert set(scores) == set(metrics.PROTOCOL_KEYS["probcons"])


def test_signed_ce_cancels_over_functions_where_the_absolute_one_does_not():
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t=3, n_x=5)
    t, x = grid.mesh()
    truth = torch.ones_like(x)
    variance = torch.ones_like(x)
    rows = [
        metrics.protocol_scores(
            "paper", truth + shift, variance, truth, x=grid.x, time_index=2, mass=1.0
        )
        for shift in (0.1, -0.1)
    ]
    summary = metrics.summarize(rows)
    assert [row["paper_ce"] for row in rows] == pytest.approx([0.1, -0.1], rel=1e-12)
    assert summary["paper_ce"] == pytest.approx(0.0, abs=1e-15)
    assert summary["paper_mse"] == pytest.approx(0.01, rel=1e-12)


def test_bad_protocol_and_missing_arguments_are_usage_errors():
    grid, mean, variance, truth = _fields()
    with pytest.raises(UsageError, match=r"protocol: expected one of probcons, paper, got 'ref'"):
        metrics.protocol_scores("ref", mean, variance, truth)
    with pytest.raises(UsageError, match="constraint"):
        metrics.protocol_scores("probcons", mean, variance, truth)
    with pytest.raises(UsageError, match="time_index, mass"):
        metrics.protocol_scores("paper", mean, variance, truth, x=grid.x)
    with pytest.raises(UsageError, match=r"time_index: expected an integer in \[0, 7\), got 7"):
        metrics.protocol_scores("paper", mean, variance, truth, x=grid.x, time_index=7, mass=0.0)
    with pytest.raises(UsageError, match=r"mass: expected U\(t\) at the 7 times or one value"):
        metrics.protocol_scores(
            "paper", mean, variance, truth, x=grid.x, time_index=1, mass=torch.zeros(3)
        )
    with pytest.raises(UsageError, match="profile"):
        metrics.signed_mass_error(mean[0, :-1], grid.x, 0.0)


def test_score_function_returns_both_protocols():
    """The runner's scores (what `probcons run` and benchmarks/gpme.py record) carry the paper
    protocol beside the whole-grid one; paper_mse is the MSE at t* (mse_t)."""
    problem = get_problem("pme")
    grid = problem.grid(11, 13)
    t, x = grid.mesh()
    truth = problem.solution(t, x, 3.0)

    class Prediction:
        pass

    prediction = Prediction()
    prediction.grid = grid
    prediction.mean = truth + 0.01 * torch.cos(7 * x)
    prediction.variance = torch.full_like(truth, 1e-3)
    samples = prediction.mean + 0.03 * torch.randn(
        (8, *grid.shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    constraint = conservation_constraint(grid, problem.mass(grid.t, 3.0))
    scores = score_function(prediction, samples, truth, constraint, problem, 3.0)
    index = grid.time_index(problem.time_of_interest)
    expected = _reference_at_t(
        prediction.mean[index],
        prediction.variance[index].sqrt(),
        truth[index],
        grid.x,
        float(problem.mass(grid.t[index], 3.0)),
    )
    assert (scores["paper_mse"], scores["paper_ll"], scores["paper_ce"]) == pytest.approx(
        expected, rel=1e-12, abs=1e-15
    )
    assert scores["paper_mse"] == scores["mse_t"]
    assert scores["ce"] == pytest.approx(
        float(constraint.residual(prediction.mean).abs().mean()), rel=1e-14
    )


def test_metrics_json_holds_both_protocols(tmp_path):
    settings = RunSettings(
        problem="stefan",
        backbone="gp",
        backbone_options={"iterations": 3},
        n_functions=2,
        grid=(9, 11),
        draws=6,
        out=tmp_path / "run",
    )
    summary = run(settings, progress=False, report=False)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(summary))
    for values in written.values():
        for protocol, keys in metrics.PROTOCOL_KEYS.items():
            for key in keys:
                assert math.isfinite(values[key]) and math.isfinite(values[f"{key}_se"]), (
                    protocol,
                    key,
                )
        assert values["paper_mse"] == values["mse_t"]
    assert abs(written["probconserv"]["paper_ce"]) < 1e-12  # sigma_G = 0: exact at t* too
    assert abs(written["unconstrained"]["paper_ce"]) > 1e-6
