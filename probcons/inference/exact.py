"""Exact posteriors of Pyro models whose observed sites are linear-Gaussian in one latent field.

A model samples a latent Gaussian field (`GaussianField`, `Normal`, `MultivariateNormal`) and
observes linear functions of it: `observe_constraint(name, constraint, u)`, or any
`Normal(G @ u + c, sigma)` / `Delta(G @ u + c)` site. `exact_posterior` reads those sites from a
trace and returns the exact posterior of the latent (`probcons.conditioning.condition`).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from probcons.conditioning import condition
from probcons.constraints import LinearConstraint, dense_constraint
from probcons.covariance import DenseCovariance, DiagonalCovariance
from probcons.grid import Grid
from probcons.inference.distributions import ConstraintObservation, GaussianField
from probcons.prediction import GaussianPrediction
from probcons.validation import check_positive_int

LINEARITY_TOLERANCE = 1e-8
"""Relative mismatch above which a site's mean is declared non-linear in the latent."""


def observe_constraint(name: str, constraint: LinearConstraint, field: torch.Tensor):
    """pyro.sample(name, G u + eps, obs=b): a linear-Gaussian constraint site."""
    return pyro.sample(name, ConstraintObservation(constraint, field), obs=constraint.values)


def _unwrap(fn):
    """Strip Independent/masking wrappers; return (base distribution)."""
    while isinstance(fn, (dist.Independent, torch.distributions.Independent)):
        fn = fn.base_dist
    return fn


def _latent_prediction(fn) -> GaussianPrediction:
    """The latent site's distribution as a GaussianPrediction."""
    base = _unwrap(fn)
    if isinstance(fn, GaussianField):
        return fn.prediction
    if isinstance(base, torch.distributions.MultivariateNormal) and base.batch_shape == ():
        n = base.event_shape[0]
        grid = Grid(torch.zeros(1), torch.arange(n, dtype=torch.float64))
        covariance = DenseCovariance(base.covariance_matrix.to(torch.float64))
        return GaussianPrediction(base.loc.reshape(1, n), covariance, grid)
    if isinstance(base, torch.distributions.Normal):
        loc, scale = torch.broadcast_tensors(base.loc, base.scale)
        shape = loc.shape if loc.dim() == 2 else (1, loc.numel())
        grid = Grid(
            torch.arange(shape[0], dtype=torch.float64), torch.arange(shape[1], dtype=torch.float64)
        )
        variance = (scale.to(torch.float64) ** 2).reshape(-1)
        return GaussianPrediction(loc.reshape(shape), DiagonalCovariance(variance), grid)
    raise ValueError(
        f"latent: expected a GaussianField, Normal or MultivariateNormal site, got {type(fn).__name__}"
    )


def _site_mean_and_noise(site) -> tuple[torch.Tensor, torch.Tensor]:
    base = _unwrap(site["fn"])
    if isinstance(base, dist.Delta):
        return base.v, torch.zeros_like(base.v)
    if isinstance(base, torch.distributions.Normal):
        loc, scale = torch.broadcast_tensors(base.loc, base.scale)
        return loc, scale
    raise ValueError(
        f"site {site['name']!r}: expected a Normal, Delta or observe_constraint site linear in "
        f"the latent, got {type(base).__name__}"
    )


def _observed_sites(trace, latent: str) -> list[dict]:
    names = list(trace.nodes)
    after = names[names.index(latent) + 1 :]
    return [
        trace.nodes[name]
        for name in after
        if trace.nodes[name]["type"] == "sample" and trace.nodes[name]["is_observed"]
    ]


