"""Exact posteriors of Pyro models whose observed sites are linear-Gaussian in one latent field.

A model samples a latent field (`GaussianField` over any probcons Posterior, `Normal`,
`MultivariateNormal`) and observes functions of it: `observe_constraint(name, constraint, u)`,
any hand-written `Normal(h(u), sigma)` / `Delta(h(u))` site, and bound sites
`observe_bounds(name, u, lower, upper)`. `ExactConditioning` runs the model once under
`ConstraintCollector`, a Messenger that blocks the latent (nothing is drawn: the model sees the
prior mean) and records every observed site after it. The rows of all linear sites are stacked
into one LinearConstraint, per time slice where each row reads one slice, and the latent's prior
is conditioned on them exactly (ProbConserv) or has its mean projected onto them (HardC).

A hand-written site's rows are read from the one trace by autograd (its Jacobian at the prior
mean); the first time a site name is met, one more trace at a random probe checks that its mean
is linear (`LINEARITY_TOLERANCE`). A site that fails the check is nonlinear: with
`nonlinear="iterate"` (default) ProbConserv conditions on it by iterated linearisation to the
constrained mode and a Laplace posterior whose draws are projected onto h(u) = b
(`probcons.inference.nonlinear`); with `nonlinear="raise"` it is an error. Bound sites truncate
the ProbConserv posterior of the equality sites (`probcons.inference.bounds`: exact HMC, every
draw inside the bounds and on the exact rows). HardC projects onto the linear rows only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger

from probcons.conditioning import RCOND
from probcons.constraints import LinearConstraint
from probcons.covariance import DenseCovariance, DiagonalCovariance
from probcons.errors import ModelError, ProbconsError, SingularConstraintError, UsageError
from probcons.grid import Grid
from probcons.inference.bounds import BoundObservation, Bounds, TruncatedPosterior, combine_bounds
from probcons.inference.distributions import ConstraintObservation, GaussianField
from probcons.inference.nonlinear import NonlinearSite, condition_nonlinear
from probcons.inference.rows import JACOBIAN_LIMIT, SiteRows
from probcons.inference.rows import flat as _flat
from probcons.inference.rows import jacobian as _jacobian
from probcons.inference.rows import slice_rows as _slice_rows
from probcons.posterior import Posterior, check_generator
from probcons.prediction import GaussianPrediction
from probcons.validation import check_choice, check_positive_int

LINEARITY_TOLERANCE = 1e-8
"""Relative mismatch above which a site's mean is declared non-linear in the latent."""
METHODS = ("probconserv", "hardc")
"""What `ExactConditioning` does with the rows: the exact posterior, or the HardC projection."""
PROBE_SEED = 0
"""Seed of the probe field at which a hand-written site's linearity is checked."""
NONLINEAR_CHOICES = ("iterate", "raise")
"""What `ExactConditioning` does with a site that fails the linearity check."""


def observe_constraint(name: str, constraint: LinearConstraint, field: torch.Tensor):
    """pyro.sample(name, G u + eps, obs=b): a linear-Gaussian constraint site."""
    return pyro.sample(name, ConstraintObservation(constraint, field), obs=constraint.values)


class ConstraintCollector(Messenger):
    """Blocks the sample site `latent` and records the observed sample sites after it.

    The latent's value becomes `value_of(fn)` (no draw); every later observed site's message
    (its distribution and observed value) is appended to `observed`.
    """

    def __init__(self, latent: str, value_of) -> None:
        super().__init__()
        self.latent = latent
        self.value_of = value_of
        self.latent_message = None
        self.observed: list[dict] = []
        self.names: list[str] = []

    def _pyro_sample(self, msg) -> None:
        self.names.append(msg["name"])
        if msg["name"] == self.latent:
            msg["value"] = self.value_of(msg["fn"])
            msg["done"] = True
            self.latent_message = msg
        elif self.latent_message is not None and msg["is_observed"]:
            self.observed.append(msg)


def _unwrap(fn):
    """The base distribution under Independent wrappers."""
    while isinstance(fn, (dist.Independent, torch.distributions.Independent)):
        fn = fn.base_dist
    return fn


