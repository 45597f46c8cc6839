"""The BOON heat ensemble trained through the constraint (probcons.backbones.boon_ensemble_e2e)."""

import pytest
import torch

from probcons.backbones.boon_ensemble import BoonEnsemble, conserve, heat_constraints
from probcons.backbones.boon_ensemble_e2e import (
    EnsembleTask,
    HeatRows,
    JointEnsemble,
    conditioned_marginals,
    ensemble_loss,
    ensemble_marginals,
    fine_tune,
    gaussian_crps,
    gaussian_nll,
    heat_rows,
    marginal_scores,
)
from probcons.boon.training import TrainingConfig, input_channels, model_inputs, train_model
from probcons.errors import UsageError
from probcons.problems.operators import make_problem
from probcons.training import engine

torch.set_num_threads(1)

TINY = TrainingConfig(
    modes=4, width=8, layers=2, padding=4, projection_width=16, epochs=4, batch_size=8
)


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
    models = [train_model("boon", problem, train, TINY, seed)[0].double() for seed in (1, 2, 3)]
    ensemble = BoonEnsemble(models, "boon", problem)
    ensemble.calibrate(validation)
    return ensemble


def test_conditioned_marginals_equal_the_probconserv_posterior(heat, ensemble):
    problem, _, _, test = heat
    marginals = ensemble_marginals(ensemble, test)
    for index, prediction in enumerate(ensemble.predict(test)):
        posterior = conserve(prediction, heat_constraints(problem, test, index))
        assert torch.allclose(marginals.mean[index], posterior.mean.flatten(), atol=1e-12)
        variance = posterior.variance.flatten()
        assert torch.allclose(marginals.variance[index], variance, rtol=1e-8, atol=1e-15)
        assert torch.allclose(marginals.prior_variance[index], prediction.variance.flatten())


def test_conditioned_predictions_satisfy_conservation_and_the_boundary_condition(heat, ensemble):
    problem, _, _, test = heat
    marginals = ensemble_marginals(ensemble, test)
    rows = heat_rows(problem, test)
    defect = (rows.matrix @ marginals.mean[..., None])[..., 0] - rows.values
    assert float(defect.abs().max()) < 1e-10
    mean = marginals.mean.reshape(test.targets.shape)
    assert float(problem.condition.residual(mean, test.boundary).abs().max()) < 1e-10
    # the members alone miss the mass rows (the update does the work)
    prior = (rows.matrix @ marginals.prior_mean[..., None])[..., 0] - rows.values
    assert float(prior.abs().max()) > 1e-6


@pytest.mark.parametrize("objective", ["nll", "crps"])
def test_conditioned_loss_gradients_match_finite_differences(heat, objective):
    problem, _, _, test = heat
    data = test.subset(slice(0, 2))
    rows = heat_rows(problem, data)
    generator = torch.Generator().manual_seed(5)
    truth = data.targets.flatten(1)
    members = truth + 0.05 * torch.randn(3, *truth.shape, generator=generator, dtype=torch.float64)
    members.requires_grad_(True)
    log_s = torch.tensor(-6.0, dtype=torch.float64, requires_grad=True)
    score = gaussian_nll if objective == "nll" else gaussian_crps

    def loss(members, log_s):
        marginals = conditioned_marginals(members, log_s.exp(), rows)
        return score(marginals.mean, marginals.variance, truth).mean()

    assert torch.autograd.gradcheck(loss, (members, log_s), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_fine_tuning_lowers_the_conditioned_validation_loss(heat, ensemble):
    problem, train, validation, test = heat
    config = TrainingConfig(
        modes=4,
        width=8,
        layers=2,
        padding=4,
        projection_width=16,
        epochs=4,
        batch_size=8,
        learning_rate=1e-3,
    )
    tuned, log = fine_tune(ensemble, train, config, "nll", seed=0, validation=validation)
    history = log["validation"]
    assert len(history) == config.epochs + 1
    assert min(history[1:]) < history[0] - 0.05
    assert log["best_epoch"] >= 0
    # BOON's exact correction survives the fine-tuning; the original members are untouched
    for members in tuned.member_predictions(test):
        assert float(problem.condition.residual(members, test.boundary).abs().max()) < 1e-10
    assert tuned.models[0] is not ensemble.models[0]
    scores = marginal_scores(ensemble_marginals(tuned, test), test.targets)
    assert all(
        torch.isfinite(torch.tensor(value)) for row in scores.values() for value in row.values()
    )


def test_task_resumes_from_its_checkpoint(heat, ensemble, tmp_path):
    problem, train, _, _ = heat
    path = tmp_path / "e2e.pt"

    def task():
        return EnsembleTask(ensemble.models, problem, train, TINY, ensemble.noise_variance)

    whole, _, _ = engine.train(task(), 0, checkpoint_every=3)
    engine.train(task(), 0, path, checkpoint_every=3, max_steps=5)
    resumed, _, _ = engine.train(task(), 0, path, resume=True, checkpoint_every=3)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_arguments_are_checked(heat, ensemble):
    problem, train, _, _ = heat
    rows = heat_rows(problem, train)
    members = ensemble.member_predictions(train)
    with pytest.raises(UsageError, match="members"):
        conditioned_marginals(members[:1], 1e-6, rows)
    with pytest.raises(UsageError, match="noise_variance"):
        conditioned_marginals(members, 0.0, rows)
    with pytest.raises(UsageError, match="rows"):
        conditioned_marginals(members, 1e-6, HeatRows(rows.matrix[:2], rows.values[:2]))
    with pytest.raises(UsageError, match="objective"):
        network = JointEnsemble(ensemble.models, 1e-6)
        inputs = model_inputs("boon", train, input_channels(ensemble.models[0]))
        ensemble_loss(network, inputs, train.boundary, rows, train.targets, "mse")
    with pytest.raises(UsageError, match="problem"):
        heat_rows(make_problem("stokes", n_x=17, n_times=2), train)
