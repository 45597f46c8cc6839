"""ANP: Pyro model/guide and ELBO, training signal, backbone predictions, ProbConserv per sample."""

import math

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from probcons.backbones.anp import (
    ANPBackbone,
    ANPConfig,
    ANPNetwork,
    AttentiveNeuralProcess,
    bayesian_aggregation,
    elbo_loss,
    marginal_likelihood_loss,
)
from probcons.constraints import conservation_constraint
from probcons.mixture import GaussianMixture
from probcons.problems import get_problem, sample_contexts
from probcons.training.data import sample_batch

MASS_TOLERANCE = 1e-10


def tiny_config(problem, **overrides):
    sizes = dict(
        hidden=16,
        heads=2,
        latent_dim=4,
        latent_self_attention=1,
        deterministic_self_attention=1,
        cross_attention=1,
        decoder_layers=2,
        decoder_width=16,
    )
    sizes.update(overrides)
    return ANPConfig(t_range=problem.t_range, x_range=problem.x_range, **sizes)


@pytest.fixture
def stefan():
    return get_problem("stefan")


@pytest.fixture
def batch(stefan):
    generator = torch.Generator().manual_seed(0)
    parameters = stefan.sample_parameters(4, generator)
    return sample_batch(stefan, parameters, generator, n_target=50)


def test_batch_shapes(batch):
    assert batch.context_tx.shape == (4, 100, 2)
    assert batch.context_u.shape == (4, 100)
    assert batch.target_tx.shape == (4, 50, 2)
    assert batch.target_u.shape == (4, 50)


def test_elbo_matches_pyro_trace_mean_field(stefan, batch):
    torch.manual_seed(1)
    anp = AttentiveNeuralProcess(tiny_config(stefan))
    torch.manual_seed(2)
    ours = elbo_loss(anp, batch, kl_weight=1.0, free_bits=0.0)
    torch.manual_seed(2)
    pyro_loss = TraceMeanField_ELBO().differentiable_loss(anp.model, anp.guide, batch)
    n_functions, n_target = batch.target_u.shape
    torch.testing.assert_close(ours.loss, pyro_loss / (n_functions * n_target))
    assert float(ours.kl.detach()) >= 0


def test_free_bits_floor_the_penalised_kl(stefan, batch):
    torch.manual_seed(1)
    anp = AttentiveNeuralProcess(tiny_config(stefan))
    torch.manual_seed(2)
    plain = elbo_loss(anp, batch, free_bits=0.0)
    torch.manual_seed(2)
    floored = elbo_loss(anp, batch, free_bits=10.0)
    n_target = batch.target_u.shape[1]
    latent_dim = anp.config.latent_dim
    expected = plain.nll + 10.0 * latent_dim / n_target
    torch.testing.assert_close(floored.loss, expected)


def test_kl_capacity_penalises_the_distance_to_the_target(stefan, batch):
    """loss = nll + |KL - C| / T with KL the batch-mean KL per function (same z draw)."""
    torch.manual_seed(1)
    anp = AttentiveNeuralProcess(tiny_config(stefan))
    n_target = batch.target_u.shape[1]
    for capacity in (1e-6, 5.0):
        torch.manual_seed(2)
        terms = elbo_loss(anp, batch, kl_capacity=capacity)
        expected = terms.nll + (terms.kl - capacity).abs() / n_target
        torch.testing.assert_close(terms.loss, expected)