def latent_prior(fn) -> Posterior:
    """The latent site's distribution as a Posterior (a GaussianField's own, else on an index
    grid: Normal with loc (n_t, n_x) or (n,), MultivariateNormal with loc (n,))."""
    base = _unwrap(fn)
    if isinstance(fn, GaussianField):
        return fn.prediction
    if isinstance(base, torch.distributions.MultivariateNormal) and base.batch_shape == ():
        n = base.event_shape[0]
        grid = Grid.index(1, n)
        covariance = DenseCovariance(base.covariance_matrix.to(torch.float64))
        return GaussianPrediction(base.loc.reshape(1, n), covariance, grid)
    if isinstance(base, torch.distributions.Normal):
        loc, scale = torch.broadcast_tensors(base.loc, base.scale)
        shape = loc.shape if loc.dim() == 2 else (1, loc.numel())
        grid = Grid.index(*shape)
        variance = (scale.to(torch.float64) ** 2).reshape(-1)
        return GaussianPrediction(loc.reshape(shape), DiagonalCovariance(variance), grid)
    raise UsageError(
        f"latent: expected a GaussianField, Normal or MultivariateNormal site, got {type(fn).__name__}"
    )


def _model_shape(fn) -> torch.Size:
    """The shape the model sees the latent in."""
    return fn.event_shape if isinstance(fn, GaussianField) else _unwrap(fn).mean.shape


def _latent_value(fn, field: torch.Tensor) -> torch.Tensor:
    """`field` (n_t, n_x) in the shape the model sees the latent in, as a leaf that records
    the graph of every site built from it."""
    return field.detach().to(torch.float64).reshape(_model_shape(fn)).clone().requires_grad_(True)


def _site_mean_and_noise(msg, latent: str) -> tuple[torch.Tensor, torch.Tensor]:
    base = _unwrap(msg["fn"])
    if isinstance(base, ConstraintObservation):
        return base.loc, base.constraint.noise_std
    if isinstance(base, dist.Delta):
        return base.v, torch.zeros_like(base.v)
    if isinstance(base, torch.distributions.Normal):
        loc, scale = torch.broadcast_tensors(base.loc, base.scale)
        return loc, scale
    raise UsageError(
        f"site {msg['name']!r}: expected a Normal, Delta or observe_constraint site linear in "
        f"latent {latent!r}, got {type(base).__name__}"
    )


def _generic_rows(msg, latent: str, value: torch.Tensor) -> SiteRows:
    name = msg["name"]
    loc, noise = _site_mean_and_noise(msg, latent)
    if not loc.requires_grad:
        raise UsageError(
            f"site {name!r}: observed, but its mean does not depend on latent {latent!r}; exact "
            "conditioning reads only sites whose mean is linear in the latent"
        )
    if isinstance(noise, torch.Tensor) and noise.requires_grad:
        raise UsageError(f"site {name!r}: its noise scale depends on latent {latent!r}")
    flat = loc.reshape(-1)
    if flat.numel() * value.numel() > JACOBIAN_LIMIT:
        raise UsageError(
            f"site {name!r}: a hand-written site of {flat.numel()} rows on {value.numel()} points "
            f"needs a dense Jacobian over the limit of {JACOBIAN_LIMIT} entries; write it with "
            "observe_constraint (rows kept per time slice)"
        )
    matrix = _jacobian(flat, value)
    point = value.detach().reshape(-1)
    offset = flat.detach().to(torch.float64) - matrix @ point
    observed = torch.as_tensor(msg["value"]).detach().to(torch.float64)
    observed = torch.broadcast_to(observed, loc.shape).reshape(-1)
    noise = torch.broadcast_to(torch.as_tensor(noise).detach().to(torch.float64), loc.shape)
    return SiteRows(name, matrix, offset, observed, noise.reshape(-1))


def _check_visible(rows: SiteRows, latent: str) -> None:
    """Raise for a row of a linear site that reads no point of the latent."""
    invisible = (rows.matrix == 0).all(dim=1).nonzero().reshape(-1)
    if invisible.numel():
        raise SingularConstraintError(
            f"site {rows.name!r}: row {int(invisible[0])} does not depend on latent {latent!r} "
            "(all its weights are zero), so conditioning on it is meaningless"
        )


def flat_grid(grid: Grid) -> Grid:
    """One time slice over the t-major flattening of `grid` (for rows that mix time slices)."""
    return grid.flattened()


