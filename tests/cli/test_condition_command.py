"""`probcons condition`: a user's own predictions (an .nc written with plain xarray, without
probcons) conditioned on a model file's conservation site, written as a run folder.

The field is u(t, x) = 1 + a sin(2 pi (x - c t)) on x in [0, 1] with both ends: its trapezoid
mass is exactly 1 at every time (the trapezoid rule with both ends sums a period of a
trigonometric polynomial exactly), independently of probcons' quadrature code.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from probcons.cli import main

N_T, N_X, N_DRAWS, N_FUNCTIONS = 6, 17, 24, 2
EXACT = 1e-10

WRITER = textwrap.dedent(
    """
    # A user's script: plain numpy and xarray, no probcons.
    import sys

    import numpy as np
    import xarray as xr

    path = sys.argv[1]
    t, x = np.linspace(0.0, 1.0, {n_t}), np.linspace(0.0, 1.0, {n_x})
    tt, xx = np.meshgrid(t, x, indexing="ij")
    rng = np.random.default_rng(0)
    truth = np.stack([1 + a * np.sin(2 * np.pi * (xx - 0.3 * tt)) for a in (0.2, 0.4)])
    # The surrogate: the truth plus a bias, random offsets per time (mass errors), a random
    # smooth mode and a little pointwise noise.
    shape = (1, {n_draws}, {n_functions}, {n_t}, 1)
    offset, mode = 0.1 * rng.standard_normal(shape), 0.05 * rng.standard_normal(shape)
    noise = 0.01 * rng.standard_normal((1, {n_draws}, {n_functions}, {n_t}, {n_x}))
    draws = truth + 0.05 + offset + mode * np.cos(np.pi * xx) + noise
    coords = {{"chain": [0], "draw": np.arange({n_draws}), "function": [0, 1], "t": t, "x": x}}
    dims = ("chain", "draw", "function", "t", "x")
    xr.Dataset({{"u": (dims, draws)}}, coords=coords).to_netcdf(
        path, group="posterior_predictive", engine="h5netcdf"
    )
    xr.Dataset(
        {{"u": (dims[2:], truth)}}, coords={{k: coords[k] for k in dims[2:]}}
    ).to_netcdf(path, group="observed_data", mode="a", engine="h5netcdf")
    assert "probcons" not in sys.modules
    """
).format(n_t=N_T, n_x=N_X, n_draws=N_DRAWS, n_functions=N_FUNCTIONS)

MODEL = textwrap.dedent(
    """
    import pyro
    import torch

    from probcons import GaussianField, conservation_constraint, observe_constraint


    def model(prediction):
        grid = prediction.grid
        u = pyro.sample("u", GaussianField(prediction))
        mass = torch.ones(grid.n_t, dtype=torch.float64)  # known: the mass is 1 at all times
        observe_constraint("mass", conservation_constraint(grid, mass), u)
        return u
    """
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    script = folder / "write_predictions.py"
    script.write_text(WRITER)
    predictions = folder / "predictions.nc"
    subprocess.run([sys.executable, str(script), str(predictions)], check=True)
    model = folder / "model.py"
    model.write_text(MODEL)
    return predictions, model


@pytest.fixture(scope="module")
def run_folder(inputs, tmp_path_factory):
    predictions, model = inputs
    out = tmp_path_factory.mktemp("runs") / "mine"
    arguments = ["condition", str(predictions), "--model", str(model), "--out", str(out)]
    assert main([*arguments, "--draws", "30"]) == 0
    return out


def _mass_residual(draws: np.ndarray, x: np.ndarray) -> float:
    """max |trapezoid mass - 1| over draws (..., t, x), with numpy's own rule."""
    return float(np.abs(np.trapezoid(draws, x, axis=-1) - 1.0).max())


def test_writes_the_run_folder_and_report(run_folder):
    names = {path.name for path in run_folder.iterdir()}
    assert {"unconstrained.nc", "hardc.nc", "probconserv.nc", "metrics.json"} <= names
    assert {"report.html", "report.md"} <= names
    assert not list(run_folder.parent.glob(".*partial"))
    metrics = json.loads((run_folder / "metrics.json").read_text())
    assert set(metrics) == {"unconstrained", "hardc", "probconserv"}
    for key in ("mse", "ce", "ll", "crps", "coverage_50", "coverage_90"):
        assert np.isfinite(metrics["probconserv"][key]) and f"{key}_se" in metrics["probconserv"]
    assert metrics["probconserv"]["ce"] < EXACT < metrics["unconstrained"]["ce"]
    assert metrics["probconserv"]["mse"] < metrics["unconstrained"]["mse"]
    report = (run_folder / "report.md").read_text()
    assert report.splitlines()[0] == "# probcons calibration report: mine"
    assert "partial" not in report and "probconserv" in report


