"""The 2-D BOON / FNO ensemble as a Posterior on (t, x, y), and its exact physics rows."""

import math

import pytest
import torch

from probcons.backbones.boon_ensemble2d import (
    BoonEnsemble2d,
    balance_residual,
    circulation_residual,
    flat_truth,
    member_seed,
    physics_constraint,
)
from probcons.boon.training2d import TrainingConfig2d
from probcons.errors import UsageError
from probcons.posterior import Posterior
from probcons.problems.operators2d import make_problem2d

torch.set_num_threads(1)

TINY = TrainingConfig2d(
    modes=3, width=4, layers=2, padding=2, projection_width=8, epochs=1, batch_size=4
)
EXACT = 1e-10


@pytest.fixture(scope="module", params=["cavity", "wave2d"])
def trained(request):
    problem = make_problem2d(request.param, n=12, n_steps=3, t_end=0.24)
    train, test = problem.generate(3, 0), problem.generate(2, 1000)
    ensemble, _ = BoonEnsemble2d.train(problem, train, TINY, members=2, seed=0, kind="boon")
    ensemble.calibrate(problem.generate(2, 2000))
    return problem, ensemble, test


def test_prediction_is_a_low_rank_posterior_on_the_flat_grid(trained):
    problem, ensemble, test = trained
    predictions = ensemble.predict(test)
    members = ensemble.member_rollouts(test)  # (E, n, m, C, n, n)
    m = problem.n_steps - problem.history + 1
    assert members.shape == (2, 2, m, problem.channels, 12, 12)
    p = predictions[1]
    assert isinstance(p, Posterior) and p.grid.shape == (m, problem.channels * 144)
    flat = members.reshape(2, 2, m, -1)
    assert torch.allclose(p.mean, flat[:, 1].mean(0))
    spread = flat[:, 1].var(0, unbiased=True)
    assert torch.allclose(p.variance, spread + ensemble.noise_variance)
    assert ensemble.noise_variance >= 1e-8
    assert 0.0 <= ensemble.coverage(test) <= 1.0


def test_boon_members_satisfy_the_walls_and_the_posterior_every_row(trained):
    problem, ensemble, test = trained
    predictions = ensemble.predict(test)
    posteriors = ensemble.posteriors(test, predictions)
    for i, (prior, posterior) in enumerate(zip(predictions, posteriors, strict=True)):
        constraint = physics_constraint(problem, test.states[i])
        walls = [k for k, name in enumerate(constraint.names) if name != "balance"]
        # BOON's mean is exact on the walls before conditioning
        assert constraint.residual(prior.mean)[:, walls].abs().max() < EXACT
        assert constraint.residual(posterior.mean).abs().max() < EXACT
        draws = posterior.sample(5, torch.Generator().manual_seed(i))
        assert constraint.residual(draws).abs().max() < EXACT
        if problem.name == "cavity":  # Stokes: the walls imply the circulation
            assert circulation_residual(problem, draws).abs().max() < EXACT
        else:
            assert balance_residual(problem, draws, test.states[i, 0, 0]).abs().max() < EXACT


def test_rows_hold_on_the_solver_trajectories(trained):
    problem, _, test = trained
    truth = flat_truth(problem, test)
    for i in range(len(test)):
        assert physics_constraint(problem, test.states[i]).residual(truth[i]).abs().max() < 1e-12


def test_conditioning_matches_brute_force_dense_gaussian(trained):
    """mu~ = mu - S G^T (G S G^T)^-1 (G mu - b), Sigma~ diagonal, on the dense covariance."""
    problem, ensemble, test = trained
    prior = ensemble.predict(test)[0]
    # perturb the mean off the rows so that the update moves it
    shifted = type(prior)(prior.mean + 0.01, prior.covariance, prior.grid)
    constraint = physics_constraint(problem, test.states[0])
    from probcons.backbones.boon_ensemble import conserve

    posterior = conserve(shifted, [constraint])
    g = constraint.to_dense().double()
    covariance = prior.covariance.to_dense()
    mean = shifted.mean.reshape(-1)
    s = g @ covariance @ g.T
    gain = covariance @ g.T @ torch.linalg.pinv(s, hermitian=True)
    expected = mean - gain @ (g @ mean - constraint.values.reshape(-1))
    variance = torch.diagonal(covariance - gain @ g @ covariance)
    assert torch.allclose(posterior.mean.reshape(-1), expected, atol=1e-10)
    assert torch.allclose(posterior.variance.reshape(-1), variance.clamp_min(0), atol=1e-10)


def test_member_seeds_differ_and_checks_name_the_argument():
    assert len({member_seed(0, e) for e in range(4)}) == 4
    assert member_seed(1, 0) != member_seed(0, 0)
    problem = make_problem2d("wave2d", n=12, n_steps=3, t_end=0.24)
    with pytest.raises(UsageError, match="models: expected at least 2 ensemble members, got 1"):
        BoonEnsemble2d([object()], "boon", problem)
    with pytest.raises(UsageError, match="kind: expected one of \\['boon', 'fno'\\], got 'gp'"):
        BoonEnsemble2d([object(), object()], "gp", problem)
    with pytest.raises(UsageError, match="states: expected"):
        physics_constraint(problem, torch.zeros(3, 1, 12, 12))
    assert math.isfinite(problem.t_end)


def test_the_marginal_covariance_keeps_the_moments_and_conditions_on_the_points_it_reads(
    trained,
):
    """covariance="marginal": the same mean and marginal variances in a DiagonalCovariance; its
    posterior holds every row, and equals the dense update with diag(Sigma) in place of Sigma."""
    from probcons.backbones.boon_ensemble import conserve
    from probcons.covariance import DiagonalCovariance

    problem, ensemble, test = trained
    marginal = BoonEnsemble2d(
        ensemble.models, ensemble.kind, problem, ensemble.noise_variance, covariance="marginal"
    )
    rollouts = ensemble.member_rollouts(test)
    sample, diagonal = ensemble.predict(test, rollouts)[0], marginal.predict(test, rollouts)[0]
    assert isinstance(diagonal.covariance, DiagonalCovariance)
    assert torch.equal(diagonal.mean, sample.mean)
    assert torch.equal(diagonal.variance, sample.variance)
    constraint = physics_constraint(problem, test.states[0])
    shifted = type(diagonal)(diagonal.mean + 0.01, diagonal.covariance, diagonal.grid)
    posterior = conserve(shifted, [constraint])
    assert constraint.residual(posterior.mean).abs().max() < EXACT
    g = constraint.to_dense().double()
    v = diagonal.variance.reshape(-1)
    mean = shifted.mean.reshape(-1)
    gain = (v[:, None] * g.T) @ torch.linalg.pinv(g @ (v[:, None] * g.T), hermitian=True)
    expected = mean - gain @ (g @ mean - constraint.values.reshape(-1))
    assert torch.allclose(posterior.mean.reshape(-1), expected, atol=1e-10)
    with pytest.raises(UsageError, match="covariance"):
        BoonEnsemble2d(ensemble.models, ensemble.kind, problem, covariance="localised")
