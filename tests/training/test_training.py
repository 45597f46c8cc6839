"""Training: seeds fix the weights, resume continues exactly, checkpoints rebuild the backbone."""

import argparse
import math

import pytest
import torch
from training_builders import tiny_anp_config, tiny_options

from probcons.backbones.anp import ANPBackbone
from probcons.backbones.context_scale import context_scale_factor
from probcons.checkpoint import load_checkpoint
from probcons.cli import main
from probcons.constraints import conservation_constraint
from probcons.problems import get_problem, sample_contexts
from probcons.training import TrainingOptions, train_anp, trainer
from probcons.training.calibration import (
    calibrate_checkpoint,
    fit_context_calibration,
    fit_variance_scale,
)
from probcons.training.command import add_train_arguments, train_command
from probcons.training.trainer import mixture_log_likelihood, mixture_scores


@pytest.fixture
def stefan():
    return get_problem("stefan")


tiny = tiny_anp_config


def options(**overrides):
    settings = dict(
        n_target=20,
        n_validation=4,
        validation_samples=2,
        validate_every=1,
        kl_warmup_steps=2,
        seed=3,
    )
    return tiny_options(settings, **overrides)


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


@pytest.mark.parametrize("objective", ["elbo", "marginal-likelihood"])
def test_resume_reproduces_the_next_step(stefan, tmp_path, objective):
    chosen = options(objective=objective)
    whole = train_anp(stefan, tmp_path / "whole", tiny(stefan), chosen, progress=False)
    first = train_anp(stefan, tmp_path / "split", tiny(stefan), chosen, progress=False, max_steps=3)
    assert first.steps == 3
    rest = train_anp(stefan, tmp_path / "split", tiny(stefan), chosen, resume=True, progress=False)
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
    extra = dict(payload["extra"])
    extra["train_seconds"] = extra.pop("seconds")  # the trainer's own loop named it so
    save_checkpoint(tmp_path / "last.pt", payload["state"], hyper, extra)
    result = train_anp(stefan, tmp_path, tiny(stefan), options(), resume=True, progress=False)
    assert result.steps == options().total_steps
    assert result.train_seconds >= extra["train_seconds"]


def test_last_checkpoint_is_the_engines_and_rebuilds_the_backbone(stefan, tmp_path):
    """last.pt: the engine's layout (wall seconds as `seconds`); best.pt keeps train_seconds."""
    result = train_anp(stefan, tmp_path, tiny(stefan), options(), progress=False)
    last = load_checkpoint(result.last_path)
    assert set(last["state"]) == {
        "network",
        "optimizer",
        "rng_torch",
        "rng_data",
        "pool",
        "permutation",
    }
    assert set(last["extra"]) == {"step", "seconds", "cpu_seconds", "best_validation", "history"}
    assert last["extra"]["history"] == result.history
    assert 0 < last["extra"]["seconds"] <= result.train_seconds
    best = load_checkpoint(result.best_path)["extra"]
    assert best["train_seconds"] <= result.train_seconds and best["cpu_seconds"] >= 0
    assert ANPBackbone.from_checkpoint(result.last_path, n_samples=2).problem == "stefan"