def test_beta_nll_gives_every_target_the_squared_error_gradient(stefan, batch):
    """beta = 1: d loss / d mean_i = (mean_i - u_i) / (mean_j sigma_j^2 B T), whatever sigma_i;
    beta = 0.5 with all sigma equal is the plain ELBO."""
    torch.manual_seed(1)
    anp = AttentiveNeuralProcess(tiny_config(stefan))
    torch.manual_seed(2)
    terms = elbo_loss(anp, batch, likelihood_beta=1.0)
    (gradient,) = torch.autograd.grad(terms.loss, terms.mean)
    ratio = gradient / (terms.mean - batch.target_u).detach()
    torch.testing.assert_close(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4, atol=0)
    uniform = AttentiveNeuralProcess(tiny_config(stefan, min_scale=0.5))
    with torch.no_grad():  # the decoder's scale output is min_scale + softplus(-inf) = 0.5
        uniform.network.decoder[-1].weight[1].zero_()
        uniform.network.decoder[-1].bias[1] = -1e4
    torch.manual_seed(2)
    plain = elbo_loss(uniform, batch)
    torch.manual_seed(2)
    weighted = elbo_loss(uniform, batch, likelihood_beta=0.5)
    torch.testing.assert_close(weighted.loss, plain.loss)


@pytest.mark.parametrize(
    ("objective", "aggregation"),
    [("elbo", "mean"), ("marginal-likelihood", "mean"), ("elbo", "bayes")],
)
def test_tiny_anp_loss_falls(stefan, batch, objective, aggregation):
    torch.manual_seed(0)
    anp = AttentiveNeuralProcess(tiny_config(stefan, latent_aggregation=aggregation))
    optimizer = torch.optim.Adam(anp.network.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        if objective == "elbo":
            terms = elbo_loss(anp, batch)
        else:
            terms = marginal_likelihood_loss(anp, batch, 4)
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
        losses.append(float(terms.loss.detach()))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_marginal_likelihood_loss_mixes_the_joint_likelihood_over_prior_draws(stefan, batch):
    """loss = -mean_b log mean_s exp(sum_t log N(u_bt | mu_bst, sigma_bst^2)) / T for the same
    draws z_bs = loc_b + scale_b eps_bs; at most the mean over draws of -log p (Jensen); with one
    draw, equal to it."""
    torch.manual_seed(1)
    anp = AttentiveNeuralProcess(tiny_config(stefan))
    net = anp.network
    n_functions, n_target = batch.target_u.shape
    torch.manual_seed(2)
    terms = marginal_likelihood_loss(anp, batch, 5)
    torch.manual_seed(2)
    loc, scale = net.encode_latent(batch.context_tx, batch.context_u)
    eps = torch.randn(n_functions, 5, loc.shape[1])
    joint = []
    representation, queries = net.encode_deterministic(
        batch.context_tx, batch.context_u, batch.target_tx
    )
    for s in range(5):
        mu, sigma = net.decode(net.decode_hidden(representation, queries), loc + scale * eps[:, s])
        if s == 0:
            torch.testing.assert_close(mu, terms.mean)
        joint.append(torch.distributions.Normal(mu, sigma).log_prob(batch.target_u).sum(-1))
    joint = torch.stack(joint)  # (S, B)
    expected = -(torch.logsumexp(joint, 0) - math.log(5)).mean() / n_target
    torch.testing.assert_close(terms.loss, expected)
    torch.testing.assert_close(terms.nll, -joint.mean() / n_target)
    assert float(terms.loss.detach()) <= float(terms.nll.detach()) and float(terms.kl) >= 0
    torch.manual_seed(2)
    single = marginal_likelihood_loss(anp, batch, 1)
    torch.testing.assert_close(single.loss, single.nll)
    # the prior's encoder is trained by it (the ELBO's KL is not needed for that)
    (gradient,) = torch.autograd.grad(terms.loss, net.latent_head[-1].weight)
    assert float(gradient.abs().max()) > 0
    with pytest.raises(ValueError, match="samples"):
        marginal_likelihood_loss(anp, batch, 0)


def test_model_runs_under_pyro_svi(stefan, batch):
    pyro.clear_param_store()
    torch.manual_seed(0)
    anp = AttentiveNeuralProcess(tiny_config(stefan))
    svi = pyro.infer.SVI(anp.model, anp.guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    first = svi.step(batch)
    for _ in range(10):
        last = svi.step(batch)
    assert last < first
    pyro.clear_param_store()


def test_config_validation():
    with pytest.raises(ValueError, match="heads"):
        ANPConfig(hidden=10, heads=3)
    with pytest.raises(ValueError, match="t_range"):
        ANPConfig(t_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="hidden"):
        ANPConfig(hidden=0)
    with pytest.raises(ValueError, match="unknown"):
        ANPConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="latent_aggregation: expected one of mean, bayes"):
        ANPConfig(latent_aggregation="max")
    assert ANPConfig().latent_aggregation == "bayes"
    config = ANPConfig(t_range=(0.0, 0.1), latent_aggregation="mean")
    assert ANPConfig.from_dict(config.to_dict()) == config
    old = ANPConfig().to_dict()
    del old["latent_aggregation"]  # a checkpoint written before the option: mean pooling
    assert ANPConfig.from_dict(old).latent_aggregation == "mean"


def test_bayesian_aggregation_is_gaussian_conditioning():
    """loc, scale equal the conditional of z ~ N(0, 1) given r_c = z + e_c, e_c ~ N(0, v_c),
    computed from the joint covariance by the Schur complement, per dimension."""
    generator = torch.Generator().manual_seed(0)
    n, d = 7, 3
    observation = torch.randn(2, n, d, generator=generator, dtype=torch.float64)
    noise = 0.05 + torch.rand(2, n, d, generator=generator, dtype=torch.float64)
    loc, scale = bayesian_aggregation(observation, noise)
    for b in range(2):
        for j in range(d):
            v = noise[b, :, j]
            cross = torch.ones(n, dtype=torch.float64)  # Cov(z, r) = 1
            cov_r = torch.ones(n, n, dtype=torch.float64) + torch.diag(v)
            gain = torch.linalg.solve(cov_r, cross)
            torch.testing.assert_close(loc[b, j], gain @ observation[b, :, j])
            torch.testing.assert_close(scale[b, j] ** 2, 1 - gain @ cross)


def test_bayes_aggregated_latent_narrows_as_contexts_are_added(stefan, batch):
    """Without self-attention before pooling, each context adds precision: the scale of
    p(z | C) shrinks (never grows) as C grows and does not depend on the contexts' order;
    mean pooling gives a scale that ignores the set's size (here: equal for copies of C)."""
    torch.manual_seed(5)
    net = ANPNetwork(tiny_config(stefan, latent_self_attention=0, latent_aggregation="bayes"))
    scales = [
        net.encode_latent(batch.context_tx[:, :k], batch.context_u[:, :k])[1] for k in (1, 10, 100)
    ]
    assert torch.all(scales[1] < scales[0]) and torch.all(scales[2] < scales[1])
    order = torch.randperm(100)
    loc, scale = net.encode_latent(batch.context_tx, batch.context_u)
    loc_p, scale_p = net.encode_latent(batch.context_tx[:, order], batch.context_u[:, order])
    torch.testing.assert_close(loc_p, loc)
    torch.testing.assert_close(scale_p, scale)
    mean_net = ANPNetwork(tiny_config(stefan, latent_self_attention=0, latent_aggregation="mean"))
    twice_tx = batch.context_tx.repeat(1, 2, 1)
    twice_u = batch.context_u.repeat(1, 2)
    _, once = mean_net.encode_latent(batch.context_tx, batch.context_u)
    _, doubled = mean_net.encode_latent(twice_tx, twice_u)
    torch.testing.assert_close(doubled, once)
    _, bayes_doubled = net.encode_latent(twice_tx, twice_u)
    assert torch.all(bayes_doubled < scale)


@pytest.fixture
def prediction(stefan):
    torch.manual_seed(0)
    network = ANPNetwork(tiny_config(stefan))
    backbone = ANPBackbone(network, n_samples=6, problem="stefan")
    generator = torch.Generator().manual_seed(3)
    contexts = sample_contexts(stefan, 0.6, generator)
    grid = stefan.grid(11, 21)
    return backbone.predict(stefan, 0.6, contexts, grid, generator), grid


def test_predict_returns_a_float64_mixture(prediction):
    mixture, grid = prediction
    assert isinstance(mixture, GaussianMixture)
    assert len(mixture) == 6
    assert mixture.mean.shape == grid.shape and mixture.mean.dtype == torch.float64
    assert bool((mixture.variance > 0).all())
    assert 0 <= mixture.latent_variance_share() <= 1


def test_predict_is_reproducible_with_a_generator(stefan):
    torch.manual_seed(0)
    backbone = ANPBackbone(ANPNetwork(tiny_config(stefan)), n_samples=3, problem="stefan")
    contexts = sample_contexts(stefan, 0.6, torch.Generator().manual_seed(1))
    grid = stefan.grid(5, 7)
    a = backbone.predict(stefan, 0.6, contexts, grid, torch.Generator().manual_seed(9))
    b = backbone.predict(stefan, 0.6, contexts, grid, torch.Generator().manual_seed(9))
    torch.testing.assert_close(a.means, b.means)


def test_predict_rejects_another_problem(stefan):
    backbone = ANPBackbone(ANPNetwork(tiny_config(stefan)), n_samples=2, problem="stefan")
    diffusion = get_problem("diffusion")
    contexts = sample_contexts(diffusion, 2.0, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="problem"):
        backbone.predict(diffusion, 2.0, contexts, diffusion.grid(5, 5))


def test_probconserv_on_anp_samples_conserves_mass(stefan, prediction):
    mixture, grid = prediction
    constraint = conservation_constraint(grid, stefan.mass(grid.t, 0.6))
    conditioned = mixture.condition(constraint)
    for component in conditioned.components:
        assert float(constraint.residual(component.mean).abs().max()) <= MASS_TOLERANCE
    draws = conditioned.sample(20, torch.Generator().manual_seed(0))
    assert float(constraint.residual(draws).abs().max()) <= MASS_TOLERANCE
    assert float(constraint.residual(conditioned.mean).abs().max()) <= MASS_TOLERANCE
    # The spread between latent samples stays in the conditioned variance.
    assert bool((conditioned.variance >= conditioned.within_variance).all())


def test_load_anp_backbone(stefan, tmp_path, monkeypatch):
    from probcons.backbones.anp import ShippedANPBackbone, load_anp_backbone
    from probcons.checkpoint import save_checkpoint

    config = tiny_config(stefan)
    network = ANPNetwork(config)
    path = tmp_path / "stefan-anp.pt"
    save_checkpoint(
        path,
        {"network": network.state_dict()},
        {"problem": "stefan", "anp": config.to_dict(), "training": {"softc_lambda": 0.0}},
    )
    backbone = load_anp_backbone(path, n_samples=2)
    assert isinstance(backbone, ANPBackbone) and backbone.problem == "stefan"
    shipped = load_anp_backbone()
    assert isinstance(shipped, ShippedANPBackbone)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("probcons.backbones.anp.DEFAULT_CHECKPOINTS", tmp_path / "none")
    diffusion = get_problem("diffusion")
    with pytest.raises(ValueError, match="probcons train diffusion"):
        shipped.backbone_for(diffusion)
    with pytest.raises(ValueError, match="variant"):
        ShippedANPBackbone(variant="fno")


def test_dropped_functions_decode_from_z_and_the_query_alone(stefan, batch):
    """With drop_deterministic, a function's decoder input ignores its contexts except via z."""
    torch.manual_seed(4)
    net = ANPNetwork(tiny_config(stefan))
    drop = torch.tensor([True, False, True, False])
    r, q = net.encode_deterministic(batch.context_tx, batch.context_u, batch.target_tx, drop)
    full, _ = net.encode_deterministic(batch.context_tx, batch.context_u, batch.target_tx)
    torch.testing.assert_close(r[drop], q[drop], rtol=0, atol=0)
    torch.testing.assert_close(r[~drop], full[~drop], rtol=0, atol=0)
    other_u = batch.context_u + 1.0  # other context values change only the kept functions
    r_other, _ = net.encode_deterministic(batch.context_tx, other_u, batch.target_tx, drop)
    torch.testing.assert_close(r_other[drop], r[drop], rtol=0, atol=0)
    assert not torch.allclose(r_other[~drop], r[~drop])
