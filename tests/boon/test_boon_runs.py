"""BOON runs in the common run folder: `<method>.nc`, metrics.json and the report, with the
ensemble's constraints applied through the Pyro model file models/heat-neumann.py."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from probcons.backbones.boon_ensemble import (
    BoonEnsemble,
    conserve,
    heat_constraints,
    model_arguments,
    problem_model,
)
from probcons.boon.training import TrainingConfig
from probcons.cli import main
from probcons.errors import UsageError
from probcons.inference import ExactConditioning
from probcons.operator_runner import ENSEMBLE_METHODS, run_operator_problem
from probcons.problems.operators import make_problem
from probcons.report.data import MethodData
from probcons.resources import model_file

torch.set_num_threads(1)

TINY = TrainingConfig(
    modes=6, width=8, layers=2, padding=4, projection_width=16, epochs=1, batch_size=8
)
SIZES = {"n_train": 8, "n_test": 3, "n_x": 17, "n_times": 3}
DRAWS = 10
EXACT = 1e-10  # rows of the float64 posterior (mean and draws)


@pytest.fixture(scope="module")
def heat_run(tmp_path_factory):
    """A tiny boon-ensemble run on heat-neumann (2 members, one epoch) and its result."""
    out = tmp_path_factory.mktemp("heat-boon-ensemble")
    result = run_operator_problem(
        "heat-neumann",
        "boon-ensemble",
        out,
        seed=0,
        **SIZES,
        config=TINY,
        members=2,
        draws=DRAWS,
        figure=False,
    )
    return out, result


@pytest.fixture(scope="module")
def heat():
    problem = make_problem("heat-neumann", n_x=SIZES["n_x"], n_times=SIZES["n_times"])
    generator = torch.Generator().manual_seed(0)
    return problem, problem.generate(8, generator), problem.generate(3, generator)


def test_ensemble_run_writes_one_readable_file_per_method_and_the_report(heat_run):
    out, _ = heat_run
    assert {path.name for path in out.glob("*.nc")} == {f"{m}.nc" for m in ENSEMBLE_METHODS}
    assert (out / "report.html").stat().st_size > 0 and (out / "report.md").is_file()
    problem = make_problem("heat-neumann", n_x=SIZES["n_x"], n_times=SIZES["n_times"])
    for method in ENSEMBLE_METHODS:
        with MethodData(out / f"{method}.nc") as data:
            assert data.method == method and data.attrs["method"] == method
            assert data.attrs["problem"] == "heat-neumann"
            assert data.attrs["backbone"] == "boon-ensemble"
            assert data.n_functions == SIZES["n_test"] and data.n_draws == DRAWS
            assert torch.equal(data.grid.t, problem.times) and torch.equal(data.grid.x, problem.x)
            assert data.has_moments and data.has_constraint and data.has_parameter
            assert 2.01 <= data.parameter(0) <= 3.99  # the sample's w
    text = (out / "report.md").read_text()
    assert "| unconstrained |" in text and "| probconserv |" in text


def test_stored_probconserv_mean_meets_the_stored_rows_and_they_are_the_heat_rows(heat_run):
    out, _ = heat_run
    problem = make_problem("heat-neumann", n_x=SIZES["n_x"], n_times=SIZES["n_times"])
    test = problem.generate(SIZES["n_test"], _data_generator_after_training_set())
    with MethodData(out / "probconserv.nc") as data, MethodData(out / "unconstrained.nc") as prior:
        for f in range(data.n_functions):
            mean, variance = data.moments(f)
            assert float(data.constraint_residual(f, mean).abs().max()) < EXACT
            assert float(variance.min()) >= -1e-12
            # the prior's mean misses the exact mass (conservation rows come first)
            prior_mean, _ = prior.moments(f)
            assert float(prior.constraint_residual(f, prior_mean)[:, 0].abs().max()) > 1e-6
            # the stored rows are those of heat_constraints, built independently
            conservation, neumann = heat_constraints(problem, test, f, problem.condition.order)
            truth = data.truth(f)
            stored = data.constraint_residual(f, truth)
            expected = torch.cat([conservation.residual(truth), neumann.residual(truth)], -1)
            assert torch.allclose(stored, expected, rtol=0, atol=1e-12)
            assert torch.allclose(truth, test.targets[f], rtol=0, atol=1e-12)
            # draws are float32: they meet the rows to float32 round-off only
            draws = data.draws(f)
            assert float(data.constraint_residual(f, draws[0]).abs().max()) < 1e-3


def _data_generator_after_training_set() -> torch.Generator:
    """The run's data generator (seed 0) advanced past its training set, so the next
    `generate` gives the run's test set."""
    problem = make_problem("heat-neumann", n_x=SIZES["n_x"], n_times=SIZES["n_times"])
    generator = torch.Generator().manual_seed(0)
    problem.generate(SIZES["n_train"], generator)
    return generator