def test_learning_rate_is_the_cosine_decay_to_a_tenth():
    """lr_s = lr0 (0.1 + 0.9 (1 + cos(pi min(s / S, 1))) / 2), as floats, to the last bit."""
    for lr0, epochs in ((1e-3, 2), (3e-4, 5), (0.1, 1)):
        chosen = options(learning_rate=lr0, epochs=epochs, n_functions=40, batch_size=3)
        total = chosen.total_steps
        for step in range(total + 3):
            progress = min(step / total, 1.0)
            expected = lr0 * (0.1 + (1 - 0.1) * 0.5 * (1 + math.cos(math.pi * progress)))
            assert trainer.learning_rate(chosen, step) == expected


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
            "--latent-aggregation",
            "mean",
            "--out",
            str(tmp_path / "run"),
            "--export",
            str(tmp_path / "shipped.pt"),
            "--no-progress",
        ]
    )
    assert train_command(args) == 0
    out = capsys.readouterr().out
    assert "trained stefan-anp" in out and "variance scale" in out
    shipped = load_checkpoint(tmp_path / "shipped.pt")
    assert shipped["extra"]["run_steps"] == 1
    assert shipped["hyperparameters"]["anp"]["latent_aggregation"] == "mean"
    assert shipped["extra"]["variance_scale"] == shipped["extra"]["calibration"]["variance_scale"]
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
    with pytest.raises(ValueError, match="objective"):
        TrainingOptions(objective="iwae")
    with pytest.raises(ValueError, match="marginal_samples"):
        TrainingOptions(objective="marginal-likelihood", marginal_samples=0)
    with pytest.raises(ValueError, match="likelihood_beta"):
        TrainingOptions(objective="marginal-likelihood", likelihood_beta=1.0)
    with pytest.raises(ValueError, match=r"likelihood_beta: expected a number in \[0, 1\]"):
        TrainingOptions(likelihood_beta=1.5)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--out", "{file}"], "out: expected a directory, got the file"),
        (["--out", "/proc/probcons-run"], "out: cannot write under '/proc'"),
        (["--export", "{tmp}/best.pth"], "export: expected a path ending in .pt"),
        (["--export", "/proc/probcons/best.pt"], "export: cannot write under '/proc'"),
        (["--likelihood-beta", "2"], "likelihood_beta: expected a number in [0, 1], got 2.0"),
    ],
)
def test_train_command_refuses_bad_paths_before_training(flags, message, tmp_path, capsys):
    """One line on stderr, exit 2, and no run folder: nothing trains first."""
    file = tmp_path / "a-file"
    file.write_text("")
    flags = [flag.format(file=file, tmp=tmp_path) for flag in flags]
    if "--out" not in flags:
        flags += ["--out", str(tmp_path / "run")]
    assert main(["train", "stefan", "--epochs", "1", "--no-progress", *flags]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
    assert not (tmp_path / "run").exists()


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


def test_variance_scale_with_one_sample_is_the_mean_squared_standardised_error():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(1, 50, generator=generator, dtype=torch.float64)
    stds = torch.rand(1, 50, generator=generator, dtype=torch.float64) + 0.1
    targets = means[0] + 0.7 * stds[0] * torch.randn(50, generator=generator, dtype=torch.float64)
    expected = float((((targets - means[0]) / stds[0]) ** 2).mean())
    assert fit_variance_scale(means, stds, targets) == pytest.approx(expected, rel=1e-5)


def test_variance_scale_maximises_the_mixture_likelihood_and_recovers_a_known_scale():
    generator = torch.Generator().manual_seed(1)
    samples, points, true_scale = 8, 20_000, 0.3
    means = 0.1 * torch.randn(samples, points, generator=generator, dtype=torch.float64)
    stds = torch.rand(samples, points, generator=generator, dtype=torch.float64) + 0.05
    pick = torch.randint(samples, (points,), generator=generator)
    columns = torch.arange(points)
    noise = torch.randn(points, generator=generator, dtype=torch.float64)
    targets = means[pick, columns] + true_scale**0.5 * stds[pick, columns] * noise
    fitted = fit_variance_scale(means, stds, targets)
    best = float(mixture_log_likelihood(means, stds, targets, fitted).sum())
    for factor in (0.99, 1.01):
        assert float(mixture_log_likelihood(means, stds, targets, fitted * factor).sum()) < best
    assert fitted == pytest.approx(true_scale, rel=0.03)
    with pytest.raises(ValueError, match="means, stds, targets"):
        fit_variance_scale(means, stds, targets[:-1])


def test_context_calibration_recovers_a_known_scale_and_exponent():
    """Targets drawn with variance 0.4 f^0.7 sigma^2 per function: the fit finds (0.4, 0.7) and
    beats one scalar; factors that carry no information give exponent 0 and the scalar."""
    generator = torch.Generator().manual_seed(4)
    samples, functions, points = 2, 60, 400
    means = 0.1 * torch.randn(samples, functions, points, generator=generator, dtype=torch.float64)
    stds = torch.rand(samples, functions, points, generator=generator, dtype=torch.float64) + 0.05
    factors = torch.exp(torch.randn(functions, generator=generator, dtype=torch.float64))
    pick = torch.randint(samples, (functions, points), generator=generator)
    chosen_mean = means.gather(0, pick[None])[0]
    chosen_std = stds.gather(0, pick[None])[0]
    noise = torch.randn(functions, points, generator=generator, dtype=torch.float64)
    targets = chosen_mean + (0.4 * factors[:, None] ** 0.7).sqrt() * chosen_std * noise
    scale, exponent = fit_context_calibration(means, stds, targets, factors)
    assert scale == pytest.approx(0.4, rel=0.05)
    assert exponent == pytest.approx(0.7, abs=0.03)
    scalar = fit_variance_scale(means, stds, targets)
    fitted = mixture_log_likelihood(means, stds, targets, scale * factors[:, None] ** exponent)
    assert float(fitted.sum()) > float(mixture_log_likelihood(means, stds, targets, scalar).sum())

    flat = chosen_mean + 0.4**0.5 * chosen_std * noise  # the factors say nothing here
    scale, exponent = fit_context_calibration(means, stds, flat, factors)
    assert exponent < 0.05
    with pytest.raises(ValueError, match="means, factors"):
        fit_context_calibration(means, stds, targets, factors[:-1])
    with pytest.raises(ValueError, match="factors"):
        fit_context_calibration(means, stds, targets, 0 * factors)


def test_scaled_scores_match_their_definitions():
    generator = torch.Generator().manual_seed(2)
    means = torch.randn(4, 3, 30, generator=generator, dtype=torch.float64)
    stds = torch.rand(4, 3, 30, generator=generator, dtype=torch.float64) + 0.2
    targets = torch.randn(3, 30, generator=generator, dtype=torch.float64)
    scores = mixture_scores(means, stds, targets, variance_scale=2.5)
    total = means.var(0, unbiased=False) + 2.5 * (stds**2).mean(0)
    inside = (targets - means.mean(0)).abs() <= 1.6448536269514722 * total.sqrt()
    assert scores["coverage_90"] == pytest.approx(float(inside.double().mean()))
    density = torch.distributions.Normal(means, 2.5**0.5 * stds).log_prob(targets).exp().mean(0)
    assert scores["nll"] == pytest.approx(float(-density.log().mean()), rel=1e-12)


def test_calibration_is_stored_and_scales_the_backbone_variance_only(stefan, tmp_path):
    result = train_anp(stefan, tmp_path, tiny(stefan), options(), progress=False)
    untouched = result.best_path.read_bytes()
    dry = calibrate_checkpoint(result.best_path, n_functions=8, samples=4, write=False)
    assert result.best_path.read_bytes() == untouched
    stored = calibrate_checkpoint(result.best_path, n_functions=8, samples=4)
    assert stored.variance_scale == dry.variance_scale
    assert stored.after["nll"] <= stored.before["nll"]
    assert stored.after["mse"] == stored.before["mse"]
    assert stored.after["nll"] <= stored.scalar["nll"] + 1e-6  # float32 draws
    scalar = calibrate_checkpoint(
        result.best_path, n_functions=8, samples=4, write=False, context=False
    )
    assert (scalar.variance_scale, scalar.context_exponent) == (stored.scalar_scale, 0.0)
    assert scalar.after == pytest.approx(stored.scalar, rel=1e-6)
    # the context fit is made and stored either way
    fit = (stored.context_scale, stored.context_fit_exponent)
    assert (scalar.context_scale, scalar.context_fit_exponent) == fit
    assert (stored.variance_scale, stored.context_exponent) == fit
    assert stored.scalar["nll"] <= stored.before["nll"]
    extra = load_checkpoint(result.best_path)["extra"]
    assert extra["variance_scale"] == stored.variance_scale
    assert extra["context_exponent"] == stored.context_exponent
    assert extra["calibration"]["n_functions"] == 8

    calibrated = ANPBackbone.from_checkpoint(result.best_path, n_samples=3)
    assert calibrated.variance_scale == stored.variance_scale
    assert calibrated.context_exponent == stored.context_exponent
    plain = ANPBackbone.from_checkpoint(
        result.best_path, n_samples=3, variance_scale=1.0, context_exponent=0.0
    )
    assert (plain.variance_scale, plain.context_exponent) == (1.0, 0.0)
    scaled = ANPBackbone.from_checkpoint(
        result.best_path, n_samples=3, variance_scale=0.5, context_exponent=1.5
    )
    grid = stefan.grid(5, 7)
    contexts = sample_contexts(stefan, 0.6, torch.Generator().manual_seed(0))
    a = plain.predict(stefan, 0.6, contexts, grid, torch.Generator().manual_seed(1))
    b = scaled.predict(stefan, 0.6, contexts, grid, torch.Generator().manual_seed(1))
    torch.testing.assert_close(b.means, a.means, rtol=0, atol=0)
    # the factor, computed here from the same latent draws z at the contexts
    net = plain.network
    tx = torch.stack([contexts.t, contexts.x], dim=-1).float()[None]
    u = contexts.u.float()[None]
    loc, spread = net.encode_latent(tx, u)
    z = loc + spread * torch.randn(3, loc.shape[-1], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mean, std = net.decode(net.decode_hidden(*net.encode_deterministic(tx, u, tx))[0], z)
    factor = float(context_scale_factor(mean.double(), std.double(), contexts.u.double()))
    assert factor != pytest.approx(1.0)
    scale = 0.5 * factor**1.5
    torch.testing.assert_close(b.variances, scale * a.variances)
    # sigma_G = 0: the ProbConserv mean ignores the scale, its variance is scaled with it
    constraint = conservation_constraint(grid, stefan.mass(grid.t, 0.6))
    ca, cb = a.condition(constraint), b.condition(constraint)
    torch.testing.assert_close(cb.means, ca.means, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cb.variances, scale * ca.variances, rtol=1e-6, atol=1e-15)
    with pytest.raises(ValueError, match="variance_scale"):
        ANPBackbone(calibrated.network, variance_scale=0.0)
    with pytest.raises(ValueError, match="context_exponent"):
        ANPBackbone(calibrated.network, context_exponent=-1.0)


def test_calibrate_command_errors_write_nothing(stefan, tmp_path, capsys):
    result = train_anp(stefan, tmp_path, tiny(stefan), options(), progress=False)
    before = result.best_path.read_bytes()
    assert main(["calibrate", str(result.best_path), "--functions", "0"]) == 2
    assert main(["calibrate", str(result.best_path), str(tmp_path / "missing.pt")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[0].startswith("probcons: error: functions:")
    assert errors[1].startswith("probcons: error: checkpoint: no such file")
    assert result.best_path.read_bytes() == before
    args = ["calibrate", str(result.best_path), "--functions", "4", "--samples", "2"]
    assert main(args) == 0
    assert "variance scale" in capsys.readouterr().out
    assert main([*args, "--no-context"]) == 0
    assert "(context factor)^0 " in capsys.readouterr().out
    assert load_checkpoint(result.best_path)["extra"]["context_exponent"] == 0.0
    assert load_checkpoint(result.best_path)["extra"]["variance_scale"] > 0
