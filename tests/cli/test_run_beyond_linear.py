"""`probcons run --model` with the shipped models that go beyond linear rows: the nonlinear
inflow flux of the PME (pme-flux) and the bound sites (stefan-bounded, pme-bounded). The run
files, metrics.json and the report show the new sites beside the linear ones. Shipped
checkpoints, like models, are reachable by name."""

import json

import arviz as az
import numpy as np
import pytest
import torch

from probcons.cli import main
from probcons.resources import load_model, model_file

SMALL = ["--grid", "11x13", "--n-functions", "2", "--draws", "20", "--quiet"]


@pytest.fixture(scope="module")
def flux_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pme-flux"
    assert main(["run", "pme", "--model", "pme-flux", *SMALL, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def bounded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stefan-bounded"
    assert main(["run", "stefan", "--model", "stefan-bounded", *SMALL, "--out", str(out)]) == 0
    return out


def _inflow(draws, x, parameter):
    """h(u) of models/pme-flux.py for draws (..., n_t, n_x) on the run's grid."""
    inflow_flux = load_model(model_file("pme-flux")).__globals__["inflow_flux"]
    return inflow_flux(torch.as_tensor(draws)[..., 1:, :], x, parameter)


def test_nonlinear_site_holds_in_every_probconserv_draw(flux_run):
    metrics = json.loads((flux_run / "metrics.json").read_text())
    assert metrics["probconserv"]["site_residual"] < 1e-6
    assert metrics["unconstrained"]["site_residual"] > 1e-3
    data = az.from_netcdf(flux_run / "probconserv.nc")
    assert list(data.constant_data["nonlinear_site"].values) == ["inflow_flux"]
    stored = data.constant_data["site_residual"].values
    assert stored.shape == (2, 1) and stored.max() < 1e-6
    parameter = float(data.constant_data["parameter"].values[0])
    draws = data.posterior_predictive["u"].values[0].astype(np.float64)  # (draw, function, t, x)
    t = torch.tensor(data.posterior_predictive["t"].values)
    x = torch.tensor(data.posterior_predictive["x"].values)
    observed = (parameter * t[1:]) ** (1 / parameter)
    # float32 storage: the stored draws meet the site to their rounding, the run's to 1e-6
    assert (_inflow(draws, x, parameter) - observed).abs().max() < 1e-2
    report = (flux_run / "report.md").read_text()
    assert "Site residual" in report


def test_bound_site_holds_in_every_probconserv_draw(bounded_run):
    metrics = json.loads((bounded_run / "metrics.json").read_text())
    assert metrics["probconserv"]["bound_violations"] == 0
    assert metrics["probconserv"]["ce"] < 1e-10
    data = az.from_netcdf(bounded_run / "probconserv.nc")
    draws = data.posterior_predictive["u"].values
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    assert (data.constant_data["bound_lower"].values == 0).all()
    assert (data.constant_data["bound_upper"].values == 1).all()
    report = (bounded_run / "report.md").read_text()
    assert "Outside bounds" in report


def test_unknown_model_name_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "stefan", "--model", "stefan-nope", *SMALL, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "model:" in error and "stefan-nope" in error and not out.exists()


def test_shipped_checkpoint_by_name(tmp_path, capsys):
    out = tmp_path / "e2e"
    args = ["run", "stefan", "--backbone", "anp", *SMALL, "--out", str(out)]
    assert main([*args, "--checkpoint", "stefan-anp-e2e"]) == 0
    assert (out / "metrics.json").is_file()
    assert main([*args, "--checkpoint", "stefan-anp-nope", "--overwrite"]) == 2
    assert "checkpoint: no checkpoint 'stefan-anp-nope'" in capsys.readouterr().err
