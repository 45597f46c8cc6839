"""`probcons run` end to end on a small grid, and its bad-input matrix."""

import json
import subprocess
import sys

import arviz as az
import numpy as np
import pytest

from probcons.cli import main
from probcons.constraints import conservation_constraint
from probcons.grid import Grid
from probcons.problems import get_problem

SMALL = ["--grid", "11x13", "--n-functions", "2", "--draws", "20", "--quiet"]


@pytest.fixture(scope="module")
def stefan_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stefan"
    assert main(["run", "stefan", *SMALL, "--out", str(out)]) == 0
    return out


def test_run_writes_schema(stefan_run):
    metrics = json.loads((stefan_run / "metrics.json").read_text())
    assert set(metrics) == {"unconstrained", "hardc", "probconserv"}
    for key in (
        "mse",
        "mse_t",
        "ce",
        "ll",
        "crps",
        "coverage_50",
        "coverage_90",
        "shock_position_error",
    ):
        assert np.isfinite(metrics["probconserv"][key]) and f"{key}_se" in metrics["probconserv"]
    data = az.from_netcdf(stefan_run / "probconserv.nc")
    assert data.posterior_predictive["u"].dims == ("chain", "draw", "function", "t", "x")
    assert data.posterior_predictive["u"].shape == (1, 20, 2, 11, 13)
    assert data.observed_data["u"].dims == ("function", "t", "x")
    assert data.constant_data["parameter"].values.tolist() == [0.6, 0.6]
    assert data.posterior_predictive.attrs["method"] == "probconserv"
    assert data.posterior_predictive.attrs["problem"] == "stefan"
    assert not list(stefan_run.parent.glob(".*partial"))
    assert (stefan_run / "report.html").is_file() and (stefan_run / "report.md").is_file()


def test_report_command_compares_runs(stefan_run, tmp_path, capsys):
    assert main(["report", str(stefan_run), str(stefan_run), "--out", str(tmp_path / "both")]) == 0
    assert (tmp_path / "both.html").is_file()
    assert "wrote" in capsys.readouterr().out


def test_probconserv_samples_conserve_mass_and_unconstrained_do_not(stefan_run):
    problem = get_problem("stefan")
    reference = az.from_netcdf(stefan_run / "probconserv.nc")
    grid = Grid(
        reference.posterior_predictive["t"].values, reference.posterior_predictive["x"].values
    )
    constraint = conservation_constraint(grid, problem.mass(grid.t, 0.6))
    import torch

    for method, bound in (("probconserv", 1e-6), ("unconstrained", None)):
        data = az.from_netcdf(stefan_run / f"{method}.nc")
        samples = torch.as_tensor(data.posterior_predictive["u"].values[0], dtype=torch.float64)
        residual = constraint.residual(samples).abs().max()
        if bound is None:
            assert residual > 1e-3
        else:  # the file stores float32: the float64 draws themselves conserve to 1e-10
            assert residual < bound
    assert json.loads((stefan_run / "metrics.json").read_text())["probconserv"]["ce"] < 1e-10


def test_existing_directory_needs_overwrite(stefan_run, capsys):
    assert main(["run", "stefan", *SMALL, "--out", str(stefan_run)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--overwrite" in error


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["run", "burgers"], "name: expected one of"),
        (["run", "stefan", "--backbone", "svm"], "backbone: expected one of gp"),
        (["run", "stefan", "--methods", "unconstrained,magic"], "methods: expected"),
        (["run", "stefan", "--grid", "2x50"], "grid: expected at least 3x3"),
        (["run", "stefan", "--grid", "abc"], "grid: expected NTxNX"),
        (["run", "stefan", "--draws", "0"], "draws: expected a positive integer"),
        (["run", "stefan", "--n-functions", "-1"], "n_functions: expected a positive integer"),
        (["run", "stefan", "--param", "1.5"], "u_star: expected a value in (0, 1)"),
        (["run", "pme", "--param", "0"], "m: expected"),
        (["run", "diffusion", "--param", "-2"], "k: expected"),
        (["run", "stefan", "--model", "missing.py"], "model: expected a Pyro model file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(arguments, expected, capsys, tmp_path):
    if "--out" not in arguments:
        arguments = (
            [*arguments, "--out", str(tmp_path / "out")] if arguments[0] == "run" else arguments
        )
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert expected in error and error.count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["run", "stefan", *SMALL, "--out", str(blocker / "run")]) == 2
    assert "out: cannot write" in capsys.readouterr().err
    assert blocker.read_text() == "not a directory"


def test_console_script_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "probcons.cli", "run", "stefan", "--grid", "1x1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
