"""The BOON heat ensemble as a checkpoint: save / load, the covariance scale c of the
conditioned predictive, `probcons train --backbone boon-ensemble` and `probcons run
--checkpoint` (probcons.backbones.boon_ensemble, boon_ensemble_e2e, probcons.cli)."""

import json
import math

import pytest
import torch

from probcons.backbones.boon_ensemble import BoonEnsemble
from probcons.backbones.boon_ensemble_e2e import (
    HEAT_OBJECTIVES,
    HEAT_PROBLEM,
    calibrate_covariance_scale,
    ensemble_marginals,
    gaussian_nll,
    heat_rows,
)
from probcons.boon.training import TrainingConfig, train_model
from probcons.cli import main
from probcons.cli.catalog import BOON_TRAIN_PROBLEMS, OPERATOR_TRAINABLE_BACKBONES
from probcons.problems.operators import make_problem

torch.set_num_threads(1)

TINY = TrainingConfig(
    modes=4, width=8, layers=2, padding=4, projection_width=16, epochs=3, batch_size=8
)
TRAIN_FLAGS = [
    *("--members", "2", "--n-train", "8", "--n-test", "2", "--n-validation", "4"),
    *("--epochs", "1", "--member-epochs", "1", "--fine-tune-epochs", "2"),
    *("--fine-tune-batch-size", "4", "--no-progress"),
]
"""A tiny `probcons train heat-neumann --backbone boon-ensemble` (default grid, n_x = 65)."""


@pytest.fixture(scope="module")
def heat():
    problem = make_problem("heat-neumann", n_x=17, n_times=3)
    generator = torch.Generator().manual_seed(0)
    train = problem.generate(24, generator)
    validation = problem.generate(8, generator)
    test = problem.generate(4, generator)
    return problem, train, validation, test


@pytest.fixture(scope="module")
def ensemble(heat):
    problem, train, validation, _ = heat
    models = [train_model("boon", problem, train, TINY, seed)[0] for seed in (1, 2, 3)]
    ensemble = BoonEnsemble(models, "boon", problem)
    ensemble.calibrate(validation)
    return ensemble


def test_catalog_matches_the_recipe():
    from probcons.operator_runner import BACKBONES

    assert BOON_TRAIN_PROBLEMS == (HEAT_PROBLEM,)
    assert OPERATOR_TRAINABLE_BACKBONES == (BoonEnsemble.name,)
    assert set(OPERATOR_TRAINABLE_BACKBONES) <= set(BACKBONES)


def test_train_help_lists_the_objectives(capsys):
    with pytest.raises(SystemExit):
        main(["train", "heat-neumann", "--backbone", "boon-ensemble", "--help"])
    text = capsys.readouterr().out
    assert "{" + ",".join(HEAT_OBJECTIVES) + "}" in text and "--fine-tune-epochs" in text


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saved_ensemble_predicts_identically(heat, ensemble, tmp_path, dtype):
    _, _, _, test = heat
    original = BoonEnsemble(
        [m.to(dtype) for m in ensemble.models], "boon", ensemble.problem, 3e-6, 1.7
    )
    original.training = {"objective": "posthoc", "validation": [1.0, 0.5], "seconds": 2.5}
    path = tmp_path / "ensemble.pt"
    original.save(path)
    loaded = BoonEnsemble.load(path)
    assert torch.equal(loaded.member_predictions(test), original.member_predictions(test))
    assert (loaded.noise_variance, loaded.covariance_scale) == (3e-6, 1.7)
    assert loaded.training == original.training
    assert loaded.problem.name == "heat-neumann" and loaded.grid.shape == original.grid.shape
    for a, b in zip(loaded.predict(test), original.predict(test), strict=True):
        assert torch.equal(a.mean, b.mean) and torch.equal(a.variance, b.variance)
    for model in ensemble.models:
        model.float()


def test_load_refuses_a_checkpoint_of_another_kind(heat, ensemble, tmp_path):
    from probcons.errors import UsageError

    path = tmp_path / "member.pt"
    ensemble.models[0].operator.save(path)
    with pytest.raises(UsageError, match="holds no boon-ensemble"):
        BoonEnsemble.load(path)


