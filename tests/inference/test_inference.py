"""Pyro models with constraint sites: exact posteriors equal direct conditioning."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import random_covariances

from probcons.constraints import conservation_constraint, dirichlet_constraint
from probcons.inference import (
    ConstrainedPredictive,
    ExactConditioning,
    GaussianField,
    exact_posterior,
    observe_constraint,
)
from probcons.prediction import GaussianPrediction


@pytest.fixture
def prior(small_grid):
    covariance = random_covariances(small_grid)["block"]
    mean = torch.randn(
        small_grid.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    return GaussianPrediction(mean, covariance, small_grid)


def test_constraint_sites_give_exact_posterior(prior, small_grid):
    mass = conservation_constraint(small_grid, torch.ones(small_grid.n_t))
    wall = dirichlet_constraint(small_grid, left=0.0)

    def model():
        u = pyro.sample("u", GaussianField(prior))
        observe_constraint("mass", mass, u)
        observe_constraint("wall", wall, u)

    posterior = exact_posterior(model)
    expected = prior.condition(mass.stack(wall))
    assert torch.allclose(posterior.mean, expected.mean, atol=1e-12)
    draws = ConstrainedPredictive(model, num_samples=50)(generator=torch.Generator().manual_seed(0))
    assert draws["u"].shape == (50, *small_grid.shape)
    assert (draws["mass"] - mass.values).abs().max() < 1e-10
    assert (draws["wall"] - wall.values).abs().max() < 1e-10


def test_plain_normal_and_delta_sites_are_read_by_autograd(prior, small_grid):
    matrix = torch.randn(2, small_grid.size, dtype=torch.float64)
    observed = torch.tensor([0.5, -0.2], dtype=torch.float64)

    def model():
        u = pyro.sample("u", GaussianField(prior))
        pyro.sample(
            "sums", dist.Normal(matrix @ u.reshape(-1) + 1.0, 0.1).to_event(1), obs=observed
        )
        pyro.sample("corner", dist.Delta(u[0, 0]), obs=torch.tensor(0.3, dtype=torch.float64))

    posterior = exact_posterior(model)
    rows = torch.cat([matrix, torch.eye(small_grid.size, dtype=torch.float64)[:1]])
    values = torch.cat([observed - 1.0, torch.tensor([0.3], dtype=torch.float64)])
    noise = torch.tensor([0.1, 0.1, 0.0], dtype=torch.float64)
    sigma = prior.covariance.to_dense()
    gain = sigma @ rows.T @ torch.linalg.inv(rows @ sigma @ rows.T + torch.diag(noise**2))
    mean = prior.mean.reshape(-1) + gain @ (values - rows @ prior.mean.reshape(-1))
    assert torch.allclose(posterior.mean.reshape(-1), mean, atol=1e-10)
    assert torch.allclose(posterior.covariance.to_dense(), sigma - gain @ rows @ sigma, atol=1e-10)
    assert (posterior.sample(20)[:, 0, 0] - 0.3).abs().max() < 1e-10


def test_multivariate_normal_latent():
    def model():
        u = pyro.sample(
            "u",
            dist.MultivariateNormal(
                torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
            ),
        )
        pyro.sample("total", dist.Delta(u.sum()), obs=torch.tensor(2.0, dtype=torch.float64))
        pyro.sample("pair", dist.Delta(u[0] - u[3]), obs=torch.tensor(0.0, dtype=torch.float64))

    posterior = exact_posterior(model)
    assert torch.allclose(posterior.mean, torch.full((1, 4), 0.5, dtype=torch.float64))
    draws = posterior.sample(10)
    assert (draws.sum((-2, -1)) - 2.0).abs().max() < 1e-10
    assert (draws[..., 0] - draws[..., 3]).abs().max() < 1e-10


def test_nonlinear_site_is_rejected_when_asked(prior):
    def model():
        u = pyro.sample("u", GaussianField(prior))
        pyro.sample(
            "square", dist.Normal((u**2).sum(), 0.1), obs=torch.tensor(1.0, dtype=torch.float64)
        )

    with pytest.raises(ValueError, match="not linear"):
        ExactConditioning(model, nonlinear="raise").posterior()


def test_unknown_latent_is_rejected(prior):
    def model():
        pyro.sample("u", GaussianField(prior))

    with pytest.raises(ValueError, match="latent: expected one of"):
        exact_posterior(model, latent="v")


def test_field_log_prob_matches_torch(prior):
    field = GaussianField(prior)
    value = prior.sample(1)[0]
    dense = torch.distributions.MultivariateNormal(
        prior.mean.reshape(-1), prior.covariance.to_dense()
    )
    assert torch.isclose(field.log_prob(value), dense.log_prob(value.reshape(-1)))
