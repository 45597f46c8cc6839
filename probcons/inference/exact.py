"""Exact posteriors of Pyro models whose observed sites are linear-Gaussian in one latent field.

A model samples a latent field (`GaussianField` over any probcons Posterior, `Normal`,
`MultivariateNormal`) and observes linear functions of it: `observe_constraint(name,
constraint, u)`, or any hand-written `Normal(L(u) + c, sigma)` / `Delta(L(u) + c)` site with L
linear. `ExactConditioning` runs the model once under `ConstraintCollector`, a Messenger that
blocks the latent (nothing is drawn: the model sees the prior mean) and records every observed
site after it. The rows of all sites are stacked into one LinearConstraint, per time slice
where each row reads one slice, and the latent's prior is conditioned on them exactly
(ProbConserv) or has its mean projected onto them (HardC).

A hand-written site's rows are read from the one trace by autograd (its Jacobian at the prior
mean); the first time a site name is met, one more trace at a random probe checks that its mean
is linear (`LINEARITY_TOLERANCE`), so a nonlinear or piecewise-linear site raises instead of
being silently linearised.
"""

from __future__ import annotations

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
from probcons.inference.distributions import ConstraintObservation, GaussianField
from probcons.posterior import Posterior, check_generator
from probcons.prediction import GaussianPrediction
from probcons.validation import check_choice, check_positive_int

LINEARITY_TOLERANCE = 1e-8
"""Relative mismatch above which a site's mean is declared non-linear in the latent."""
JACOBIAN_LIMIT = 50_000_000
"""Most entries (rows x grid points) of a hand-written site's dense Jacobian (400 MB)."""
METHODS = ("probconserv", "hardc")
"""What `ExactConditioning` does with the rows: the exact posterior, or the HardC projection."""
PROBE_SEED = 0
"""Seed of the probe field at which a hand-written site's linearity is checked."""


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


def _latent_value(fn, field: torch.Tensor) -> torch.Tensor:
    """`field` (n_t, n_x) in the shape the model sees the latent in, as a leaf that records
    the graph of every site built from it."""
    shape = fn.event_shape if isinstance(fn, GaussianField) else _unwrap(fn).mean.shape
    return field.detach().to(torch.float64).reshape(shape).clone().requires_grad_(True)


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