def _generic_rows(model, args, kwargs, latent, site, prediction, value_shape):
    """G (m, N), c (m,) with loc(u) = G u + c for a generic site; checks linearity.

    The model sees the latent in its own shape `value_shape` (e.g. (n,) for a MultivariateNormal).
    """
    shape = prediction.grid.shape

    def loc_of(field):
        conditioned = poutine.condition(model, data={latent: field.reshape(value_shape)})
        trace = poutine.trace(conditioned).get_trace(*args, **kwargs)
        return _site_mean_and_noise(trace.nodes[site["name"]])[0].reshape(-1).to(torch.float64)

    origin = prediction.mean.reshape(shape)
    matrix = torch.autograd.functional.jacobian(
        lambda flat: loc_of(flat.reshape(shape)), origin.reshape(-1)
    )
    offset = loc_of(origin) - matrix @ origin.reshape(-1)
    probe = origin + torch.randn(
        shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    predicted = matrix @ probe.reshape(-1) + offset
    actual = loc_of(probe)
    if (predicted - actual).abs().max() > LINEARITY_TOLERANCE * (1 + actual.abs().max()):
        raise ValueError(
            f"site {site['name']!r}: its mean is not linear in latent {latent!r}; "
            "exact conditioning needs G u + c"
        )
    return matrix, offset


def exact_posterior(model, *args, latent: str = "u", **kwargs) -> GaussianPrediction:
    """The exact posterior of `latent` given every observed linear site after it in `model`."""
    trace = poutine.trace(model).get_trace(*args, **kwargs)
    if latent not in trace.nodes:
        sites = [name for name, node in trace.nodes.items() if node["type"] == "sample"]
        raise ValueError(
            f"latent: expected one of the model's sample sites {sites}, got {latent!r}"
        )
    prediction = _latent_prediction(trace.nodes[latent]["fn"])
    sites = _observed_sites(trace, latent)
    structured = [s for s in sites if isinstance(s["fn"], ConstraintObservation)]
    generic = [s for s in sites if not isinstance(s["fn"], ConstraintObservation)]
    if not generic:
        return condition(prediction, [s["fn"].constraint for s in structured])
    matrices, values, noises = [], [], []
    for site in structured:
        constraint = site["fn"].constraint
        matrices.append(constraint.to_dense())
        values.append(constraint.values.reshape(-1))
        noises.append(constraint.noise_std.reshape(-1))
    for site in generic:
        value_shape = trace.nodes[latent]["value"].shape
        matrix, offset = _generic_rows(model, args, kwargs, latent, site, prediction, value_shape)
        observed = site["value"].reshape(-1).to(torch.float64)
        _, noise = _site_mean_and_noise(site)
        matrices.append(matrix)
        values.append(observed - offset)
        noises.append(noise.reshape(-1).to(torch.float64).detach())
    flat = dense_constraint(torch.cat(matrices), torch.cat(values), torch.cat(noises))
    flat_grid = Grid(torch.zeros(1), torch.arange(prediction.grid.size, dtype=torch.float64))
    flat_prior = GaussianPrediction(
        prediction.mean.reshape(1, -1), prediction.covariance, flat_grid
    )
    posterior = condition(flat_prior, flat)
    return GaussianPrediction(
        posterior.mean.reshape(prediction.grid.shape), posterior.covariance, prediction.grid
    )


class ConstrainedPredictive:
    """Draws from the exact constrained posterior of `latent`, like pyro.infer.Predictive.

    Returns {latent: (num_samples, *event_shape)} plus, for each `observe_constraint` site,
    G u of every draw, (num_samples, n_t, r).
    """

    def __init__(self, model, latent: str = "u", num_samples: int = 100) -> None:
        self.model = model
        self.latent = latent
        self.num_samples = check_positive_int(num_samples, "num_samples")

    def __call__(self, *args, generator: torch.Generator | None = None, **kwargs) -> dict:
        posterior = exact_posterior(self.model, *args, latent=self.latent, **kwargs)
        draws = posterior.sample(self.num_samples, generator)
        trace = poutine.trace(self.model).get_trace(*args, **kwargs)
        event_shape = trace.nodes[self.latent]["fn"].event_shape
        samples = {self.latent: draws.reshape(self.num_samples, *event_shape)}
        for site in _observed_sites(trace, self.latent):
            if isinstance(site["fn"], ConstraintObservation):
                samples[site["name"]] = site["fn"].constraint.apply(draws)
        return samples