@dataclass(frozen=True)
class ConstraintSites:
    """What one trace of a model gives: the latent's prior and the rows of its observed sites.

    constraint: every linear site's rows stacked (None when there are none), on `prior.grid`
    per time slice, or on `flat_grid(prior.grid)` when `flat` (some row reads several time
    slices). columns: for each linear site, its rows' positions on the last axis of
    `constraint.apply(field)`. value_shape: the latent's shape as the model sees it.
    nonlinear: the sites that failed the linearity check (h(u) re-traces the model). bounds:
    the intersection of the bound sites, or None.
    """

    prior: Posterior
    constraint: LinearConstraint | None
    flat: bool
    columns: dict[str, slice]
    value_shape: tuple[int, ...]
    nonlinear: tuple[NonlinearSite, ...] = ()
    bounds: Bounds | None = None

    def apply(self, field: torch.Tensor) -> torch.Tensor:
        """G u for fields (..., n_t, n_x) -> (..., slices, rows)."""
        if self.flat:
            field = field.reshape(*field.shape[:-2], 1, -1)
        return self.constraint.apply(field)

    def residual(self, field: torch.Tensor) -> torch.Tensor:
        """G u - b for fields (..., n_t, n_x)."""
        return self.apply(field) - self.constraint.values.to(field.dtype)

    def site_residuals(self, fields: torch.Tensor) -> dict[str, torch.Tensor]:
        """h(u) - b of every nonlinear site for fields (..., n_t, n_x) -> {site: (..., m)}."""
        batch = fields.shape[:-2]
        flat = fields.detach().to(torch.float64).reshape(-1, *fields.shape[-2:])
        residuals = {}
        for site in self.nonlinear:
            values = torch.stack([site.function(field).detach().reshape(-1) for field in flat])
            residuals[site.name] = (values - site.value).reshape(*batch, site.size)
        return residuals

    def posterior(self, method: str, rcond: float = RCOND, singular: str = "raise") -> Posterior:
        """The prior after `method`: "unconstrained", "hardc" (the mean projected onto the
        linear rows) or "probconserv" (the exact posterior of the linear rows; with nonlinear
        sites their iterated-linearisation posterior, with bound sites the truncated one)."""
        check_choice(method, "method", ("unconstrained", *METHODS))
        if method == "probconserv" and (self.nonlinear or self.bounds is not None):
            return self._beyond_linear(rcond)
        if method == "unconstrained" or self.constraint is None:
            return self.prior
        prior = self.prior.with_grid(flat_grid(self.prior.grid)) if self.flat else self.prior
        update = prior.condition if method == "probconserv" else prior.project
        result = update(self.constraint, rcond=rcond, singular=singular)
        return result.with_grid(self.prior.grid) if self.flat else result

    def _beyond_linear(self, rcond: float) -> Posterior:
        if self.nonlinear and self.bounds is not None:
            raise UsageError(
                f"model: bound sites together with nonlinear sites "
                f"{[site.name for site in self.nonlinear]} are not supported; keep one kind"
            )
        if self.nonlinear:
            return condition_nonlinear(self.prior, self.nonlinear, self.constraint, rcond=rcond)
        return TruncatedPosterior(self.prior, self.constraint, self.bounds)


def _describe(model) -> str:
    code = getattr(model, "__code__", None)
    where = f" in {code.co_filename}" if code is not None else ""
    return f"{getattr(model, '__qualname__', type(model).__name__)}{where}"