def test_files_follow_the_run_schema(run_folder):
    with xr.open_dataset(run_folder / "probconserv.nc", group="posterior_predictive") as data:
        draws = data["u"]
        assert draws.dims == ("chain", "draw", "function", "t", "x")
        assert draws.shape == (1, 30, N_FUNCTIONS, N_T, N_X)
        assert draws.dtype == np.float32  # the default --sample-dtype
        assert data.attrs["method"] == "probconserv" and data.attrs["sample_dtype"] == "float32"
        values, x = draws.values.astype(np.float64), draws["x"].values
    assert _mass_residual(values, x) < 1e-5  # float32 rounding of values near 1
    with xr.open_dataset(run_folder / "probconserv.nc", group="constant_data") as constant:
        assert constant["constraint_weights"].dims == (
            "function",
            "constraint_slice",
            "constraint_row",
            "constraint_point",
        )
        assert "parameter" not in constant and "mass" not in constant
    with xr.open_dataset(run_folder / "unconstrained.nc", group="posterior_predictive") as data:
        assert _mass_residual(data["u"].values.astype(np.float64), x) > 1e-2


def test_float64_draws_satisfy_the_mass_rows(inputs, tmp_path):
    predictions, model = inputs
    out = tmp_path / "exact"
    arguments = ["condition", str(predictions), "--model", str(model), "--out", str(out)]
    assert main([*arguments, "--sample-dtype", "float64", "--methods", "probconserv"]) == 0
    with xr.open_dataset(out / "probconserv.nc", group="posterior_predictive") as data:
        assert data["u"].dtype == np.float64
        assert _mass_residual(data["u"].values, data["x"].values) < EXACT
    with xr.open_dataset(out / "probconserv.nc", group="constant_data") as constant:
        weights = constant["constraint_weights"].values  # (F, t, row, x)
        values = constant["constraint_values"].values
    with xr.open_dataset(out / "probconserv.nc", group="posterior_predictive") as data:
        draws = data["u"].values[0]  # (draw, F, t, x)
    residual = np.einsum("fjri,dfji->dfjr", weights, draws) - values[None]
    assert np.abs(residual).max() < EXACT
    assert json.loads((out / "metrics.json").read_text())["probconserv"]["ce_draws_max"] < EXACT


def test_same_seed_same_draws_whatever_the_methods(inputs, run_folder, tmp_path):
    predictions, model = inputs
    out = tmp_path / "again"
    arguments = ["condition", str(predictions), "--model", str(model), "--out", str(out)]
    assert main([*arguments, "--draws", "30", "--methods", "probconserv"]) == 0
    with (
        xr.open_dataset(out / "probconserv.nc", group="posterior_predictive") as again,
        xr.open_dataset(run_folder / "probconserv.nc", group="posterior_predictive") as first,
    ):
        np.testing.assert_array_equal(again["u"].values, first["u"].values)


def test_moments_without_truth_and_one_function(inputs, tmp_path):
    _, model = inputs
    t, x = np.linspace(0, 1, N_T), np.linspace(0, 1, N_X)
    mean = 1.1 + 0.2 * np.sin(2 * np.pi * x)[None] + 0 * t[:, None]
    path = tmp_path / "moments.nc"
    xr.Dataset(
        {"u_mean": (("t", "x"), mean), "u_variance": (("t", "x"), np.full(mean.shape, 0.01))},
        coords={"t": t, "x": x},
    ).to_netcdf(path, group="predictions", engine="h5netcdf")
    out = tmp_path / "run"
    arguments = ["condition", str(path), "--model", str(model), "--out", str(out)]
    assert main([*arguments, "--sample-dtype", "float64", "--draws", "5"]) == 0
    assert {p.name for p in out.iterdir()} == {"unconstrained.nc", "hardc.nc", "probconserv.nc"}
    with xr.open_dataset(out / "probconserv.nc", group="posterior_predictive") as data:
        assert data["u"].shape == (1, 5, 1, N_T, N_X)
        assert _mass_residual(data["u"].values, x) < EXACT
    with xr.open_dataset(out / "probconserv.nc", group="constant_data") as constant:
        np.testing.assert_allclose(np.trapezoid(constant["u_mean"].values, x), 1.0, atol=EXACT)


