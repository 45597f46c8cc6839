"""Training: seeds fix the weights, resume continues exactly, checkpoints rebuild the backbone."""

import argparse

import pytest
import torch

from probcons.backbones.anp import ANPBackbone, ANPConfig
from probcons.checkpoint import load_checkpoint
from probcons.problems import get_problem
from probcons.training import TrainingOptions, add_train_arguments, train_anp, train_command


@pytest.fixture
def stefan():
    return get_problem("stefan")


def tiny(problem):
    return ANPConfig(
        t_range=problem.t_range,
        x_range=problem.x_range,
        hidden=16,
        heads=2,
        latent_dim=4,
        latent_self_attention=1,
        deterministic_self_attention=1,
        decoder_layers=2,
        decoder_width=16,
    )


def options(**overrides):
    values = dict(
        epochs=2,
        n_functions=8,
        batch_size=4,
        n_target=20,
        n_validation=4,
        validation_samples=2,
        validate_every=1,
        checkpoint_every=1,
        kl_warmup_steps=2,
        seed=3,
    )
    values.update(overrides)
    return TrainingOptions(**values)


def weights(path):
    return load_checkpoint(path)["state"]["network"]


def test_same_seed_same_weights(stefan, tmp_path):
    a = train_anp(stefan, tmp_path / "a", tiny(stefan), options(), progress=False)
    b = train_anp(stefan, tmp_path / "b", tiny(stefan), options(), progress=False)
    wa, wb = weights(a.last_path), weights(b.last_path)
    for key, value in wa.items():
        torch.testing.assert_close(value, wb[key], rtol=0, atol=0)
    c = train_anp(stefan, tmp_path / "c", tiny(stefan), options(seed=4), progress=False)
    wc = weights(c.last_path)
    assert any(not torch.equal(value, wc[key]) for key, value in wa.items())


def test_resume_reproduces_the_next_step(stefan, tmp_path):
    whole = train_anp(stefan, tmp_path / "whole", tiny(stefan), options(), progress=False)
    first = train_anp(
        stefan, tmp_path / "split", tiny(stefan), options(), progress=False, max_steps=3
    )
    assert first.steps == 3
    rest = train_anp(
        stefan, tmp_path / "split", tiny(stefan), options(), resume=True, progress=False
    )
    assert rest.steps == whole.steps == 4
    # the step after the interruption has the same loss, and the final weights agree
    assert rest.history[3]["loss"] == whole.history[3]["loss"]
    w_whole, w_rest = weights(whole.last_path), weights(rest.last_path)
    for key, value in w_whole.items():
        torch.testing.assert_close(value, w_rest[key], rtol=0, atol=0)


def test_resume_with_other_settings_is_refused(stefan, tmp_path):
    train_anp(stefan, tmp_path, tiny(stefan), options(), progress=False, max_steps=1)
    with pytest.raises(ValueError, match="learning_rate"):
        train_anp(
            stefan,
            tmp_path,
            tiny(stefan),
            options(learning_rate=0.5),
            resume=True,
            progress=False,
        )


def test_a_run_saved_before_newer_options_existed_resumes(stefan, tmp_path):
    """Options added later (missing from an older last.pt) take their defaults on resume."""
    from probcons.checkpoint import save_checkpoint

    train_anp(stefan, tmp_path, tiny(stefan), options(), progress=False, max_steps=1)
    payload = load_checkpoint(tmp_path / "last.pt")
    hyper = payload["hyperparameters"]
    for key in ("likelihood_beta", "kl_capacity", "deterministic_dropout", "min_contexts"):
        del hyper["training"][key]
    save_checkpoint(tmp_path / "last.pt", payload["state"], hyper, payload["extra"])
    result = train_anp(stefan, tmp_path, tiny(stefan), options(), resume=True, progress=False)
    assert result.steps == options().total_steps


def test_best_checkpoint_rebuilds_the_backbone(stefan, tmp_path):
    result = train_anp(stefan, tmp_path, tiny(stefan), options(), progress=False)
    payload = load_checkpoint(result.best_path)
    hyper = payload["hyperparameters"]
    assert hyper["problem"] == "stefan"
    assert hyper["anp"]["hidden"] == 16
    assert hyper["training"]["seed"] == 3
    assert "optimizer" not in payload["state"]
    assert payload["extra"]["val_nll"] == pytest.approx(result.best_validation)
    backbone = ANPBackbone.from_checkpoint(result.best_path, n_samples=2)
    assert backbone.name == "anp" and backbone.problem == "stefan"


def test_softc_training_runs_and_names_the_backbone(stefan, tmp_path):
    result = train_anp(
        stefan, tmp_path, tiny(stefan), options(softc_lambda=1.0, epochs=1), progress=False
    )
    assert all(entry["softc"] > 0 for entry in result.history)
    assert ANPBackbone.from_checkpoint(result.best_path).name == "softc-anp"


def test_train_command(stefan, tmp_path, capsys):
    parser = add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "stefan",
            "--epochs",
            "1",
            "--n-functions",
            "8",
            "--batch-size",
            "8",
            "--n-target",
            "10",
            "--hidden",
            "8",
            "--heads",
            "2",
            "--latent-dim",
            "2",
            "--decoder-width",
            "8",
            "--out",
            str(tmp_path / "run"),
            "--export",
            str(tmp_path / "shipped.pt"),
            "--no-progress",
        ]
    )
    assert train_command(args) == 0
    assert "trained stefan-anp" in capsys.readouterr().out
    shipped = load_checkpoint(tmp_path / "shipped.pt")
    assert shipped["extra"]["run_steps"] == 1
    assert "optimizer" not in shipped["state"]


def test_options_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainingOptions(n_functions=4, batch_size=8)
    with pytest.raises(ValueError, match="softc_lambda"):
        TrainingOptions(softc_lambda=-1.0)
    with pytest.raises(ValueError, match="epochs"):
        TrainingOptions(epochs=0)
    with pytest.raises(ValueError, match="deterministic_dropout"):
        TrainingOptions(deterministic_dropout=1.0)
    with pytest.raises(ValueError, match="min_contexts"):
        TrainingOptions(min_contexts=101)
    with pytest.raises(ValueError, match="min_contexts"):
        TrainingOptions(min_contexts=0)


def test_training_batches_vary_context_size_and_drop_functions(stefan):
    """min_contexts keeps a random subset of each function's contexts (sizes vary per batch,
    points are the function's own); the dropout mask has rate p."""
    from probcons.training.trainer import training_batch

    opts = options(n_functions=64, batch_size=64, min_contexts=2, deterministic_dropout=0.5)
    generator = torch.Generator().manual_seed(0)
    parameters = stefan.sample_parameters(64, generator)
    sizes, dropped = set(), []
    for _ in range(20):
        batch = training_batch(stefan, parameters, generator, opts)
        sizes.add(batch.context_tx.shape[1])
        dropped.append(batch.drop_deterministic.float().mean())
        t, x = batch.context_tx[0, :, 0].double(), batch.context_tx[0, :, 1].double()
        exact = stefan.solution(t, x, float(parameters[0])).float()
        torch.testing.assert_close(batch.context_u[0], exact)
    assert min(sizes) >= 2 and max(sizes) <= 100 and len(sizes) >= 10
    assert abs(float(torch.stack(dropped).mean()) - 0.5) < 0.05
    plain = training_batch(stefan, parameters, generator, options(n_functions=64, batch_size=64))
    assert plain.context_tx.shape[1] == 100 and plain.drop_deterministic is None