def test_covariance_scale_scales_the_conditioned_covariance_and_keeps_its_mean(heat, ensemble):
    problem, _, _, test = heat
    plain = ensemble_marginals(ensemble, test, covariance_scale=1.0)
    scaled = ensemble_marginals(ensemble, test, covariance_scale=2.5)
    assert torch.allclose(scaled.mean, plain.mean, rtol=0, atol=1e-10)
    assert torch.allclose(scaled.variance, 2.5 * plain.variance, rtol=1e-8)
    assert torch.allclose(scaled.prior_variance, 2.5 * plain.prior_variance, rtol=1e-12)
    rows = heat_rows(problem, test)
    defect = (rows.matrix @ scaled.mean[..., None])[..., 0] - rows.values
    assert float(defect.abs().max()) < 1e-10
    # the Pyro path (models/heat-neumann.py through ExactConditioning) agrees
    scaled_ensemble = BoonEnsemble(
        ensemble.models, "boon", problem, ensemble.noise_variance, covariance_scale=2.5
    )
    for index, (a, b) in enumerate(
        zip(ensemble.posteriors(test), scaled_ensemble.posteriors(test), strict=True)
    ):
        assert torch.allclose(b.mean, a.mean, rtol=0, atol=1e-10)
        assert torch.allclose(b.variance, 2.5 * a.variance, rtol=1e-6, atol=1e-16)
        assert torch.allclose(b.variance.flatten(), scaled.variance[index], rtol=1e-6)


def test_fitted_scale_maximises_the_held_out_conditioned_likelihood(heat, ensemble):
    _, _, validation, _ = heat
    fitted = BoonEnsemble(ensemble.models, "boon", ensemble.problem, ensemble.noise_variance)
    scale = calibrate_covariance_scale(fitted, validation)
    assert fitted.covariance_scale == scale and scale > 0
    truth = validation.targets.flatten(1).to(torch.float64)

    def log_likelihood(c: float) -> float:
        marginals = ensemble_marginals(fitted, validation, covariance_scale=c)
        return -float(gaussian_nll(marginals.mean, marginals.variance, truth).sum())

    best = log_likelihood(scale)
    for factor in torch.logspace(-1, 1, 21).tolist():
        if not math.isclose(factor, 1.0):
            assert best >= log_likelihood(scale * factor)
    assert best >= log_likelihood(scale * 1.01) and best >= log_likelihood(scale / 1.01)
    # with one Gaussian the maximiser is mean((y - mu~)^2 / v~) (c = 1 moments)
    plain = ensemble_marginals(fitted, validation, covariance_scale=1.0)
    closed = float(((truth - plain.mean).square() / plain.variance).mean())
    assert math.isclose(scale, closed, rel_tol=1e-4)


def _bundle(tmp_path, objective="constrained-crps", *extra):
    out, export = tmp_path / "run", tmp_path / "heat.pt"
    arguments = ["train", "heat-neumann", "--backbone", "boon-ensemble", "--objective", objective]
    status = main([*arguments, *TRAIN_FLAGS, "--out", str(out), "--export", str(export), *extra])
    return status, out, export


def test_train_command_exports_a_calibrated_ensemble_and_resumes(tmp_path, capsys):
    status, out, export = _bundle(tmp_path)
    assert status == 0
    assert {"run.json", "member-0.pt", "member-1.pt", "fine-tune.pt", "ensemble.pt"} <= {
        path.name for path in out.iterdir()
    }
    ensemble = BoonEnsemble.load(export)
    record = ensemble.training
    assert record["objective"] == "constrained-crps"
    assert len(record["fine_tune"]["validation"]) == 3  # the start and 2 epochs
    assert ensemble.covariance_scale == record["covariance_scale"] != 1.0
    assert "exported" in capsys.readouterr().out
    # without --resume the folder is refused; with it the finished run gives the same ensemble
    assert _bundle(tmp_path)[0] == 2
    assert "pass --resume" in capsys.readouterr().err
    assert _bundle(tmp_path, "constrained-crps", "--resume")[0] == 0
    resumed = BoonEnsemble.load(export)
    problem = ensemble.problem
    data = problem.generate(2, torch.Generator().manual_seed(3))
    assert torch.equal(resumed.member_predictions(data), ensemble.member_predictions(data))
    assert resumed.covariance_scale == ensemble.covariance_scale
    # another objective is not a resumption of this run
    assert _bundle(tmp_path, "constrained-nll", "--resume")[0] == 2
    assert "resume:" in capsys.readouterr().err


