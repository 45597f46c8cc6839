"""The `probcons` command: `run` end to end on a small grid, its bad-input matrix, flags that
do not apply to a problem, --debug, the error mapping, and fast, complete help."""

import json
import subprocess
import sys

import arviz as az
import numpy as np
import pytest

from probcons.cli import build_parser, main
from probcons.constraints import conservation_constraint
from probcons.errors import ModelError, SingularConstraintError, UsageError
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


# --- flags of the other problem family, --threads, --debug -------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["run", "heat-neumann", "--methods", "hardc"],
            "run: --methods applies to GPME problems only (got it for heat-neumann)",
        ),
        (["run", "cavity", "--checkpoint", "model.pt"], "--checkpoint applies to GPME problems"),
        (["run", "wave", "--grid", "5x5", "--draws=3"], "--grid and --draws apply to GPME"),
        (["run", "stokes", "--sigma-g", "0"], "--sigma-g applies to GPME problems only"),
        (
            ["run", "stefan", "--epochs", "2"],
            "run: --epochs applies to BOON problems only (got it for stefan)",
        ),
        (["run", "pme", "--n-train=4", "--n-test", "2"], "--n-train and --n-test apply to BOON"),
    ],
)
def test_flag_of_the_other_problem_family_is_refused(arguments, expected, tmp_path, capsys):
    assert main([*arguments, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("probcons: error: ") and expected in captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def operator_calls(monkeypatch):
    """Replace the BOON runner: record its arguments, write nothing, report one metric."""
    from probcons import operator_runner as runner

    calls = []

    def record(problem, backbone, out, **options):
        calls.append({"problem": problem, "backbone": backbone, "out": out, **options})
        return {"metrics": {"rel_l2": 0.25}}

    monkeypatch.setattr(runner, "run_operator_problem", record)
    return calls


def test_unknown_problem_is_named_before_its_flags(tmp_path, capsys):
    assert main(["run", "heat", "--epochs", "2", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "name: expected one of" in error and "got 'heat'" in error
    assert list(tmp_path.iterdir()) == []


def test_boon_run_passes_its_flags_and_threads(operator_calls, tmp_path, capsys):
    out = tmp_path / "heat"
    arguments = ["run", "heat-neumann", "--epochs", "2", "--n-train", "4", "--threads", "3"]
    assert main([*arguments, "--seed", "5", "--quiet", "--out", str(out)]) == 0
    (call,) = operator_calls
    assert call == {
        "problem": "heat-neumann",
        "backbone": "boon-fno",
        "out": out,
        "seed": 5,
        "epochs": 2,
        "threads": 3,
        "n_train": 4,
    }
    assert capsys.readouterr().out == f"heat-neumann, boon-fno: rel_l2 0.25\nwrote {out}/\n"


def test_boon_run_checks_threads_before_anything(operator_calls, tmp_path, capsys):
    assert main(["run", "wave", "--threads", "0", "--out", str(tmp_path / "out")]) == 2
    assert "threads: expected a positive integer" in capsys.readouterr().err
    assert operator_calls == [] and list(tmp_path.iterdir()) == []


def test_gpme_defaults_are_filled_in(monkeypatch, tmp_path):
    import probcons.runner

    seen = {}

    def stop(settings, progress):
        seen.update(vars(settings), progress=progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(probcons.runner, "run", stop)
    assert main(["run", "stefan", "--out", str(tmp_path / "out")]) == 130
    assert seen["methods"] == ("unconstrained", "hardc", "probconserv")
    assert (seen["grid"], seen["n_functions"], seen["draws"]) == ((101, 101), 10, 100)
    assert (seen["noise_std"], seen["chunk_functions"], seen["backbone"]) == (0.0, 10, "gp")
    assert seen["progress"] is True and seen["backbone_options"] == {}


def test_debug_raises_with_the_traceback(tmp_path, capsys):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="grid: expected at least 3x3"):
        main(["--debug", "run", "stefan", "--grid", "2x50", "--out", out])
    with pytest.raises(UsageError, match="--epochs applies to BOON problems only"):
        main(["--debug", "run", "stefan", "--epochs", "1", "--out", out])
    with pytest.raises(UsageError, match="invalid choice"):
        main(["--debug", "frobnicate"])
    assert capsys.readouterr().err == "" and list(tmp_path.iterdir()) == []
    assert main(["run", "stefan", "--debug"]) == 2  # a global flag: before the subcommand
    assert "unrecognized arguments: --debug" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "usage"),
    [
        (UsageError("a: bad"), True),
        (ModelError("model: bad"), True),
        (ValueError("plain"), True),
        (SingularConstraintError("row 3"), True),
        (RuntimeError("bug"), False),
    ],
)
def test_only_bad_input_maps_to_exit_2(error, usage, monkeypatch, capsys):
    from probcons.cli import report

    def fail(args):
        raise error

    monkeypatch.setattr(report, "handle", fail)
    if usage:
        assert main(["report", "run-dir"]) == 2
        assert capsys.readouterr().err == f"probcons: error: {error}\n"
    else:
        with pytest.raises(type(error)):
            main(["report", "run-dir"])


def test_interrupt_exits_130(monkeypatch, capsys):
    from probcons.cli import report

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "handle", interrupt)
    assert main(["--debug", "report", "run-dir"]) == 130
    assert capsys.readouterr().err == "probcons: interrupted\n"


# --- help: fast, complete ------------------------------------------------------------------

HELP_IMPORTS = """
import contextlib, io, sys
from probcons.cli import main
for argv in (["--help"], ["run", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
heavy = ("torch", "pyro", "arviz", "probcons.runner", "probcons.boon", "probcons.training")
print([name for name in heavy if name in sys.modules])
"""


def test_help_imports_nothing_heavy():
    result = subprocess.run(
        [sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_run_help_groups_the_flags_by_problem_family(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["run", "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out.split("options:", 1)[1]  # the flags, not the usage line
    gpme, boon = text.index("GPME problems only"), text.index("BOON problems only")
    assert text.index("--threads") < gpme < text.index("--sigma-g") < boon < text.index("--n-train")


def test_train_help_lists_every_trainable_backbone(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "--backbone {anp,ensemble,fno-ensemble}" in text and "--softc-lambda" in text
    assert "probcons train PROBLEM --backbone ensemble --help" in text
    assert "fno, fno-bc, boon-fno, boon-ensemble: BOON operators" in text
    assert "probcons run PROBLEM" in text
    with pytest.raises(SystemExit):
        main(["train", "--backbone", "fno-ensemble", "--help"])
    text = capsys.readouterr().out
    assert "--members" in text and "--softc-lambda" not in text


@pytest.mark.parametrize(
    ("arguments", "handler", "backbone"),
    [
        (["stefan", "--epochs", "1"], "handle", "anp"),
        (["stefan", "--backbone", "ensemble", "--members", "2"], "handle_ensemble", "ensemble"),
        (["pme", "--backbone=fno-ensemble", "--train-grid", "8x8"], "handle_ensemble", None),
        (["pme", "--backb", "ensemble", "--width", "8"], "handle_ensemble", "ensemble"),
    ],
)
def test_train_routes_each_backbone_to_its_own_flags(arguments, handler, backbone):
    from probcons.cli import train

    args = build_parser().parse_args(["train", *arguments])
    assert args.handler is getattr(train, handler)
    assert args.backbone == (backbone or "fno-ensemble")


def test_train_refuses_an_unknown_backbone_with_the_choices(capsys):
    assert main(["train", "stefan", "--backbone", "gp"]) == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'gp'" in error and "'fno-ensemble'" in error


def test_catalog_matches_the_registries():
    """The light tables the parser uses are the registries' keys, in order."""
    from probcons.backbones.boon_ensemble2d import COVARIANCES
    from probcons.backbones.member_training import BACKBONE_KINDS
    from probcons.cli import catalog
    from probcons.operator_runner import BACKBONES as OPERATOR_BACKBONES
    from probcons.problems import PROBLEMS
    from probcons.problems.operators import OPERATOR_PROBLEMS
    from probcons.problems.operators2d import OPERATOR_PROBLEMS_2D
    from probcons.runner import METHODS
    from probcons.training.command import BACKBONES as ANP_BACKBONES

    assert catalog.GPME_PROBLEMS == tuple(PROBLEMS)
    assert catalog.OPERATOR_PROBLEMS == (*OPERATOR_PROBLEMS, *OPERATOR_PROBLEMS_2D)
    assert catalog.METHODS == tuple(METHODS)
    assert catalog.OPERATOR_BACKBONES == tuple(OPERATOR_BACKBONES)
    assert catalog.ANP_BACKBONES == tuple(ANP_BACKBONES)
    assert catalog.ENSEMBLE_BACKBONES == tuple(BACKBONE_KINDS)
    assert catalog.ENSEMBLE_COVARIANCES == COVARIANCES


def test_every_gpme_backbone_class_satisfies_backbone():
    """The classes `get_backbone` returns have Backbone's predict(problem, parameter, contexts,
    grid, generator); a constructed GP is an instance."""
    import inspect

    from probcons.backbones import Backbone
    from probcons.backbones.anp import ANPBackbone, ShippedANPBackbone
    from probcons.backbones.ensemble import DeepEnsembleBackbone
    from probcons.backbones.fno_ensemble import FNOEnsembleBackbone
    from probcons.backbones.gp import GPBackbone
    from probcons.backbones.member_training import ShippedEnsembleBackbone

    expected = list(inspect.signature(Backbone.predict).parameters)
    classes = (
        GPBackbone,
        ANPBackbone,
        ShippedANPBackbone,
        DeepEnsembleBackbone,
        FNOEnsembleBackbone,
        ShippedEnsembleBackbone,
    )
    for cls in classes:
        assert list(inspect.signature(cls.predict).parameters) == expected, cls
    assert isinstance(GPBackbone(), Backbone)


def test_run_problem_dispatches_on_the_family(operator_calls, tmp_path):
    from probcons.runner import run_problem

    run = run_problem("cavity", None, tmp_path / "c", seed=2, epochs=1)
    assert (run.family, run.backbone, run.out) == ("operator-2d", "boon-fno", tmp_path / "c")
    assert operator_calls[0]["problem"] == "cavity" and run.results["metrics"]["rel_l2"] == 0.25
    with pytest.raises(UsageError, match="epochs do not apply to GPME problems"):
        run_problem("stefan", out=tmp_path / "s", epochs=1)