def _write(path, dataset, group="posterior_predictive"):
    dataset.to_netcdf(path, group=group, engine="h5netcdf")
    return path


def _bad_inputs(folder):
    """{case: (path, expected words of the error)}."""
    t, x = np.linspace(0, 1, N_T), np.linspace(0, 1, N_X)
    draws = np.ones((4, N_T, N_X))
    no_coords = xr.Dataset({"u": (("draw", "t", "x"), draws)})
    renamed = xr.Dataset({"u": (("draw", "time", "space"), draws)}, coords={"time": t, "space": x})
    extra = xr.Dataset(
        {"u": (("draw", "t", "x", "level"), draws[..., None])}, coords={"t": t, "x": x}
    )
    one_draw = xr.Dataset({"u": (("draw", "t", "x"), draws[:1])}, coords={"t": t, "x": x})
    text = folder / "text.nc"
    text.write_text("not netCDF")
    return {
        "missing file": (folder / "missing.nc", "no such file"),
        "not netcdf": (text, "could not read"),
        "no t/x coords": (_write(folder / "a.nc", no_coords), "coordinate values for t and x"),
        "no t/x dims": (_write(folder / "b.nc", renamed), "dims (chain?, draw|sample"),
        "wrong dims": (_write(folder / "c.nc", extra), "got dims (draw, t, x, level)"),
        "one draw": (_write(folder / "d.nc", one_draw), "at least 2 draws"),
        "no draws": (
            _write(folder / "e.nc", xr.Dataset({"y": ("k", [1.0])})),
            "expected draws",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "not netcdf",
        "no t/x coords",
        "no t/x dims",
        "wrong dims",
        "one draw",
        "no draws",
    ],
)
def test_bad_predictions_are_one_line_exit_2(case, inputs, tmp_path, capsys):
    _, model = inputs
    path, expected = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    assert main(["condition", str(path), "--model", str(model), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("probcons: error: predictions: ")
    assert expected in captured.err and captured.err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--model", "missing.py"], "model: expected a Pyro model file"),
        (["--methods", "probconserv,magic"], "methods: expected"),
        (["--draws", "0"], "draws: expected a positive integer"),
        (["--sample-dtype", "float16"], "invalid choice"),
    ],
)
def test_bad_flags_are_one_line_exit_2(extra, expected, inputs, tmp_path, capsys):
    predictions, model = inputs
    arguments = ["condition", str(predictions), "--model", str(model), "--out"]
    assert main([*arguments, str(tmp_path / "out"), *extra]) == 2
    error = capsys.readouterr().err
    assert expected in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_non_empty_out_needs_overwrite(inputs, tmp_path, capsys):
    predictions, model = inputs
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    arguments = ["condition", str(predictions), "--model", str(model), "--out", str(out)]
    assert main([*arguments, "--draws", "4"]) == 2
    error = capsys.readouterr().err
    assert "--overwrite" in error and error.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main([*arguments, "--draws", "4", "--methods", "probconserv", "--overwrite"]) == 0
    assert "keep.txt" not in {p.name for p in out.iterdir()}


def test_a_model_with_the_run_signature_is_a_model_error(inputs, tmp_path, capsys):
    predictions, _ = inputs
    model = tmp_path / "run_model.py"
    model.write_text("def model(problem, parameter, noise_std):\n    pass\n")
    out = tmp_path / "out"
    assert main(["condition", str(predictions), "--model", str(model), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("probcons: error: model: ") and error.count("\n") == 1
    assert not out.exists()


def test_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom probcons.cli import build_parser\n"
        "build_parser().parse_args(['condition', 'p.nc', '--model', 'm.py', '--out', 'o'])\n"
        "heavy = [m for m in ('torch', 'pyro', 'arviz', 'xarray', 'probcons.runner') "
        "if m in sys.modules]\nassert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