class ExactConditioning:
    """The exact constrained posterior of `latent` in a Pyro model, like pyro.infer.Predictive.

    method: "probconserv" (the exact Gaussian posterior given every observed linear site) or
    "hardc" (the mean projected onto the rows, the spread unchanged). nonlinear: "iterate"
    (a site that fails the linearity check is conditioned on by iterated linearisation) or
    "raise". Each call traces the model once (plus one probe trace the first time a
    hand-written site is met; a nonlinear site re-traces it at each iteration).

        ExactConditioning(model).posterior(*args)   -> the constrained Posterior
        ExactConditioning(model).constraint(*args)  -> the stacked LinearConstraint applied
        ExactConditioning(model)(*args, num_samples=100, generator=g)
            -> {latent: draws (num_samples, *event_shape), site: G u of the draws per site}
    """

    def __init__(
        self,
        model,
        latent: str = "u",
        method: str = "probconserv",
        rcond: float = RCOND,
        singular: str = "raise",
        nonlinear: str = "iterate",
    ) -> None:
        if not callable(model):
            raise UsageError(f"model: expected a callable Pyro model, got {type(model).__name__}")
        if not isinstance(latent, str):
            raise UsageError(f"latent: expected a site name (str), got {latent!r}")
        self.model = model
        self.latent = latent
        self.method = check_choice(method, "method", METHODS)
        self.rcond = rcond
        self.singular = singular
        self.nonlinear = check_choice(nonlinear, "nonlinear", NONLINEAR_CHOICES)
        self._linear_sites: set[str] = set()
        self._nonlinear_sites: set[str] = set()

    def _trace(self, args, kwargs, value_of) -> ConstraintCollector:
        collector = ConstraintCollector(self.latent, value_of)
        try:
            with collector, torch.enable_grad():
                self.model(*args, **kwargs)
        except ProbconsError:
            raise
        except Exception as error:  # the user's model: one line naming it and the exception
            message = " ".join(str(error).split())
            raise ModelError(
                f"model: {_describe(self.model)} raised {type(error).__name__}: {message}"
            ) from error
        if collector.latent_message is None:
            raise UsageError(
                f"latent: expected one of the sample sites of model {_describe(self.model)} "
                f"{collector.names}, got {self.latent!r}"
            )
        return collector

    def collect(self, *args, **kwargs) -> ConstraintSites:
        """Trace the model once; the latent's prior and the stacked rows of its sites."""
        collector = self._trace(args, kwargs, lambda fn: _latent_value(fn, latent_prior(fn).mean))
        fn = collector.latent_message["fn"]
        value = collector.latent_message["value"]
        prior = latent_prior(fn)
        parts: list[tuple[str, LinearConstraint | SiteRows]] = []
        bound_sites: list[BoundObservation] = []
        for msg in collector.observed:
            base = _unwrap(msg["fn"])
            if isinstance(base, BoundObservation):
                bound_sites.append(self._bound_site(msg["name"], base, value, prior))
            elif isinstance(base, ConstraintObservation) and base.field is value:
                constraint = base.constraint
                if msg["value"] is not constraint.values:  # observed at another b than built
                    observed = torch.as_tensor(msg["value"]).detach().to(torch.float64)
                    observed = torch.broadcast_to(observed, constraint.values.shape)
                    constraint = LinearConstraint(
                        constraint.weights, observed, constraint.noise_std, constraint.names
                    )
                parts.append((msg["name"], constraint))
            else:
                parts.append((msg["name"], _generic_rows(msg, self.latent, value)))
        generic = [part for _, part in parts if isinstance(part, SiteRows)]
        unseen = [rows for rows in generic if rows.name not in self._known_sites]
        if unseen:
            self._check_linear(args, kwargs, prior, unseen)
        nonlinear = tuple(
            self._nonlinear_site(args, kwargs, rows)
            for rows in generic
            if rows.name in self._nonlinear_sites
        )
        for rows in generic:
            if rows.name in self._linear_sites:
                _check_visible(rows, self.latent)
        linear = [(name, part) for name, part in parts if name not in self._nonlinear_sites]
        sites = self._stack(prior, linear, tuple(value.shape))
        bounds = combine_bounds(bound_sites)
        return dataclasses.replace(sites, nonlinear=nonlinear, bounds=bounds)

    @property
    def _known_sites(self) -> set[str]:
        return self._linear_sites | self._nonlinear_sites

    def _bound_site(self, name: str, site: BoundObservation, value, prior) -> BoundObservation:
        if site.field is not value:
            raise UsageError(
                f"site {name!r}: expected bounds on latent {self.latent!r} itself "
                "(observe_bounds(name, u, ...)), got bounds on another tensor"
            )
        if site.bounds.shape != tuple(prior.grid.shape):
            raise UsageError(
                f"site {name!r}: expected bounds of shape {tuple(prior.grid.shape)}, got "
                f"{site.bounds.shape}"
            )
        return site

    def _nonlinear_site(self, args, kwargs, rows: SiteRows) -> NonlinearSite:
        """The site as h(u): the model traced at a field (n_t, n_x), its mean read off."""
        name = rows.name

        def function(field: torch.Tensor) -> torch.Tensor:
            collector = self._trace(args, kwargs, lambda fn: field.reshape(_model_shape(fn)))
            for msg in collector.observed:
                if msg["name"] == name:
                    mean, _ = _site_mean_and_noise(msg, self.latent)
                    return mean.reshape(-1).to(torch.float64)
            raise ModelError(f"model: site {name!r} was not observed when traced again")

        return NonlinearSite(name, function, rows.value, rows.noise)

    def _check_linear(self, args, kwargs, prior: Posterior, generic: list[SiteRows]) -> None:
        """Trace once more at a probe field; each site's mean there must be matrix probe + offset."""
        generator = torch.Generator().manual_seed(PROBE_SEED)
        probe = prior.mean + torch.randn(prior.grid.shape, generator=generator, dtype=torch.float64)
        collector = self._trace(args, kwargs, lambda fn: _latent_value(fn, probe))
        names = {rows.name for rows in generic}
        locs = {
            msg["name"]: _site_mean_and_noise(msg, self.latent)[0]
            for msg in collector.observed
            if msg["name"] in names
        }
        for rows in generic:
            actual = locs[rows.name].detach().reshape(-1).to(torch.float64)
            predicted = rows.matrix @ probe.reshape(-1) + rows.offset
            if (predicted - actual).abs().max() <= LINEARITY_TOLERANCE * (1 + actual.abs().max()):
                self._linear_sites.add(rows.name)
            elif self.nonlinear == "iterate":
                self._nonlinear_sites.add(rows.name)
            else:
                raise UsageError(
                    f"site {rows.name!r}: its mean is not linear in latent {self.latent!r}; "
                    "exact linear conditioning needs G u + c (nonlinear='iterate' conditions "
                    "on it by iterated linearisation)"
                )

    @staticmethod
    def _stack(prior: Posterior, parts, value_shape: tuple[int, ...]) -> ConstraintSites:
        if not parts:
            return ConstraintSites(prior, None, False, {}, value_shape)
        sliced = []
        for name, part in parts:
            if isinstance(part, SiteRows):
                part = _slice_rows(part, prior.grid) or part
            sliced.append((name, part))
        flat = any(isinstance(part, SiteRows) for _, part in sliced)
        constraints = []
        for _, part in sliced:
            if isinstance(part, SiteRows):
                part = LinearConstraint(
                    part.matrix[None],
                    (part.value - part.offset)[None],
                    part.noise[None],
                    tuple(f"{part.name}[{k}]" for k in range(part.value.numel())),
                )
            elif flat:
                part = _flat(part)
            constraints.append(part)
        columns, start = {}, 0
        for (name, _), part in zip(sliced, constraints, strict=True):
            columns[name] = slice(start, start + part.rows_per_slice)
            start += part.rows_per_slice
        stacked = constraints[0].stack(*constraints[1:]) if len(constraints) > 1 else constraints[0]
        return ConstraintSites(prior, stacked, flat, columns, value_shape)

    def constraint(self, *args, **kwargs) -> LinearConstraint | None:
        """Every observed site's rows, stacked (see ConstraintSites)."""
        return self.collect(*args, **kwargs).constraint

    def posterior(self, *args, **kwargs) -> Posterior:
        """The latent's posterior after this object's method."""
        sites = self.collect(*args, **kwargs)
        return sites.posterior(self.method, self.rcond, self.singular)

    def __call__(
        self,
        *args,
        num_samples: int = 100,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> dict[str, torch.Tensor]:
        """{latent: draws (num_samples, *event_shape)} and, per observed linear site, G u of
        each draw (num_samples, slices, rows of that site); per nonlinear site h(u) of each draw
        (num_samples, m)."""
        check_positive_int(num_samples, "num_samples")
        check_generator(generator)
        sites = self.collect(*args, **kwargs)
        posterior = sites.posterior(self.method, self.rcond, self.singular)
        draws = posterior.sample(num_samples, generator)
        samples = {self.latent: draws.reshape(num_samples, *sites.value_shape)}
        if sites.constraint is not None:
            rows = sites.apply(draws)
            for name, columns in sites.columns.items():
                samples[name] = rows[..., columns]
        for name, residual in sites.site_residuals(draws).items():
            site = next(site for site in sites.nonlinear if site.name == name)
            samples[name] = residual + site.value
        return samples


def exact_posterior(model, *args, latent: str = "u", **kwargs) -> Posterior:
    """The exact posterior of `latent` given every observed linear site after it in `model`."""
    return ExactConditioning(model, latent=latent).posterior(*args, **kwargs)


class ConstrainedPredictive(ExactConditioning):
    """Draws from the exact constrained posterior, like pyro.infer.Predictive:
    `ConstrainedPredictive(model, num_samples=100)(*args, generator=g)`."""

    def __init__(self, model, latent: str = "u", num_samples: int = 100) -> None:
        super().__init__(model, latent=latent)
        self.num_samples = check_positive_int(num_samples, "num_samples")

    def __call__(self, *args, generator: torch.Generator | None = None, **kwargs) -> dict:
        return super().__call__(*args, num_samples=self.num_samples, generator=generator, **kwargs)