def test_metrics_json_keeps_the_boon_keys_and_adds_the_methods(heat_run):
    out, result = heat_run
    written = json.loads((out / "metrics.json").read_text())
    assert written["methods"] == list(ENSEMBLE_METHODS)
    flat = written["metrics"]
    assert flat == pytest.approx(result["metrics"])
    for key in ("rel_l2", "boundary_error", "conservation_error", "posterior_rel_l2"):
        assert key in flat
    assert flat["posterior_conservation_error"] < EXACT
    assert flat["posterior_boundary_error"] < EXACT
    for method in ENSEMBLE_METHODS:
        summary = written[method]
        for key in ("mse", "mse_t", "ce", "ll", "crps", "coverage_50", "coverage_90", "rel_l2"):
            assert np.isfinite(summary[key]) and np.isfinite(summary[f"{key}_se"])
    assert written["probconserv"]["ce"] < EXACT < written["unconstrained"]["ce"]
    assert written["unconstrained"]["rel_l2"] == pytest.approx(flat["rel_l2"], rel=1e-12)
    assert written["probconserv"]["rel_l2"] == pytest.approx(flat["posterior_rel_l2"], rel=1e-12)


def test_probcons_report_reads_the_boon_run(heat_run, tmp_path, capsys):
    out, _ = heat_run
    assert main(["report", str(out), "--out", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").stat().st_size > 0
    assert "again.html" in capsys.readouterr().out


def test_fresh_float64_draws_satisfy_conservation_and_neumann_rows(heat):
    problem, train, test = heat
    ensemble = BoonEnsemble.train(problem, train, TINY, members=2, seed=0)
    ensemble.noise_variance = 1e-2  # room for the update to spread
    for index, sites in enumerate(ensemble.sites(test)):
        assert set(sites.columns) == {"mass", "neumann"}
        posterior = sites.posterior("probconserv")
        draws = posterior.sample(20, torch.Generator().manual_seed(index))
        assert draws.dtype == torch.float64
        conservation, neumann = heat_constraints(problem, test, index, problem.condition.order)
        assert float(conservation.residual(draws).abs().max()) < EXACT
        assert float(neumann.residual(draws).abs().max()) < EXACT
        assert float(sites.residual(draws).abs().max()) < EXACT
        # the same posterior as the LinearConstraints conditioned on directly
        direct = sites.prior.condition([conservation, neumann])
        assert torch.allclose(posterior.mean, direct.mean, rtol=0, atol=1e-12)
        assert torch.allclose(posterior.variance, direct.variance, rtol=0, atol=1e-12)
        again = conserve(sites.prior, [conservation, neumann])
        assert torch.allclose(again.mean, direct.mean, rtol=0, atol=1e-12)
    for method in ("unconstrained", "hardc", "probconserv"):
        assert len(ensemble.posteriors(test, method)) == len(test)


def test_the_model_file_is_shipped_and_its_rows_are_the_heat_rows(heat):
    problem, _, test = heat
    path = model_file("heat-neumann")
    assert path.name == "heat-neumann.py"
    prior = BoonEnsemble.train(problem, test, TINY, members=2, seed=0).predict(test)[1]
    rows = ExactConditioning(problem_model("heat-neumann")).constraint(
        prior, *model_arguments(problem, test, 1)
    )
    conservation, neumann = heat_constraints(problem, test, 1, problem.condition.order)
    expected = conservation.stack(neumann)
    assert torch.equal(rows.weights, expected.weights)
    assert torch.equal(rows.values, expected.values)


def test_bad_arguments_name_themselves(heat, tmp_path):
    problem, _, test = heat
    with pytest.raises(UsageError, match="problem"):
        problem_model("stokes")
    without = replace(test, parameters=None)
    with pytest.raises(UsageError, match="data"):
        model_arguments(problem, without, 0)
    with pytest.raises(UsageError, match="draws"):
        run_operator_problem("heat-neumann", "boon-ensemble", tmp_path, draws=0)
    with pytest.raises(UsageError, match="members"):
        run_operator_problem("heat-neumann", "boon-ensemble", tmp_path, members=0)


def test_problem_without_a_model_file_writes_the_ensemble_alone(tmp_path):
    sizes = {**SIZES, "n_test": 2}
    run_operator_problem(
        "stokes", "boon-ensemble", tmp_path, config=TINY, members=2, draws=4, **sizes
    )
    assert [path.name for path in tmp_path.glob("*.nc")] == ["unconstrained.nc"]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["methods"] == ["unconstrained"] and "ce" not in written["unconstrained"]
    with MethodData(tmp_path / "unconstrained.nc") as data:
        assert not data.has_constraint and data.has_mass
        assert data.attrs["parameter_name"] == "test sample"
    assert (tmp_path / "report.html").stat().st_size > 0


def test_deterministic_backbones_write_metrics_and_a_point_report(tmp_path):
    result = run_operator_problem(
        "heat-neumann", "boon-fno", tmp_path, config=TINY, figure=False, **SIZES
    )
    assert list(tmp_path.glob("*.nc")) == [] and (tmp_path / "report.html").exists()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert "methods" not in written and written["metrics"]["rel_l2"] == result["metrics"]["rel_l2"]


def test_a_deterministic_run_has_a_point_report_that_probcons_report_reads(tmp_path):
    """boon-fno has no predictive distribution: its run folder holds metrics.json and a report
    of the point metrics, and `probcons report` reads the folder (exit 0) instead of failing."""
    from probcons.cli import main

    out = tmp_path / "stokes-boon"
    run_operator_problem(
        "stokes", "boon-fno", out, config=TINY, n_train=6, n_test=3, n_x=17, figure=False
    )
    text = (out / "report.md").read_text()
    assert "stokes, boon-fno" in text and "| rel_l2 |" in text and "| boundary_error |" in text
    assert not list(out.glob("*.nc"))
    assert main(["report", str(out), "--out", str(tmp_path / "again.html")]) == 0
    assert "| rel_l2 |" in (tmp_path / "again.md").read_text()
