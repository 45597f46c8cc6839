"""Training through the constraint: the conditioned score, its gradient, and the task on the engine."""

import argparse
import math

import pytest
import torch
from training_builders import tiny_anp_config, tiny_options

from probcons import GaussianPrediction, Grid, conservation_constraint
from probcons.backbones.anp import ANPBackbone, AttentiveNeuralProcess
from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.covariance import DiagonalCovariance
from probcons.errors import UsageError
from probcons.problems import get_problem
from probcons.training import TrainingOptions, train_anp
from probcons.training.command import add_train_arguments, run_name, train_command
from probcons.training.constrained import (
    ConstrainedValidation,
    condition_slices,
    constrained_loss,
    load_initial_weights,
    mixture_crps,
    mixture_nll,
    slice_batch,
)


@pytest.fixture
def stefan():
    return get_problem("stefan")


tiny = tiny_anp_config


def options(**overrides):
    settings = dict(
        objective="constrained-nll",
        slice_times=2,
        slice_points=11,
        marginal_samples=3,
        n_validation=4,
        validation_samples=3,
        validate_every=1,
        seed=3,
    )
    return tiny_options(settings, **overrides)


def random_slices(generator, shape=(2, 3, 5)):
    mean = torch.randn(shape, generator=generator, dtype=torch.float64)
    variance = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.2
    return mean, variance


def test_slice_update_is_the_library_update():
    """Per slice: condition_slices equals probcons.condition on the slice's mass row."""
    generator = torch.Generator().manual_seed(0)
    grid = Grid(torch.tensor([0.1, 0.4, 0.7]), torch.linspace(0.0, 1.0, 5))
    mean, variance = random_slices(generator, (3, 5))
    mass = torch.tensor([0.3, -0.2, 1.1], dtype=torch.float64)
    ours_mean, ours_variance = condition_slices(mean, variance, grid.trapezoid_weights(), mass)
    prior = GaussianPrediction(mean, DiagonalCovariance(variance.reshape(-1)), grid)
    posterior = prior.condition(conservation_constraint(grid, mass))
    torch.testing.assert_close(ours_mean, posterior.mean, rtol=0, atol=1e-14)
    torch.testing.assert_close(ours_variance, posterior.variance, rtol=0, atol=1e-14)


def conditioned_score(score, weights, mass, truth):
    def function(mean, variance):
        conditioned_mean, conditioned_variance = condition_slices(mean, variance, weights, mass)
        return score(conditioned_mean, conditioned_variance, truth).sum()

    return function


@pytest.mark.parametrize("score", [mixture_nll, mixture_crps], ids=["nll", "crps"])
def test_conditioned_score_gradient_matches_finite_differences(score):
    """d score(condition(mu, v)) / d(mu, v) for a 2-component mixture of 3 x 5 slices, float64."""
    generator = torch.Generator().manual_seed(1)
    mean, variance = random_slices(generator)  # (S = 2, J = 3, n_x = 5)
    weights = Grid(torch.tensor([0.0]), torch.linspace(0.0, 1.0, 5)).trapezoid_weights()
    mass = torch.randn(3, generator=generator, dtype=torch.float64)
    truth = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    inputs = (mean.requires_grad_(True), variance.requires_grad_(True))
    assert torch.autograd.gradcheck(
        conditioned_score(score, weights, mass, truth), inputs, eps=1e-6, atol=1e-7, rtol=1e-5
    )


def test_mixture_scores_match_their_definitions():
    """NLL: the log of the averaged densities; CRPS: the integral of (F - 1{y <= x})^2."""
    means = torch.tensor([[0.0], [1.0], [-0.5]], dtype=torch.float64)
    variances = torch.tensor([[0.25], [0.5], [0.1]], dtype=torch.float64)
    truth = torch.tensor([0.3], dtype=torch.float64)
    normal = torch.distributions.Normal(means, variances.sqrt())
    density = normal.log_prob(truth).exp().mean(0)
    torch.testing.assert_close(mixture_nll(means, variances, truth), -density.log())
    below = torch.linspace(-12, 0.3, 200_001, dtype=torch.float64)  # split at the truth
    above = torch.linspace(0.3, 12, 200_001, dtype=torch.float64)
    numeric = torch.trapezoid(normal.cdf(below).mean(0) ** 2, below) + torch.trapezoid(
        (1 - normal.cdf(above).mean(0)) ** 2, above
    )
    torch.testing.assert_close(mixture_crps(means, variances, truth)[0], numeric, atol=1e-7, rtol=0)