def _jacobian(output: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """d output / d value as (m, N) float64 for a flat output (m,)."""
    eye = torch.eye(output.numel(), dtype=output.dtype)
    try:
        (rows,) = torch.autograd.grad(
            output, value, eye, retain_graph=True, is_grads_batched=True, allow_unused=True
        )
    except RuntimeError:  # an operation without a batching rule: one row at a time
        rows = torch.stack(
            [
                torch.autograd.grad(output, value, row, retain_graph=True, allow_unused=True)[0]
                for row in eye
            ]
        )
    return rows.reshape(output.numel(), -1).to(torch.float64)


@dataclass(frozen=True)
class SiteRows:
    """Rows of one hand-written site: loc(u) = matrix u + offset, observed `value`."""

    name: str
    matrix: torch.Tensor  # (m, N)
    offset: torch.Tensor  # (m,)
    value: torch.Tensor  # (m,)
    noise: torch.Tensor  # (m,)


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
    invisible = (matrix == 0).all(dim=1).nonzero().reshape(-1)
    if invisible.numel():
        raise _invisible_row_error(name, int(invisible[0]), latent)
    point = value.detach().reshape(-1)
    offset = flat.detach().to(torch.float64) - matrix @ point
    observed = torch.as_tensor(msg["value"]).detach().to(torch.float64)
    observed = torch.broadcast_to(observed, loc.shape).reshape(-1)
    noise = torch.broadcast_to(torch.as_tensor(noise).detach().to(torch.float64), loc.shape)
    return SiteRows(name, matrix, offset, observed, noise.reshape(-1))


def _invisible_row_error(site: str, row: int, latent: str) -> SingularConstraintError:
    """The error for a row that reads no point of the latent."""
    return SingularConstraintError(
        f"site {site!r}: row {row} does not depend on latent {latent!r} (all its weights are "
        "zero), so conditioning on it is meaningless"
    )


def _slice_rows(rows: SiteRows, grid: Grid) -> LinearConstraint | None:
    """The site's rows per time slice, (n_t, r, n_x), when each row reads one slice and every
    slice has the same number r of rows; None otherwise."""
    n_t, n_x = grid.shape
    blocks = rows.matrix.reshape(-1, n_t, n_x)
    touched = blocks.abs().amax(dim=-1) > 0  # (m, n_t)
    if not bool((touched.sum(dim=1) == 1).all()):
        return None
    slice_of = touched.to(torch.int64).argmax(dim=1)
    counts = torch.bincount(slice_of, minlength=n_t)
    if not bool((counts == counts[0]).all()):
        return None
    order = torch.argsort(slice_of, stable=True)
    r = int(counts[0])
    names = (rows.name,) if r == 1 else tuple(f"{rows.name}[{k}]" for k in range(r))
    return LinearConstraint(
        blocks[order, slice_of[order]].reshape(n_t, r, n_x),
        (rows.value - rows.offset)[order].reshape(n_t, r),
        rows.noise[order].reshape(n_t, r),
        names,
    )


def _flat(constraint: LinearConstraint) -> LinearConstraint:
    """The same rows as one slice over the flattened grid, (1, m, N)."""
    return LinearConstraint(
        constraint.to_dense()[None],
        constraint.values.reshape(1, -1),
        constraint.noise_std.reshape(1, -1),
        tuple(f"{name}@{j}" for j in range(constraint.n_t) for name in constraint.names),
    )


def flat_grid(grid: Grid) -> Grid:
    """One time slice over the t-major flattening of `grid` (for rows that mix time slices)."""
    return grid.flattened()


@dataclass(frozen=True)
class ConstraintSites:
    """What one trace of a model gives: the latent's prior and the rows of its observed sites.

    constraint: every site's rows stacked (None when the model observes nothing), on
    `prior.grid` per time slice, or on `flat_grid(prior.grid)` when `flat` (some row reads
    several time slices). columns: for each site, its rows' positions on the last axis of
    `constraint.apply(field)`. value_shape: the latent's shape as the model sees it.
    """

    prior: Posterior
    constraint: LinearConstraint | None
    flat: bool
    columns: dict[str, slice]
    value_shape: tuple[int, ...]

    def apply(self, field: torch.Tensor) -> torch.Tensor:
        """G u for fields (..., n_t, n_x) -> (..., slices, rows)."""
        if self.flat:
            field = field.reshape(*field.shape[:-2], 1, -1)
        return self.constraint.apply(field)

    def residual(self, field: torch.Tensor) -> torch.Tensor:
        """G u - b for fields (..., n_t, n_x)."""
        return self.apply(field) - self.constraint.values.to(field.dtype)

    def posterior(self, method: str, rcond: float = RCOND, singular: str = "raise") -> Posterior:
        """The prior after `method`: "unconstrained", "hardc" or "probconserv"."""
        check_choice(method, "method", ("unconstrained", *METHODS))
        if method == "unconstrained" or self.constraint is None:
            return self.prior
        prior = self.prior.with_grid(flat_grid(self.prior.grid)) if self.flat else self.prior
        update = prior.condition if method == "probconserv" else prior.project
        result = update(self.constraint, rcond=rcond, singular=singular)
        return result.with_grid(self.prior.grid) if self.flat else result


def _describe(model) -> str:
    code = getattr(model, "__code__", None)
    where = f" in {code.co_filename}" if code is not None else ""
    return f"{getattr(model, '__qualname__', type(model).__name__)}{where}"


class ExactConditioning:
    """The exact constrained posterior of `latent` in a Pyro model, like pyro.infer.Predictive.

    method: "probconserv" (the exact Gaussian posterior given every observed linear site) or
    "hardc" (the mean projected onto the rows, the spread unchanged). Each call traces the
    model once (plus one probe trace the first time a hand-written site is met).

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
        self._linear_sites: set[str] = set()

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
        for msg in collector.observed:
            base = _unwrap(msg["fn"])
            if isinstance(base, ConstraintObservation) and base.field is value:
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
        if generic and not {rows.name for rows in generic} <= self._linear_sites:
            self._check_linear(args, kwargs, prior, generic)
        return self._stack(prior, parts, tuple(value.shape))

    def _check_linear(self, args, kwargs, prior: Posterior, generic: list[SiteRows]) -> None:
        """Trace once more at a probe field; each site's mean there must be matrix probe + offset."""
        generator = torch.Generator().manual_seed(PROBE_SEED)
        probe = prior.mean + torch.randn(prior.grid.shape, generator=generator, dtype=torch.float64)
        collector = self._trace(args, kwargs, lambda fn: _latent_value(fn, probe))
        locs = {
            msg["name"]: _site_mean_and_noise(msg, self.latent)[0] for msg in collector.observed
        }
        for rows in generic:
            actual = locs[rows.name].detach().reshape(-1).to(torch.float64)
            predicted = rows.matrix @ probe.reshape(-1) + rows.offset
            if (predicted - actual).abs().max() > LINEARITY_TOLERANCE * (1 + actual.abs().max()):
                raise UsageError(
                    f"site {rows.name!r}: its mean is not linear in latent {self.latent!r}; "
                    "exact conditioning needs G u + c"
                )
            self._linear_sites.add(rows.name)

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
        """{latent: draws (num_samples, *event_shape)} and, per observed site, G u of each
        draw (num_samples, slices, rows of that site)."""
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
