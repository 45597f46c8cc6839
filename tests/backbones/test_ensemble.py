"""Deep ensemble: moments from member outputs, low-rank conditioning, training, checkpoints."""

import numpy as np
import pytest
import torch

from probcons.backbones.ensemble import (
    DeepEnsembleBackbone,
    DeepEnsembleTask,
    EnsembleConfig,
    ensemble_prediction,
    gaussian_nll,
)
from probcons.backbones.member_training import (
    MemberTrainingOptions,
    export_members,
    load_ensemble_backbone,
    load_members,
    member_path,
    train_member,
    train_members,
)
from probcons.conditioning import condition
from probcons.constraints import conservation_constraint, dirichlet_constraint
from probcons.covariance import DenseCovariance, LowRankCovariance
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction
from probcons.problems import get_problem, sample_contexts

TINY = EnsembleConfig(hidden=8, layers=1, points_per_function=16)
QUICK = MemberTrainingOptions(steps=6, batch_size=2, checkpoint_every=2)


def random_members(grid, members=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(members, *grid.shape, generator=generator, dtype=torch.float64)
    variances = 0.05 + torch.rand(members, *grid.shape, generator=generator, dtype=torch.float64)
    return means, variances


@pytest.mark.parametrize("ddof", [0, 1])
def test_moments_equal_numpy_from_member_outputs(small_grid, ddof):
    means, variances = random_members(small_grid)
    prediction = ensemble_prediction(means, variances, small_grid, ddof=ddof)
    flat = means.reshape(4, -1).numpy()
    aleatoric = variances.reshape(4, -1).numpy().mean(axis=0)
    spread = np.cov(flat, rowvar=False, ddof=ddof)  # (N, N) sample covariance of member means
    assert isinstance(prediction.covariance, LowRankCovariance)
    np.testing.assert_allclose(prediction.mean.reshape(-1).numpy(), flat.mean(axis=0), atol=1e-14)
    np.testing.assert_allclose(
        prediction.covariance.to_dense().numpy(), np.diag(aleatoric) + spread, atol=1e-12
    )
    if ddof == 0:  # the law of total variance of the equal-weight mixture
        mixture = aleatoric + flat.var(axis=0)
        np.testing.assert_allclose(prediction.variance.reshape(-1).numpy(), mixture, atol=1e-12)


def constraints(grid, noise, seed=1):
    generator = torch.Generator().manual_seed(seed)
    mass = torch.rand(grid.n_t, generator=generator, dtype=torch.float64)
    left = torch.rand(grid.n_t, generator=generator, dtype=torch.float64)
    return conservation_constraint(grid, mass, noise).stack(
        dirichlet_constraint(grid, left=left, right=0.2, noise_std=noise)
    )


@pytest.mark.parametrize("noise", [0.0, 1e-2])
def test_low_rank_conditioning_equals_dense_to_1e_10(small_grid, noise):
    prediction = ensemble_prediction(*random_members(small_grid, members=5), small_grid)
    constraint = constraints(small_grid, noise)
    structured = condition(prediction, constraint)
    dense_prior = GaussianPrediction(
        prediction.mean, DenseCovariance(prediction.covariance.to_dense()), small_grid
    )
    dense = condition(dense_prior, constraint)
    # and an independent NumPy Kalman update
    mean = prediction.mean.reshape(-1).numpy()
    sigma = prediction.covariance.to_dense().numpy()
    matrix = constraint.to_dense().numpy()
    system = matrix @ sigma @ matrix.T + np.diag(constraint.noise_std.reshape(-1).numpy() ** 2)
    gain = np.linalg.solve(system, matrix @ sigma).T
    expected_mean = mean + gain @ (constraint.values.reshape(-1).numpy() - matrix @ mean)
    expected_cov = sigma - gain @ matrix @ sigma
    for posterior in (structured, dense):
        np.testing.assert_allclose(posterior.mean.reshape(-1), expected_mean, atol=1e-10)
        np.testing.assert_allclose(posterior.covariance.to_dense(), expected_cov, atol=1e-10)
        np.testing.assert_allclose(
            posterior.variance.reshape(-1), np.diag(expected_cov), atol=1e-10
        )


def test_ensemble_prediction_validates_arguments(small_grid):
    means, variances = random_members(small_grid)
    with pytest.raises(ValueError, match="means"):
        ensemble_prediction(means[:, :2], variances, small_grid)
    with pytest.raises(ValueError, match="variances"):
        ensemble_prediction(means, -variances, small_grid)
    with pytest.raises(ValueError, match="ddof"):
        ensemble_prediction(means, variances, small_grid, ddof=2)
    with pytest.raises(ValueError, match="members"):
        ensemble_prediction(means[:1], variances[:1], small_grid, ddof=1)
    with pytest.raises(ValueError, match="grid"):
        ensemble_prediction(means, variances, "grid")


def test_beta_nll_weights_points_by_detached_variance():
    mean = torch.zeros(3, requires_grad=True)
    variance = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    target = torch.tensor([1.0, -1.0, 0.5])
    plain = 0.5 * (variance.log() + (target - mean) ** 2 / variance)
    assert torch.allclose(gaussian_nll(mean, variance, target), plain.mean())
    weighted = gaussian_nll(mean, variance, target, beta=0.5)
    assert torch.allclose(weighted, (plain * variance.detach() ** 0.5).mean())
    weighted.backward()
    expected = -(target - mean.detach()) / variance.detach() * variance.detach() ** 0.5 / 3
    assert torch.allclose(mean.grad, expected)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny members trained a few steps on Stefan."""
    directory = tmp_path_factory.mktemp("ensemble")
    task = DeepEnsembleTask("stefan", TINY)
    paths = train_members(task, directory, members=2, options=QUICK, progress=False)
    return task, directory, paths


def test_two_tiny_members_train_and_conserve_mass(trained):
    _, directory, paths = trained
    assert [p.name for p in paths] == ["member-00.pt", "member-01.pt"]
    backbone = load_ensemble_backbone("ensemble", directory)
    assert isinstance(backbone, DeepEnsembleBackbone) and len(backbone.members) == 2
    problem = get_problem("stefan")
    grid = problem.grid(17, 23)
    contexts = sample_contexts(problem, 0.6, torch.Generator().manual_seed(0))
    prediction = backbone.predict(problem, 0.6, contexts, grid)
    assert isinstance(prediction.covariance, LowRankCovariance)
    assert prediction.covariance.rank == 2
    constraint = conservation_constraint(grid, problem.mass(grid.t, 0.6))
    posterior = condition(prediction, constraint)
    draws = posterior.sample(50, torch.Generator().manual_seed(1))
    assert constraint.residual(draws).abs().max() < 1e-10
    assert constraint.residual(posterior.mean).abs().max() < 1e-10
    assert constraint.residual(prediction.mean).abs().max() > 1e-6
    # the members differ (independent initialisation), so the spread is not zero
    assert prediction.covariance.factor.abs().max() > 0


def test_members_are_independent_and_reproducible(trained, tmp_path):
    task, directory, _ = trained
    again = train_member(task, 1, tmp_path, QUICK, progress=False)
    first = load_members(directory)[2]
    second = torch.load(again, weights_only=True)["state"]["model"]
    for key, value in first[1].items():
        assert torch.equal(value, second[key])
    assert not torch.equal(first[0]["network.0.weight"], first[1]["network.0.weight"])


def test_interrupted_member_resumes_exactly(trained, tmp_path, monkeypatch):
    task, directory, _ = trained
    reference = load_members(directory)[2][0]
    calls = {"n": 0}
    original = DeepEnsembleTask.loss

    def failing(self, model, batch_size, generator):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, model, batch_size, generator)

    monkeypatch.setattr(DeepEnsembleTask, "loss", failing)
    with pytest.raises(KeyboardInterrupt):
        train_member(task, 0, tmp_path, QUICK, progress=False)
    monkeypatch.setattr(DeepEnsembleTask, "loss", original)
    stored = torch.load(member_path(tmp_path, 0), weights_only=True)
    assert stored["extra"]["step"] == 2 and not stored["extra"]["done"]
    with pytest.raises(ValueError, match="resume"):
        train_member(task, 0, tmp_path, QUICK, progress=False)
    with pytest.raises(ValueError, match="stopped at step 2"):
        load_members(tmp_path)
    train_member(task, 0, tmp_path, QUICK, resume=True, progress=False)
    resumed = load_members(tmp_path)[2][0]
    for key, value in reference.items():
        assert torch.equal(value, resumed[key])


def test_resume_refuses_other_options(trained, tmp_path):
    task, directory, _ = trained
    other = MemberTrainingOptions(steps=6, batch_size=3, checkpoint_every=2)
    with pytest.raises(ValueError, match="options"):
        train_member(task, 0, directory, other, resume=True, progress=False)


def test_bundle_round_trip_gives_the_same_prediction(trained, tmp_path):
    _, directory, _ = trained
    bundle = export_members(directory, tmp_path / "stefan-ensemble.pt")
    problem = get_problem("stefan")
    grid = problem.grid(9, 11)
    one = load_ensemble_backbone("ensemble", directory).predict(problem, 0.6, None, grid)
    two = load_ensemble_backbone("ensemble", bundle).predict(problem, 0.6, None, grid)
    assert torch.equal(one.mean, two.mean)
    assert torch.equal(one.covariance.factor, two.covariance.factor)
    with pytest.raises(ValueError, match="fno-ensemble"):
        load_ensemble_backbone("fno-ensemble", bundle)


def test_backbone_validates_problem_parameter_and_grid(trained):
    _, directory, _ = trained
    backbone = load_ensemble_backbone("ensemble", directory)
    grid = Grid.uniform((0.0, 0.1), (0.0, 1.0), 5, 5)
    with pytest.raises(ValueError, match="trained on 'stefan'"):
        backbone.predict(get_problem("pme"), 2.0, None, grid)
    with pytest.raises(ValueError, match="u_star"):
        backbone.predict(get_problem("stefan"), 2.0, None, grid)
    with pytest.raises(ValueError, match="grid"):
        backbone.predict(get_problem("stefan"), 0.6, None, "201x201")


def test_options_and_config_validation():
    with pytest.raises(ValueError, match="steps"):
        MemberTrainingOptions(steps=0)
    with pytest.raises(ValueError, match="learning_rate"):
        MemberTrainingOptions(learning_rate=-1.0)
    with pytest.raises(ValueError, match="activation"):
        EnsembleConfig(activation="sigmoid")
    with pytest.raises(ValueError, match="beta"):
        EnsembleConfig(beta=2.0)
    with pytest.raises(ValueError, match="name"):
        DeepEnsembleTask("heat")
    options = MemberTrainingOptions(steps=11, learning_rate=1.0, final_fraction=0.1)
    assert options.learning_rate_at(0) == pytest.approx(1.0)
    assert options.learning_rate_at(10) == pytest.approx(0.1)


@pytest.mark.slow  # two spawned processes import torch: about 15 s on a loaded 2-core machine
def test_parallel_training_matches_sequential(trained, tmp_path):
    task, directory, _ = trained
    train_members(task, tmp_path, members=2, options=QUICK, workers=2, progress=False)
    sequential, parallel = load_members(directory)[2], load_members(tmp_path)[2]
    for one, two in zip(sequential, parallel, strict=True):
        for key, value in one.items():
            assert torch.equal(value, two[key])


def test_command_line_trains_resumes_and_exports(tmp_path, capsys):
    from probcons.backbones.member_training import main

    out, bundle = tmp_path / "run", tmp_path / "stefan-ensemble.pt"
    arguments = ["stefan", "--members", "2", "--steps", "3", "--batch-size", "2", "--width", "8"]
    arguments += ["--layers", "1", "--out", str(out), "--no-progress"]
    assert main(arguments) == 0
    with pytest.raises(ValueError, match="resume"):
        main(arguments)
    assert main([*arguments, "--resume", "--export", str(bundle)]) == 0
    printed = capsys.readouterr().out
    assert "2 members x 3 steps" in printed and str(bundle) in printed
    backbone = load_ensemble_backbone("ensemble", bundle)
    assert backbone.members[0].network[0].out_features == 8
    with pytest.raises(ValueError, match="train_grid"):
        main(["pme", "--backbone", "fno-ensemble", "--train-grid", "64", "--out", str(out)])