def test_conditioned_training_predictions_conserve_mass(stefan):
    generator = torch.Generator().manual_seed(2)
    slices = slice_batch(stefan, stefan.sample_parameters(3, generator), generator, 4, 21)
    torch.manual_seed(0)
    network = AttentiveNeuralProcess(tiny(stefan)).network
    with torch.no_grad():
        terms = constrained_loss(network, slices, samples=5)
    defect = (terms.draws.means * slices.weights).sum(-1) - slices.mass[:, None]  # (B, S, J)
    assert float(defect.abs().max()) <= 1e-10
    assert float(terms.conservation) <= 1e-10
    unconditioned = (terms.draws.prior_means * slices.weights).sum(-1) - slices.mass[:, None]
    assert float(unconditioned.abs().max()) > 1e-3  # the network alone does not conserve
    assert terms.draws.means.dtype == torch.float64
    assert bool((terms.draws.variances <= terms.draws.prior_variances).all())
    # every slice of the batch holds the exact solution on whole x-slices
    times = slices.times[0]
    assert bool((times[1:] > times[:-1]).all())
    assert slices.batch.target_tx.shape == (3, 4 * 21, 2)


def test_a_tiny_anp_lowers_its_conditioned_nll(stefan, tmp_path):
    chosen = options(epochs=15, learning_rate=3e-3, validate_every=30)
    config = tiny(stefan)
    validation = ConstrainedValidation(stefan, chosen)
    torch.manual_seed(chosen.seed)  # the engine's seed before build: the untrained weights
    before = validation.evaluate(AttentiveNeuralProcess(config))
    result = train_anp(stefan, tmp_path, config, chosen, progress=False)
    assert result.steps == 30
    after = result.history[-1]
    assert after["val_nll"] < before["val_nll"] - 0.5
    assert after["val_conservation"] <= 1e-10
    best = ANPBackbone.from_checkpoint(result.best_path, n_samples=2)
    assert best.variance_scale == 1.0


@pytest.mark.parametrize("objective", ["constrained-nll", "constrained-crps"])
def test_resume_reproduces_the_next_step(stefan, tmp_path, objective):
    chosen = options(objective=objective, epochs=1, softc_lambda=0.5, n_collocation=4)
    whole = train_anp(stefan, tmp_path / "whole", tiny(stefan), chosen, progress=False)
    first = train_anp(stefan, tmp_path / "split", tiny(stefan), chosen, progress=False, max_steps=1)
    assert first.steps == 1
    rest = train_anp(stefan, tmp_path / "split", tiny(stefan), chosen, resume=True, progress=False)
    assert rest.steps == whole.steps == 2
    assert rest.history[1]["loss"] == whole.history[1]["loss"]
    assert rest.history[1]["softc"] > 0
    assert (rest.history[1]["val_crps"], rest.history[1]["val_nll"]) == (
        whole.history[1]["val_crps"],
        whole.history[1]["val_nll"],
    )
    a = load_checkpoint(whole.last_path)["state"]["network"]
    b = load_checkpoint(rest.last_path)["state"]["network"]
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0)


def test_fine_tuning_starts_from_the_init_checkpoint(stefan, tmp_path):
    torch.manual_seed(11)
    start = AttentiveNeuralProcess(tiny(stefan)).network
    init = tmp_path / "start.pt"
    hyper = {"problem": "stefan", "anp": tiny(stefan).to_dict(), "training": {}}
    save_checkpoint(init, {"network": start.state_dict()}, hyper, {})
    chosen = options(init=str(init), learning_rate=1e-12, epochs=1)
    result = train_anp(stefan, tmp_path / "run", tiny(stefan), chosen, progress=False)
    tuned = load_checkpoint(result.last_path)["state"]["network"]
    for key, value in start.state_dict().items():
        torch.testing.assert_close(tuned[key], value, rtol=0, atol=1e-9)
    other = AttentiveNeuralProcess(tiny(stefan, hidden=8)).network  # decoder width 16
    with pytest.raises(UsageError, match="init: .* other hyperparameters"):
        load_initial_weights(other, init)
    with pytest.raises(UsageError, match="init: expected an ANP checkpoint file"):
        load_initial_weights(other, tmp_path / "missing.pt")


