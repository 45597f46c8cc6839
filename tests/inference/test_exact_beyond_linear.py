"""ExactConditioning with bound sites and nonlinear sites in a plain Pyro model: the trace
hands them to the truncated sampler and to the iterated linearisation, and the result equals
calling those directly."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from probcons import ConvergenceError, UsageError
from probcons.constraints import conservation_constraint
from probcons.covariance import DiagonalCovariance
from probcons.grid import Grid
from probcons.inference import (
    ExactConditioning,
    GaussianField,
    NonlinearPosterior,
    NonlinearSite,
    TruncatedPosterior,
    condition_nonlinear,
    observe_bounds,
    observe_constraint,
)
from probcons.prediction import GaussianPrediction


@pytest.fixture
def grid():
    return Grid.uniform((0.0, 1.0), (0.0, 1.0), 5, 12)


@pytest.fixture
def prior(grid):
    generator = torch.Generator().manual_seed(3)
    mean = 0.3 + 0.2 * torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    variance = 0.05 + 0.05 * torch.rand(grid.size, generator=generator, dtype=torch.float64)
    return GaussianPrediction(mean, DiagonalCovariance(variance), grid)


def _mass(grid):
    return conservation_constraint(grid, torch.linspace(0.25, 0.35, grid.n_t, dtype=torch.float64))


def _energy(u):
    """h(u) = sum_x u^2 per time slice, (n_t,)."""
    return (u**2).sum(-1)


ENERGY = 1.5


def test_nonlinear_site_in_a_model_equals_condition_nonlinear(grid, prior):
    mass = _mass(grid)

    def model(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        observe_constraint("mass", mass, u)
        target = torch.full((grid.n_t,), ENERGY, dtype=torch.float64)
        pyro.sample("energy", dist.Delta(_energy(u), event_dim=1), obs=target)

    conditioning = ExactConditioning(model)
    sites = conditioning.collect(prior)
    assert [site.name for site in sites.nonlinear] == ["energy"]
    assert list(sites.columns) == ["mass"]
    posterior = sites.posterior("probconserv")
    assert isinstance(posterior, NonlinearPosterior)
    direct = condition_nonlinear(
        prior, NonlinearSite("energy", _energy, torch.full((grid.n_t,), ENERGY)), mass
    )
    assert torch.allclose(posterior.mode, direct.mode, atol=1e-12, rtol=0)
    assert (_energy(posterior.mode) - ENERGY).abs().max() < 1e-9
    assert mass.residual(posterior.mode).abs().max() < 1e-12
    draws = conditioning(prior, num_samples=8, generator=torch.Generator().manual_seed(0))
    assert (draws["energy"] - ENERGY).abs().max() < 1e-8
    assert mass.residual(draws["u"]).abs().max() < 1e-10
    residuals = sites.site_residuals(draws["u"])
    assert residuals["energy"].shape == (8, grid.n_t)
    # HardC and the unconstrained prior ignore the nonlinear site: it shows in the residuals
    hardc = sites.posterior("hardc")
    assert mass.residual(hardc.mean).abs().max() < 1e-12
    assert sites.site_residuals(hardc.mean)["energy"].abs().max() > 1e-3


def test_impossible_nonlinear_site_raises_naming_it(grid, prior):
    def model(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        observe_constraint("mass", _mass(grid), u)
        target = torch.full((grid.n_t,), -1.0, dtype=torch.float64)
        pyro.sample("negative_energy", dist.Delta(_energy(u), event_dim=1), obs=target)

    with pytest.raises(ConvergenceError, match="negative_energy"):
        ExactConditioning(model).posterior(prior)


def test_bound_site_in_a_model_gives_the_truncated_posterior(grid, prior):
    mass = _mass(grid)

    def model(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        observe_constraint("mass", mass, u)
        observe_bounds("range", u, lower=0.0, upper=1.0)

    sites = ExactConditioning(model).collect(prior)
    assert sites.bounds is not None and list(sites.columns) == ["mass"]
    posterior = sites.posterior("probconserv")
    assert isinstance(posterior, TruncatedPosterior)
    draws = posterior.sample(64, torch.Generator().manual_seed(1))
    assert sites.bounds.violations(draws) == 0
    assert float(draws.min()) >= 0.0 and float(draws.max()) <= 1.0
    assert mass.residual(draws).abs().max() < 1e-10
    # the prior itself puts mass outside [0, 1]: the bounds did something
    assert sites.bounds.violations(prior.sample(64, torch.Generator().manual_seed(1))) > 0
    assert sites.posterior("unconstrained") is prior


def test_bounds_on_another_tensor_and_mixed_kinds_raise(grid, prior):
    def shifted(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        observe_constraint("mass", _mass(grid), u)
        observe_bounds("range", u + 1.0, lower=0.0)

    with pytest.raises(UsageError, match="site 'range'"):
        ExactConditioning(shifted).collect(prior)

    def both(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        observe_bounds("range", u, lower=0.0)
        target = torch.full((grid.n_t,), ENERGY, dtype=torch.float64)
        pyro.sample("energy", dist.Delta(_energy(u), event_dim=1), obs=target)

    with pytest.raises(UsageError, match="bound sites together with nonlinear sites"):
        ExactConditioning(both).posterior(prior)