def test_interrupted_fine_tuning_resumes_to_the_uninterrupted_ensemble(tmp_path):
    status, out, export = _bundle(tmp_path)
    assert status == 0
    whole = BoonEnsemble.load(export)
    # cut the fine-tuning back to its first epoch: the engine checkpoint of a shorter run
    from probcons.backbones.boon_ensemble_e2e import HeatRecipe, fine_tune, train_heat_members

    settings = json.loads((out / "run.json").read_text())
    recipe = HeatRecipe(**{**settings["recipe"], "fine_tune_epochs": 2})
    problem, train, _, validation = recipe.data()
    members, _ = train_heat_members(recipe, problem, train, out)
    members.calibrate(validation)
    partial = tmp_path / "partial.pt"
    from probcons.training import engine

    task_steps = math.ceil(recipe.n_train / recipe.fine_tune_batch_size)
    original = engine.train

    def one_epoch(*args, **kwargs):
        return original(*args, **{**kwargs, "max_steps": task_steps})

    engine.train = one_epoch
    try:
        fine_tune(
            members, train, recipe.fine_tune_config, "crps", recipe.seed, validation, True, partial
        )
    finally:
        engine.train = original
    tuned, log = fine_tune(
        members, train, recipe.fine_tune_config, "crps", recipe.seed, validation, True, partial
    )
    assert log["validation"] == whole.training["fine_tune"]["validation"]
    data = problem.generate(2, torch.Generator().manual_seed(3))
    assert torch.equal(tuned.member_predictions(data), whole.member_predictions(data))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["stefan", "--backbone", "boon-ensemble"], "problem:"),
        (["heat-neumann", "--backbone", "boon-ensemble", "--objective", "elbo"], "--objective"),
        (["heat-neumann", "--backbone", "boon-ensemble", "--members", "0"], "members:"),
        (["heat-neumann", "--backbone", "boon-ensemble", "--members", "1"], "members:"),
        (["heat-neumann", "--backbone", "boon-ensemble", "--export", "a.txt"], "export:"),
    ],
)
def test_train_command_refuses_bad_input_and_writes_nothing(tmp_path, capsys, arguments, message):
    out = tmp_path / "run"
    assert main(["train", *arguments, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error
    assert not out.exists()


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stored")
    status, _, export = _bundle(folder, "posthoc")
    assert status == 0
    return export


def test_run_evaluates_a_stored_ensemble_without_training(stored, tmp_path):
    out = tmp_path / "heat"
    arguments = ["run", "heat-neumann", "--backbone", "boon-ensemble", "--checkpoint", str(stored)]
    assert main([*arguments, "--n-train", "4", "--n-test", "2", "--out", str(out)]) == 0
    names = {path.name for path in out.iterdir()}
    assert {"metrics.json", "unconstrained.nc", "probconserv.nc", "report.html"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    ensemble = BoonEnsemble.load(stored)
    assert metrics["checkpoint"] == str(stored)
    assert metrics["metrics"]["covariance_scale"] == ensemble.covariance_scale
    assert metrics["metrics"]["noise_variance"] == ensemble.noise_variance
    assert metrics["training"]["objective"] == "posthoc"
    assert metrics["metrics"]["posterior_conservation_error"] < 1e-8
    assert metrics["metrics"]["posterior_boundary_error"] < 1e-8
    # the stored members predict the run's means: the run trained nothing
    data = make_problem("heat-neumann").generate(6, torch.Generator().manual_seed(0))
    mean = ensemble.member_predictions(data.subset(slice(4, 6))).mean(0).flatten(1)
    truth = data.targets[4:].flatten(1)
    expected = (mean - truth).norm(dim=1) / truth.norm(dim=1)
    assert math.isclose(metrics["metrics"]["rel_l2"], float(expected.mean()), rel_tol=1e-6)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["heat-neumann", "--backbone", "boon-ensemble", "--checkpoint", "no-such"], "checkpoint:"),
        (["heat-neumann", "--checkpoint", "no-such.pt"], "checkpoint:"),
        (["stokes", "--backbone", "boon-ensemble", "--checkpoint", "x.pt"], "--checkpoint"),
    ],
)
def test_run_refuses_an_unknown_checkpoint(tmp_path, capsys, arguments, message):
    out = tmp_path / "run"
    assert main(["run", *arguments, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error
    assert not out.exists()


def test_run_refuses_a_checkpoint_of_another_backbone(stored, tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["run", "heat-neumann", "--backbone", "boon-fno", "--checkpoint", str(stored)]
    assert main([*arguments, "--out", str(out)]) == 2
    assert "checkpoint:" in capsys.readouterr().err