def test_options_and_names():
    with pytest.raises(UsageError, match="objective"):
        TrainingOptions(objective="constrained")
    with pytest.raises(UsageError, match="slice_points"):
        TrainingOptions(objective="constrained-nll", slice_points=1)
    with pytest.raises(UsageError, match="slice_times"):
        TrainingOptions(objective="constrained-nll", slice_times=0)
    with pytest.raises(UsageError, match="likelihood_beta"):
        TrainingOptions(objective="constrained-crps", likelihood_beta=1.0)
    assert run_name("stefan", 0.0, "constrained-nll") == "stefan-anp-e2e"
    assert run_name("pme", 1.0, "constrained-crps") == "pme-softc-anp-e2e"
    assert run_name("pme", 0.0) == "pme-anp"


def test_train_command_fine_tunes_and_calibrates_the_conditioned_predictive(tmp_path, capsys):
    parser = add_train_arguments(argparse.ArgumentParser())
    common = ["stefan", "--epochs", "1", "--n-functions", "4", "--batch-size", "4"]
    sizes = ["--hidden", "8", "--heads", "2", "--latent-dim", "2", "--decoder-width", "8"]
    first = parser.parse_args(
        common
        + sizes
        + ["--n-target", "10", "--out", str(tmp_path / "a"), "--no-progress"]
        + ["--calibration-functions", "4"]
    )
    assert train_command(first) == 0
    tuned = parser.parse_args(
        common
        + [
            "--objective",
            "constrained-nll",
            "--slice-points",
            "11",
            "--slice-times",
            "2",
            "--marginal-samples",
            "2",
            "--init",
            str(tmp_path / "a" / "best.pt"),
            "--out",
            str(tmp_path / "b"),
            "--export",
            str(tmp_path / "e2e.pt"),
            "--calibration-functions",
            "4",
            "--no-progress",
        ]
    )
    assert train_command(tuned) == 0
    out = capsys.readouterr().out
    assert "trained stefan-anp-e2e" in out and "calibrated the conditioned predictive" in out
    shipped = load_checkpoint(tmp_path / "e2e.pt")
    assert shipped["hyperparameters"]["training"]["objective"] == "constrained-nll"
    assert shipped["hyperparameters"]["anp"]["hidden"] == 8
    # the conditioned fit, not the unconditioned one (which would undo what was trained)
    assert shipped["extra"]["variance_scale"] == 1.0 and "calibration" not in shipped["extra"]
    assert shipped["extra"]["count_scales"]["counts"] == [1, 3, 10, 30, 100]
    assert math.isfinite(shipped["extra"]["val_nll"])


def test_scores_with_few_contexts_use_the_library_posterior(stefan, tmp_path, capsys):
    from probcons.training import constrained_scores

    torch.manual_seed(5)
    network = AttentiveNeuralProcess(tiny(stefan)).network
    path = tmp_path / "tiny.pt"
    hyper = {"problem": "stefan", "anp": tiny(stefan).to_dict(), "training": {}}
    save_checkpoint(path, {"network": network.state_dict()}, hyper, {"variance_scale": 0.5})
    backbone = ANPBackbone.from_checkpoint(path, n_samples=3)
    few = constrained_scores.conditioned_scores(backbone, stefan, 2, 1, n_slices=2, n_points=11)
    assert few["conservation"] <= 1e-10
    assert 0 <= few["coverage_90"] <= 1 and math.isfinite(few["nll"]) and few["crps"] > 0
    assert (
        constrained_scores.main(
            [
                str(path),
                "--problem",
                "stefan",
                "--contexts",
                "1,100",
                "--n-functions",
                "2",
                "--samples",
                "2",
                "--points",
                "11",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert table.count(str(path)) == 2


def test_sparse_context_batches_keep_a_random_k(stefan):
    from probcons.training.constrained import sparse_contexts

    generator = torch.Generator().manual_seed(4)
    slices = slice_batch(stefan, stefan.sample_parameters(3, generator), generator, 2, 11)
    chosen = options(min_contexts=1, deterministic_dropout=0.5)
    sizes = set()
    for _ in range(6):
        batch = sparse_contexts(slices.batch, chosen, generator)
        sizes.add(batch.context_u.shape[1])
        assert batch.drop_deterministic.shape == (3,)
        assert torch.equal(batch.target_u, slices.batch.target_u)
    assert len(sizes) > 1 and max(sizes) <= 100
    assert sparse_contexts(slices.batch, options(), generator) is slices.batch
