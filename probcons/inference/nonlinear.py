"""Nonlinear constraint sites h(u) = b + eps by iterated linearisation (Gauss-Newton, IEKF).

Prior u ~ N(m, Sigma) on a (t, x) grid (N = n_t n_x points), sites h_s(u) = b_s + eps_s with
eps_s ~ N(0, diag(noise_s^2)) (noise 0: exact) and linear rows G u = c + eps. Iteration k
linearises every site at u_k,

    J_k u = b - h(u_k) + J_k u_k + eps,        J_k = dh/du at u_k, (m, N),

stacks these rows with G and conditions the prior on them exactly (`Posterior.condition`); the
conditioned mean is T(u_k). This is the iterated extended Kalman update: Gauss-Newton for

    min f(u) = 1/2 |u - m|^2_{Sigma^-1} + 1/2 |h(u) - b|^2_{R^-1}   s.t. c(u) = 0

(c: the exact rows h_E(u) - b_E and G_E u - c_E), whose fixed points are its first-order (KKT)
points; with exact sites, d = T(u_k) - u_k is the SQP step with B = Sigma^-1 (+ J^T R^-1 J for
noisy rows) in place of the Lagrangian's Hessian, and T(u_k) = m + Sigma J^T a gives the
multipliers lambda = -a (exact rows) and Sigma^-1 (T - m) = J^T a without Sigma^-1 (`_prior_pull`).

Globalisation (`_line_search`): u_{k+1} = u_k + alpha d with alpha backtracked (quadratic
interpolation) from the damping's guess (`_Damping`, 1 while Gauss-Newton converges by itself)
until the exact penalty merit

    phi(u) = f(u) + mu |c(u)|_1,        mu = PENALTY_MARGIN max |lambda_k|,

decreases by ARMIJO alpha phi'(u_k; d). phi'(u; d) <= -d^T B d - (mu - max|lambda|) |c|_1 < 0,
so every step decreases phi (mu of that step) and the iterates cannot run away; the prior term
along the segment is the quadratic a w^T d + a^2/2 d^T (Sigma^-1 (T - m) - w), w = Sigma^-1
(u - m) carried along, so phi costs no Sigma^-1 and the step stays O(N) for per-slice rows. mu
is set from each step's multipliers (it may decrease: a mu kept at its largest value, met far
from the mode, makes the merit all violation and the iteration crawl along curved sites). Where
the line search stalls (alpha < STALL_STEP STALL_ITERATIONS times running: a valley of phi where
J is near singular, e.g. u_0 -> 0 for u_0^m g(u)), `_find_mode` falls back to the damped
iteration alone from the prior mean (no merit: it may jump out of such a valley), and raises
the first ConvergenceError if that fails too. `merits` records (mu, phi before, phi after) per
searched step.

Stopping rule: converged when every exact row has |h(u) - b| <= tolerance * scale_s,
scale_s = max_k (|b_k| + (|J| |u|)_k) (the size of the terms that make up h_s, over all its
rows), and either the full step max|T(u_k) - u_k| <= tolerance (max|u| + max sd of the prior)
or the KKT residual is small against its scale: grad f + J^T lambda = -B d, whose dual norm is
|d|_B ~ |d|_{Sigma^-1}, the step in prior standard deviations, at most STATIONARITY times
max(1, |u - m|_{Sigma^-1}), the dual norm of the prior's pull grad f. The second test is what
the mode needs: it is exact to STATIONARITY of the prior's spread, where the first asks for a
step that the conditioning cannot resolve when Sigma is ill-conditioned (a GP prior: T(u) has
round-off ~1e-9 max|u|, and the steps stall there). `iterations` counts the conditionings, the
last one only confirming: a linear h takes 2 (the first gives `condition`'s mean, the second a
zero step).

Rows that each read one time slice (read off the Jacobian) keep the update per slice, O(N) for
block-structured priors; otherwise every row goes on grid.flattened() as one dense constraint.
The first Jacobian of a site is dense (m x N entries, one batched backward pass); once its rows
are known to read one slice each, later ones take r + u + 1 backward passes (r rows per slice, u
rows that were zero) with a random check (`probcons.inference.rows.compressed_jacobian`), so an
iteration costs O(N) for such sites. A linearised row that is all zero (h_k does not depend on
u to first order there) is dropped for that step when it holds to the tolerance (or is noisy),
else it is a SingularConstraintError naming the site and the row.

What the result is: the mode, and the feasibility of every draw, are exact to the tolerance.
The spread is the linearised Laplace approximation (the prior conditioned on the rows linearised
at the mode, mean = mode), with each draw then projected onto the exact sites (Gauss-Newton for
c(x) = 0 in the prior's metric, each step backtracked on the scaled violation
sum_s |c_s|_1 / scale_s, `_feasibility_search`); it is not the exact nonlinear posterior.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from probcons.conditioning import RCOND, REFINEMENT_STEPS, REFINEMENT_TOLERANCE
from probcons.constraints import LinearConstraint
from probcons.constraints.linear import SMALLEST_SQUARABLE
from probcons.errors import ConvergenceError, SingularConstraintError, UsageError
from probcons.grid import Grid
from probcons.inference.rows import (
    JACOBIAN_LIMIT,
    PLACEHOLDER_NOISE,
    SlicedJacobian,
    compressed_jacobian,
    jacobian,
    padded_rows,
)
from probcons.mixture import GaussianMixture
from probcons.posterior import Posterior, check_generator
from probcons.prediction import GaussianPrediction
from probcons.validation import (
    as_float64_tensor,
    check_in_interval,
    check_positive_int,
    describe,
)

TOLERANCE = 1e-10
"""Relative tolerance of the mode and of the projected draws: the step against
max|u| + max sd, and each exact row's |h(u) - b| against its site's scale."""
MAX_ITERATIONS = 100
"""Most conditionings (mode) or projection steps (per draw) before a ConvergenceError. Each is
cheap (one exact update); Gauss-Newton converges linearly, slowest where h has a degenerate root
(J -> 0 at the solution, e.g. u_0^3 g(u) = 0 reached through u_0 -> 0: rate 2/3, ~50 steps)."""
MIN_STEP_FRACTION = 2.0**-10
"""Smallest fraction alpha of a Gauss-Newton step that the damping takes (see `_Damping`)."""
STATIONARITY = 1e-9
"""The mode is also converged when the Gauss-Newton step d measured in prior standard
deviations, |d|_{Sigma^-1} (the KKT residual's dual norm), is at most this times
max(1, |u - m|_{Sigma^-1}) (the prior pull's), with the exact rows holding to the tolerance."""
ARMIJO = 1e-4
"""Sufficient decrease: a step alpha d is taken when phi(u + alpha d) - phi(u) <= ARMIJO alpha
phi'(u; d) (phi the exact penalty merit, phi' < 0 along the Gauss-Newton direction d)."""
PENALTY_MARGIN = 2.0
"""The penalty mu of the merit is at least this times the largest |multiplier| of the exact
rows (mu > max |lambda| makes d a descent direction of phi); mu never decreases."""
BACKTRACK_MIN = 0.1
"""Each backtracking step shortens alpha to the minimiser of the quadratic through phi(0),
phi'(0) and phi(alpha), kept in [BACKTRACK_MIN alpha, alpha / 2]."""
MIN_LINE_STEP = 2.0**-40
"""Smallest alpha the line search tries before it gives up (a ConvergenceError)."""
STALL_STEP = 1e-3
STALL_ITERATIONS = 5
"""The line search stalls when it takes alpha < STALL_STEP this many iterations running (or finds
no alpha >= MIN_LINE_STEP): the merit has a valley there (`_find_mode` then falls back)."""
MERIT_ROUNDOFF = 1e-13
"""Changes of the merit below this times the size of its terms (`_violation_size` for the
violation) are round-off: such steps are taken."""


@dataclass(frozen=True, eq=False)
class NonlinearSite:
    """h(u) = value + eps, eps ~ N(0, diag(noise^2)); noise 0 = exact (a Delta site).

    function: field (n_t, n_x) float64 (requires grad) -> h(u), m float64 values in any shape
    (read flattened), differentiable by autograd. value: b, (m,). noise: std, (m,) or a number.
    """

    name: str
    function: Callable[[torch.Tensor], torch.Tensor]
    value: torch.Tensor
    noise: torch.Tensor | float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"name: expected a non-empty str, got {self.name!r}")
        if not callable(self.function):
            raise UsageError(
                f"function: expected a callable field (n_t, n_x) -> h(u), "
                f"got {describe(self.function)}"
            )
        value = as_float64_tensor(self.value, "value").reshape(-1)
        if value.numel() == 0:
            raise UsageError("value: expected at least one observed value, got none")
        noise = as_float64_tensor(self.noise, "noise")
        try:
            noise = torch.broadcast_to(noise, value.shape).clone()
        except RuntimeError:
            raise UsageError(
                f"noise: expected a number or shape {tuple(value.shape)} (as value), "
                f"got {describe(noise)}"
            ) from None
        if bool((noise < 0).any()) or bool(((noise > 0) & (noise < SMALLEST_SQUARABLE)).any()):
            raise UsageError(
                f"noise: expected 0 (exact) or standard deviations >= {SMALLEST_SQUARABLE:.3g}, "
                f"got minimum {float(noise[noise != 0].min()):.3g}"
            )
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "noise", noise)

    @property
    def size(self) -> int:
        """m, the number of values."""
        return self.value.numel()

    @property
    def exact(self) -> torch.Tensor:
        """(m,) True where the row is exact (noise 0)."""
        return self.noise == 0


def nonlinear_site(
    name: str,
    function: Callable[[torch.Tensor], torch.Tensor],
    value,
    noise=0.0,
    *,
    field=None,
) -> NonlinearSite:
    """A checked NonlinearSite h(u) = value + eps from a Python function and observed values.

    value: b (m,) or any shape (flattened); noise: a std >= 0 or (m,). With `field` (n_t, n_x),
    the function is evaluated there once to check that it returns m finite float64 values that
    autograd can differentiate (the error names the site).
    """
    site = NonlinearSite(name, function, value, noise)
    if field is not None:
        field = as_float64_tensor(field, "field")
        if field.dim() != 2:
            raise UsageError(f"field: expected shape (n_t, n_x), got {describe(field)}")
        _, rows = _linearise(site, field, "field", {})
        matrix = rows.weights if isinstance(rows, SlicedJacobian) else rows
        if not bool(torch.isfinite(matrix).all()):
            raise UsageError(f"site {site.name!r}: its Jacobian at field is not finite")
    return site


def _linearise(site: NonlinearSite, point: torch.Tensor, where: str, patterns: dict):
    """(h(point) (m,), J = dh/du at point) in float64, point (n_t, n_x). J is a SlicedJacobian
    when each row reads one time slice (from r + u + 1 backward passes once `patterns` holds the
    site's pattern from an earlier point, checked), else a dense (m, N) tensor."""
    leaf = point.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        output = site.function(leaf)
    if not isinstance(output, torch.Tensor) or output.numel() != site.size:
        raise UsageError(
            f"site {site.name!r}: expected its function to return a tensor of {site.size} "
            f"values (as many as value), got {describe(output)}"
        )
    if output.dtype != torch.float64:
        raise UsageError(
            f"site {site.name!r}: expected its function to return float64 values (the "
            f"iteration converges to {TOLERANCE:g}), got {output.dtype}"
        )
    flat = output.reshape(-1)
    values = flat.detach()
    if not bool(torch.isfinite(values).all()):
        raise ConvergenceError(
            f"{where}: site {site.name!r}: h(u) is not finite (NaN or infinite) at this point"
        )
    if not flat.requires_grad:
        zeros = torch.zeros(site.size, point.shape[-1], dtype=torch.float64)
        return values, SlicedJacobian(zeros, torch.zeros(site.size, dtype=torch.int64))
    pattern = patterns.get(site.name)
    if pattern is not None:
        sliced = compressed_jacobian(flat, leaf, pattern)
        if sliced is not None:
            patterns[site.name] = sliced.pattern()
            return values, sliced
    if flat.numel() * leaf.numel() > JACOBIAN_LIMIT:
        raise UsageError(
            f"site {site.name!r}: {flat.numel()} values on {leaf.numel()} points need a dense "
            f"Jacobian over the limit of {JACOBIAN_LIMIT} entries; split the site"
        )
    matrix = jacobian(flat, leaf)
    sliced = SlicedJacobian.from_dense(matrix, tuple(point.shape))
    if sliced is None:
        patterns.pop(site.name, None)
        return values, matrix
    patterns[site.name] = sliced.pattern()
    return values, sliced


@dataclass(frozen=True)
class _SiteState:
    """One site read at a point: h (m,), its scale, and its kept rows J u = b - h + J u0
    (rhs, noise (k,)): `sliced` per time slice, or `matrix` (k, N) when some row mixes slices."""

    site: NonlinearSite
    values: torch.Tensor
    scale: float
    kept: torch.Tensor  # (k,) indices into the site's m rows
    rhs: torch.Tensor
    sliced: SlicedJacobian | None
    matrix: torch.Tensor | None

    @property
    def residual(self) -> torch.Tensor:
        """h(u) - b, (m,)."""
        return self.values - self.site.value

    def excess(self, tolerance: float) -> float:
        """max over exact rows of |h - b| / (tolerance * scale): <= 1 when they hold."""
        exact = self.residual[self.site.exact].abs()
        reached = float(exact.max()) if exact.numel() else 0.0
        if reached == 0:
            return 0.0
        allowed = tolerance * self.scale
        return reached / allowed if allowed > 0 else math.inf

    def describe(self, tolerance: float) -> str:
        """The site's residual against its tolerance, for error messages."""
        exact = self.site.exact
        if not bool(exact.any()):
            reached = float(self.residual.abs().max())
            return f"site {self.site.name!r}: max |h(u) - b| = {reached:.3g} (noisy rows only)"
        reached = float(self.residual[exact].abs().max())
        return (
            f"site {self.site.name!r}: max |h(u) - b| = {reached:.3g} over its exact rows "
            f"(tolerance {tolerance * self.scale:.3g} = {tolerance:g} x site scale "
            f"{self.scale:.3g})"
        )

    def per_slice(self, n_t: int) -> LinearConstraint | None:
        """The kept rows as (n_t, r, n_x), padded with placeholders; None if there are none."""
        noise = self.site.noise[self.kept]
        sliced = self.sliced
        return padded_rows(self.site.name, sliced.weights, sliced.slice_of, self.rhs, noise, n_t)

    def flat(self, grid: Grid) -> LinearConstraint:
        """The kept rows on the flattened grid, (1, k, N), named "name[row]"."""
        matrix = self.matrix
        if matrix is None:
            sliced = self.sliced
            matrix = torch.zeros(self.kept.numel(), *grid.shape, dtype=torch.float64)
            matrix[torch.arange(self.kept.numel()), sliced.slice_of] = sliced.weights
            matrix = matrix.reshape(self.kept.numel(), -1)
        names = tuple(f"{self.site.name}[{int(k)}]" for k in self.kept)
        return LinearConstraint(
            matrix[None], self.rhs[None], self.site.noise[self.kept][None], names
        )


def _site_state(
    site: NonlinearSite,
    point: torch.Tensor,
    tolerance: float,
    where: str,
    exact_only: bool,
    patterns: dict,
) -> _SiteState:
    """h and its rows J u = b - h(u0) + J u0 at `point` (noisy rows left out when exact_only);
    an all-zero row is dropped when it holds (or is noisy), else raises naming the row."""
    values, rows = _linearise(site, point, where, patterns)
    if isinstance(rows, SlicedJacobian):
        reads = point[rows.slice_of]  # (m, n_x): the slice each row reads
        applied = (rows.weights * reads).sum(dim=-1)  # J u0
        magnitude = (rows.weights.abs() * reads.abs()).sum(dim=-1)  # |J| |u0|
        zero = rows.weights.abs().amax(dim=-1) == 0
    else:
        applied = rows @ point.reshape(-1)
        magnitude = rows.abs() @ point.reshape(-1).abs()
        zero = rows.abs().amax(dim=-1) == 0
    if not bool(torch.isfinite(magnitude).all()):  # NaN or infinite if any J_ki is
        raise ConvergenceError(
            f"{where}: site {site.name!r}: its Jacobian is not finite (NaN or infinite) here"
        )
    scale = float((site.value.abs() + magnitude).max())
    residual = values - site.value
    unseen = zero & site.exact & (residual.abs() > tolerance * scale)
    if bool(unseen.any()):
        row = int(unseen.nonzero()[0])
        raise SingularConstraintError(
            f"{where}: site {site.name!r}: row {row} of its linearisation is all zero (h does "
            f"not depend on u there to first order) but |h(u) - b| = "
            f"{float(residual[row].abs()):.3g} > {tolerance * scale:.3g} (tolerance "
            f"{tolerance:g} x site scale {scale:.3g}): the prior cannot see this row; start "
            "from another prior mean or give it noise > 0"
        )
    keep = ~zero & site.exact if exact_only else ~zero
    kept = keep.nonzero().reshape(-1)
    rhs = (site.value - values + applied)[kept]
    if isinstance(rows, SlicedJacobian):
        sliced = SlicedJacobian(rows.weights[kept], rows.slice_of[kept])
        return _SiteState(site, values, scale, kept, rhs, sliced, None)
    return _SiteState(site, values, scale, kept, rhs, None, rows[kept])


def _stacked(
    states: list[_SiteState], linear: LinearConstraint | None, grid: Grid
) -> tuple[LinearConstraint | None, bool]:
    """(every kept row and `linear` stacked, flat): per time slice when each row reads one
    slice, else on grid.flattened() (flat = True); None when there are no rows."""
    states = [state for state in states if state.kept.numel()]
    flat = linear is not None and (linear.n_t, linear.n_x) != grid.shape
    flat = flat or any(state.sliced is None for state in states)
    if flat:
        parts = [state.flat(grid) for state in states]
        if linear is not None and (linear.n_t, linear.n_x) == grid.shape:
            linear = linear.flattened()
    else:
        parts = [state.per_slice(grid.n_t) for state in states]
    if linear is not None:
        parts.append(linear)
    if not parts:
        return None, flat
    first, *rest = parts
    return (first.stack(*rest) if rest else first), flat


def _conditioned(
    prior: GaussianPrediction, constraint: LinearConstraint | None, flat: bool, rcond: float
) -> GaussianPrediction:
    """The prior conditioned exactly on `constraint` (on grid.flattened() when flat)."""
    if constraint is None:
        return prior
    if not flat:
        return prior.condition(constraint, rcond=rcond)
    grid = prior.grid
    return prior.with_grid(grid.flattened()).condition(constraint, rcond=rcond).with_grid(grid)


@dataclass(frozen=True, eq=False)
class _Problem:
    """What the iteration and the projection of draws read: sites, rows, settings."""

    sites: tuple[NonlinearSite, ...]
    linear: LinearConstraint | None
    tolerance: float
    max_iterations: int
    rcond: float
    patterns: dict = dataclasses.field(default_factory=dict)
    """Site name -> the JacobianPattern read at the last point (rows per time slice)."""

    def states(self, point, where, exact_only=False) -> list[_SiteState]:
        """Each site read at `point` (only sites with exact rows when exact_only)."""
        sites = [site for site in self.sites if not exact_only or bool(site.exact.any())]
        return [
            _site_state(site, point, self.tolerance, where, exact_only, self.patterns)
            for site in sites
        ]

    def worst(self, states: list[_SiteState]) -> tuple[float, _SiteState | None]:
        """(largest excess, its site) over the exact rows of `states`."""
        excess = [state.excess(self.tolerance) for state in states]
        if not excess:
            return 0.0, None
        index = max(range(len(excess)), key=excess.__getitem__)
        return excess[index], states[index]

    def culprit(self, states: list[_SiteState]) -> _SiteState:
        """The site an error names: the worst exact row's (`worst`), else the largest residual's."""
        _, state = self.worst(states)
        return state or max(states, key=lambda s: float(s.residual.abs().max()))

    def exact_linear(self) -> LinearConstraint | None:
        """The exact rows of `linear`; noisy ones become placeholders 0 u = 0 + eps."""
        linear = self.linear
        if linear is None or not bool((linear.noise_std == 0).any()):
            return None
        if linear.is_exact:
            return linear
        noisy = linear.noise_std > 0
        weights = linear.weights.clone()
        weights[noisy] = 0.0
        return LinearConstraint(
            weights,
            linear.values.masked_fill(noisy, 0.0),
            linear.noise_std.masked_fill(noisy, PLACEHOLDER_NOISE),
            linear.names,
        )


class _Damping:
    """The fraction alpha of each full step d = T(u) - u that u <- u + alpha d takes.

    Near a fixed point d_k ~ (1 - alpha eta) d_{k-1} along the slowest mode, eta > 0 the
    curvature of the true objective there over that of its Gauss-Newton model; plain
    Gauss-Newton (alpha = 1) oscillates and diverges when eta > 2 (a strongly curved exact site).
    c = <d_k, d_{k-1}> / |d_{k-1}|^2 estimates 1 - alpha eta, and alpha <- alpha / (1 - c) = 1 / eta
    settles that mode in one step; alpha stays in [MIN_STEP_FRACTION, 1] (1 while Gauss-Newton
    converges by itself, so a linear h takes the plain step) and is kept when c >= 1.
    """

    def __init__(self) -> None:
        self.fraction = 1.0
        self.previous: torch.Tensor | None = None

    def __call__(self, step: torch.Tensor) -> float:
        """alpha for the full step `step` (any shape), from it and the one before."""
        flat = step.reshape(-1)
        if self.previous is not None:
            norm = float(self.previous @ self.previous)
            ratio = float(flat @ self.previous) / norm if norm > 0 else 0.0
            if ratio < 1:
                self.fraction = min(1.0, max(MIN_STEP_FRACTION, self.fraction / (1 - ratio)))
        self.previous = flat
        return self.fraction


def _rows_at(constraint: LinearConstraint, field: torch.Tensor) -> torch.Tensor:
    """G u for one field on the grid (n_t, n_x) or its flattening, in the rows' layout."""
    return constraint.apply(field.reshape(constraint.n_t, constraint.n_x))


def _site_values(site: NonlinearSite, point: torch.Tensor) -> torch.Tensor | None:
    """h(point) (m,) without derivatives, for a trial point; None if any value is not finite
    (the line search then shortens the step)."""
    with torch.no_grad():
        output = site.function(point)
    values = output.detach().reshape(-1).to(torch.float64)
    if values.numel() != site.size or not bool(torch.isfinite(values).all()):
        return None
    return values


def _linear_residual(linear: LinearConstraint | None, point: torch.Tensor) -> torch.Tensor | None:
    """G u - c of the linear rows at `point`, in their layout; None when there are none."""
    return None if linear is None else linear.residual(point.reshape(linear.n_t, linear.n_x))


def _merit_terms(
    problem: _Problem, residuals: Sequence[torch.Tensor], point: torch.Tensor
) -> tuple[float, float]:
    """(noisy, violation) at `point` from the sites' residuals h_s - b_s (in site order):
    noisy = 1/2 sum (r / noise)^2 over noisy rows (sites and linear), violation = sum |r| over
    exact rows (sites and linear), the l1 norm of the constraint violation."""
    noisy, violation = 0.0, 0.0
    parts = [(r, site.noise) for r, site in zip(residuals, problem.sites, strict=True)]
    linear = problem.linear
    if linear is not None:
        residual = _linear_residual(linear, point)
        parts.append((residual.reshape(-1), linear.noise_std.expand_as(residual).reshape(-1)))
    for residual, noise in parts:
        exact = noise == 0
        violation += float(residual[exact].abs().sum())
        noisy += 0.5 * float((residual[~exact] / noise[~exact]).square().sum())
    return noisy, violation


def _prior_pull(
    prior: GaussianPrediction, laplace: GaussianPrediction, constraint: LinearConstraint | None
) -> tuple[torch.Tensor, float]:
    """(Sigma^-1 (T - m) (n_t, n_x), max |multiplier| over the exact rows) of the conditioned
    mean T = m + Sigma G^T a, a = S^-1 (c - G m), S = G Sigma G^T + R: Sigma^-1 (T - m) = G^T a,
    and -a on the exact rows are the Lagrange multipliers of the linearised problem. a is solved
    with the factors of the update already formed, refined as the mean is, O(N) per slice."""
    if constraint is None:
        return torch.zeros_like(prior.mean), 0.0
    update = laplace.covariance.update
    rows = update.constraint
    target = rows.values - _rows_at(rows, prior.mean)
    weights = update.solve(target)
    for _ in range(REFINEMENT_STEPS):
        spread = update.spread(weights)
        misfit = target - _rows_at(rows, spread) - rows.noise_std**2 * weights
        if float(misfit.abs().max()) <= REFINEMENT_TOLERANCE * float(target.abs().max()):
            break
        weights = weights + update.solve(misfit)
    pull = rows.apply_transpose(weights).reshape(prior.mean.shape)
    exact = (rows.noise_std == 0).expand_as(weights)
    largest = float(weights[exact].abs().max()) if bool(exact.any()) else 0.0
    return pull, largest


@dataclass
class _Iterate:
    """A point u of the mode search with what the merit needs there: w = Sigma^-1 (u - m), the
    site states (h, rows) and the merit terms."""

    point: torch.Tensor
    weight: torch.Tensor
    states: list[_SiteState]
    noisy: float
    violation: float


def _line_search(
    prior: GaussianPrediction,
    problem: _Problem,
    current: _Iterate,
    laplace: GaussianPrediction,
    constraint: LinearConstraint | None,
    pull: torch.Tensor,
    penalty: float,
    fraction: float,
    where: str,
) -> tuple[_Iterate, float, tuple[float, float, float]]:
    """The step u + alpha d, d = T(u) - u, with alpha backtracked from `fraction` until the exact
    penalty merit phi = 1/2 |u - m|^2_{Sigma^-1} + (noisy misfit) + mu |c(u)|_1 decreases by
    ARMIJO alpha phi'(u; d) (pull = Sigma^-1 (T - m)). Along the segment the prior term is the
    quadratic a w^T d + a^2/2 d^T Sigma^-1 d, w = Sigma^-1 (u - m), Sigma^-1 d = pull - w.
    Returns (the new iterate, alpha, (mu, phi before, phi after)); alpha = 0 when no step below
    MIN_LINE_STEP decreases phi."""
    point, weight = current.point, current.weight
    direction = laplace.mean - point
    offset = point - prior.mean
    slope_prior = float(weight.reshape(-1) @ direction.reshape(-1))
    curvature = float(direction.reshape(-1) @ (pull - weight).reshape(-1))  # d^T Sigma^-1 d
    slope_noisy = 0.0
    if constraint is not None:  # d/da 1/2 |G u - c|^2_{R^-1} over the noisy rows, J d = G d
        slack_rows = (constraint.noise_std > 0).expand_as(constraint.values)
        variance = constraint.noise_std.expand_as(constraint.values)[slack_rows] ** 2
        now = _rows_at(constraint, point)
        change = (_rows_at(constraint, laplace.mean) - now)[slack_rows]
        misfit = (now - constraint.values)[slack_rows]
        slope_noisy = float((misfit * change / variance).sum())
    slope = min(0.0, slope_prior + slope_noisy - penalty * current.violation)
    prior_term = 0.5 * float(offset.reshape(-1) @ weight.reshape(-1))
    before = prior_term + current.noisy + penalty * current.violation
    size = abs(prior_term) + current.noisy + penalty * _violation_size(problem, current)
    slack = MERIT_ROUNDOFF * size
    alpha = fraction
    while alpha >= MIN_LINE_STEP:
        trial = laplace.mean if alpha == 1.0 else point + alpha * direction
        values = [_site_values(site, trial) for site in problem.sites]
        if all(v is not None for v in values):
            residuals = [v - site.value for v, site in zip(values, problem.sites, strict=True)]
            noisy, violation = _merit_terms(problem, residuals, trial)
            prior_change = alpha * slope_prior + 0.5 * alpha**2 * curvature
            change = (
                prior_change + (noisy - current.noisy) + penalty * (violation - current.violation)
            )
            if change <= ARMIJO * alpha * slope + slack:
                states = problem.states(trial, where)
                moved = pull if alpha == 1.0 else weight + alpha * (pull - weight)
                new = _Iterate(trial, moved, states, noisy, violation)
                return new, alpha, (penalty, before, before + change)
            model = change - alpha * slope  # quadratic through phi(0), phi'(0), phi(alpha)
            shorter = -slope * alpha**2 / (2 * model) if model > 0 else 0.5 * alpha
            alpha = min(0.5 * alpha, max(BACKTRACK_MIN * alpha, shorter))
        else:
            alpha = 0.5 * alpha
    return current, 0.0, (penalty, before, before)


def _find_mode(prior: GaussianPrediction, problem: _Problem, label: str) -> NonlinearPosterior:
    """The mode by the globalised iteration (`_globalised_mode`); where its line search stalls
    (a valley of the merit where J is near singular, e.g. u_0 -> 0 for u_0^m g(u)), the damped
    iteration from the prior mean (`_damped_mode`), and the first error if both fail."""
    try:
        return _globalised_mode(prior, problem, label)
    except ConvergenceError as error:
        try:
            return _damped_mode(prior, problem, label)
        except ConvergenceError:
            raise error from None


def _globalised_mode(
    prior: GaussianPrediction, problem: _Problem, label: str
) -> NonlinearPosterior:
    """Iterate u_{k+1} = u_k + alpha (T(u_k) - u_k), T(u_k) = E[u | rows linearised at u_k],
    from u_0 = the prior mean, alpha from `_Damping` then backtracked on the exact penalty merit
    (`_line_search`); converged when the full step and the residuals are small, and then
    u_{k+1} = T(u_k) (the Laplace mean)."""
    grid = prior.grid
    point = prior.mean
    spread = float(prior.variance.clamp_min(0).sqrt().max())
    states = problem.states(point, f"{label}iteration 0 (prior mean)")
    current = _Iterate(
        point, torch.zeros_like(point), states, *_state_terms(problem, states, point)
    )
    damping = _Damping()
    penalty = 0.0
    merits: list[tuple[float, float, float]] = []
    step = math.inf
    stalled = 0
    for iteration in range(1, problem.max_iterations + 1):
        where = f"{label}iteration {iteration}"
        constraint, flat = _stacked(current.states, problem.linear, grid)
        try:
            laplace = _conditioned(prior, constraint, flat, problem.rcond)
        except SingularConstraintError as error:
            raise SingularConstraintError(f"{where}: {error}") from error
        full = laplace.mean - current.point
        step = float(full.abs().max())
        pull, largest = _prior_pull(prior, laplace, constraint)
        stationary = _stationary(*_kkt_norms(prior, current.point, current.weight, full, pull))
        if stationary or step <= problem.tolerance * (float(laplace.mean.abs().max()) + spread):
            states = problem.states(laplace.mean, where)
            if problem.worst(states)[0] <= 1:
                residuals = {state.site.name: state.residual for state in states}
                return NonlinearPosterior(
                    prior, laplace, iteration, residuals, problem, merits=tuple(merits)
                )
        penalty = PENALTY_MARGIN * largest
        current, fraction, merit = _line_search(
            prior, problem, current, laplace, constraint, pull, penalty, damping(full), where
        )
        merits.append(merit)
        stalled = stalled + 1 if fraction < STALL_STEP else 0
        if fraction == 0.0 or stalled == STALL_ITERATIONS:
            state = problem.culprit(current.states)
            raise ConvergenceError(
                f"{where}: the line search stalls (steps alpha < {STALL_STEP:g} decrease the "
                f"merit, exact penalty mu = {penalty:.3g}): {state.describe(problem.tolerance)}; last "
                f"step {step:.3g}; the sites may admit no u with h(u) = b near here"
            )
    state = problem.culprit(current.states)
    raise ConvergenceError(
        f"{label}no convergence in {problem.max_iterations} iterations "
        f"(max_iterations): {state.describe(problem.tolerance)}; last step {step:.3g} "
        f"(tolerance {problem.tolerance:g} x (max|u| + max sd)); the sites may admit no u with "
        "h(u) = b, or be too curved for Gauss-Newton from the prior mean"
    )


def _kkt_norms(
    prior: GaussianPrediction,
    point: torch.Tensor,
    weight: torch.Tensor,
    full: torch.Tensor,
    pull: torch.Tensor,
) -> tuple[float, float]:
    """(|d|_{Sigma^-1}, |u - m|_{Sigma^-1}) for the full step d = T(u) - u: the KKT residual of
    the linearised problem, grad f + J^T lambda = -Sigma^-1 d, in its dual norm, and the size of
    the prior's pull Sigma^-1 (u - m) in the same norm (w = weight = Sigma^-1 (u - m))."""
    curvature = abs(float(full.reshape(-1) @ (pull - weight).reshape(-1)))
    distance = abs(float((point - prior.mean).reshape(-1) @ weight.reshape(-1)))
    return math.sqrt(curvature), math.sqrt(distance)


def _stationary(residual: float, distance: float) -> bool:
    """|d|_{Sigma^-1} <= STATIONARITY max(1, |u - m|_{Sigma^-1}) (module docstring), from
    `_kkt_norms`."""
    return residual <= STATIONARITY * max(1.0, distance)


def _violation_size(problem: _Problem, current: _Iterate) -> float:
    """The size of the terms that make up the violation |c(u)|_1: each exact row's site scale
    (|b| + |J| |u|), and |c| + |G| |u| for the exact linear rows; |c|_1 is known to round-off of
    this."""
    size = sum(state.scale * int(state.site.exact.sum()) for state in current.states)
    linear = problem.linear
    if linear is not None:
        field = current.point.reshape(linear.n_t, 1, linear.n_x).abs()
        magnitude = (linear.weights.abs() * field).sum(dim=-1) + linear.values.abs()
        exact = (linear.noise_std == 0).expand_as(magnitude)
        size += float(magnitude[exact].sum())
    return size


def _state_terms(
    problem: _Problem, states: list[_SiteState], point: torch.Tensor
) -> tuple[float, float]:
    """The merit's (noisy, violation) from the states of every site read at `point`."""
    return _merit_terms(problem, [state.residual for state in states], point)


def _damped_mode(prior: GaussianPrediction, problem: _Problem, label: str) -> NonlinearPosterior:
    """The fallback of `_find_mode`: u_{k+1} = u_k + alpha (T(u_k) - u_k) with alpha from
    `_Damping` alone (no merit), from u_0 = the prior mean, to the same stopping rule."""
    grid = prior.grid
    point = prior.mean
    spread = float(prior.variance.clamp_min(0).sqrt().max())
    states = problem.states(point, f"{label}iteration 0 (prior mean)")
    weight = torch.zeros_like(point)
    damping = _Damping()
    step = math.inf
    for iteration in range(1, problem.max_iterations + 1):
        where = f"{label}iteration {iteration}"
        constraint, flat = _stacked(states, problem.linear, grid)
        try:
            laplace = _conditioned(prior, constraint, flat, problem.rcond)
        except SingularConstraintError as error:
            raise SingularConstraintError(f"{where}: {error}") from error
        full = laplace.mean - point
        step = float(full.abs().max())
        pull, _ = _prior_pull(prior, laplace, constraint)
        small = step <= problem.tolerance * (float(laplace.mean.abs().max()) + spread)
        small = _stationary(*_kkt_norms(prior, point, weight, full, pull)) or small
        fraction = 1.0 if small else damping(full)
        point = laplace.mean if fraction == 1.0 else point + fraction * full
        weight = pull if fraction == 1.0 else weight + fraction * (pull - weight)
        states = problem.states(point, where)
        if small and problem.worst(states)[0] <= 1:
            residuals = {state.site.name: state.residual for state in states}
            return NonlinearPosterior(prior, laplace, iteration, residuals, problem)
    state = problem.culprit(states)
    raise ConvergenceError(
        f"{label}no convergence in {problem.max_iterations} iterations "
        f"(max_iterations): {state.describe(problem.tolerance)}; last step {step:.3g} "
        f"(tolerance {problem.tolerance:g} x (max|u| + max sd)); the sites may admit no u with "
        "h(u) = b, or be too curved for Gauss-Newton from the prior mean"
    )


class NonlinearPosterior(Posterior):
    """The result of `condition_nonlinear`: the mode and its Laplace approximation.

    Gaussian prior: mode (n_t, n_x); iterations (int); residuals {site: h(mode) - b (m,)};
    laplace, the GaussianPrediction of the prior conditioned on the rows linearised at the
    mode (mean = mode). GaussianMixture prior: each component has its own mode (`components`,
    one NonlinearPosterior each); mode (K, n_t, n_x), residuals {site: (K, m)}, iterations the
    most any component took, laplace the GaussianMixture of the components' Laplace posteriors.

    mean = mode (the mixture mean of the modes); variance = the Laplace variance. Draws
    (`sample`, `rsample` with or without base_samples) are Laplace draws, each projected onto the
    exact sites by Gauss-Newton in the prior's metric, x <- x - Sigma J^T (J Sigma J^T)^-1 r(x),
    with the exact linear rows in J and r so that they stay satisfied (deterministic given the
    base samples). Exact to the tolerance: the mode and every draw's feasibility. Approximate: the
    spread. `condition` and `project` raise a UsageError: rows added afterwards would move the
    mode off the point the rows were linearised at; pass them to condition_nonlinear(linear=...),
    or use `laplace.condition(...)` for the Gaussian approximation.
    """

    def __init__(
        self,
        prior: GaussianPrediction,
        laplace: GaussianPrediction,
        iterations: int,
        residuals: dict[str, torch.Tensor],
        problem: _Problem,
        grid: Grid | None = None,
        merits: tuple[tuple[float, float, float], ...] = (),
    ) -> None:
        self.prior = prior
        self.merits = merits
        self.laplace = laplace
        self.iterations = iterations
        self.residuals = residuals
        self.components: tuple[NonlinearPosterior, ...] = ()
        self._problem = problem
        self.grid = prior.grid if grid is None else grid
        if grid is not None:
            self.laplace = laplace.with_grid(grid)

    @classmethod
    def mixture(cls, components: Sequence[NonlinearPosterior]) -> NonlinearPosterior:
        """The equal-weight mixture of per-component results (each with its own mode)."""
        first = components[0]
        result = cls.__new__(cls)
        result.components = tuple(components)
        result.prior = GaussianMixture([c.prior for c in components])
        result.laplace = GaussianMixture([c.laplace for c in components])
        result.iterations = max(c.iterations for c in components)
        result.merits = ()
        result.residuals = {
            name: torch.stack([c.residuals[name] for c in components]) for name in first.residuals
        }
        result._problem = first._problem
        result.grid = first.grid
        return result

    @property
    def mode(self) -> torch.Tensor:
        """The constrained mode (n_t, n_x); per component (K, n_t, n_x) for a mixture."""
        if self.components:
            return torch.stack([c.mode for c in self.components])
        return self.laplace.mean

    @property
    def mean(self) -> torch.Tensor:
        return self.laplace.mean

    @property
    def variance(self) -> torch.Tensor:
        """The Laplace posterior's marginal variances, (n_t, n_x)."""
        return self.laplace.variance

    @property
    def base_sample_shape(self) -> torch.Size:
        return self.laplace.base_sample_shape

    def _projected(self, draws: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Laplace draws (n, n_t, n_x), each projected onto the exact sites; labels (n,) number
        the draws in error messages."""
        problem = self._problem
        shape = self.prior.grid.shape
        linear = problem.exact_linear()
        return torch.stack(
            [
                _project(draw.reshape(shape), self.prior, problem, linear, f"draw {int(label)}")
                for draw, label in zip(draws, labels, strict=True)
            ]
        ).reshape(draws.shape)

    def draws_from_base(self, base: torch.Tensor) -> torch.Tensor:
        """Projected Laplace draws from standard normals (n, *base_sample_shape); for a mixture
        the component is floor(K Phi(base[:, 0])), as in GaussianMixture."""
        return self._from_base(base, torch.arange(base.shape[0]))

    def _from_base(self, base: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.components:
            return self._projected(self.laplace.draws_from_base(base), labels)
        uniform = torch.special.ndtr(base[:, 0])
        choice = (uniform * len(self.components)).long().clamp_(0, len(self.components) - 1)
        draws = torch.empty((base.shape[0], *self.grid.shape), dtype=torch.float64)
        for index in torch.unique(choice).tolist():
            rows = (choice == index).nonzero().reshape(-1)
            draws[rows] = self.components[index]._from_base(base[rows, 1:], labels[rows])
        return draws

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n projected Laplace draws, (n, n_t, n_x); a uniform component per draw (mixture)."""
        check_positive_int(n, "n")
        check_generator(generator)
        if not self.components:
            return self._projected(self.laplace.sample(n, generator), torch.arange(n))
        choice = torch.randint(len(self.components), (n,), generator=generator)
        draws = torch.empty((n, *self.grid.shape), dtype=torch.float64)
        for index in torch.unique(choice).tolist():
            rows = (choice == index).nonzero().reshape(-1)
            component = self.components[index]
            draws[rows] = component._projected(
                component.laplace.sample(rows.numel(), generator), rows
            )
        return draws

    def condition(self, constraint, **options) -> Posterior:
        """Not supported: raises a UsageError (see the class docstring)."""
        raise UsageError(
            "constraint: expected none after condition_nonlinear (new rows would move the mode "
            "off the point its rows were linearised at); pass them as condition_nonlinear(..., "
            "linear=...), or condition the Gaussian approximation: posterior.laplace.condition"
        )

    def project(self, constraint, **options) -> Posterior:
        """Not supported: raises a UsageError (see the class docstring)."""
        raise UsageError(
            "constraint: expected none after condition_nonlinear (its draws are already "
            "projected onto the exact sites); pass linear rows as condition_nonlinear(..., "
            "linear=...), or project the Gaussian approximation: posterior.laplace.project"
        )

    def with_grid(self, grid: Grid) -> NonlinearPosterior:
        """The same result on another grid of as many points; the sites still read fields of
        the prior's shape (draws are reshaped for them)."""
        if not isinstance(grid, Grid) or grid.size != self.grid.size:
            raise UsageError(f"grid: expected a Grid of {self.grid.size} points, got {grid!r}")
        if self.components:
            return NonlinearPosterior.mixture([c.with_grid(grid) for c in self.components])
        return NonlinearPosterior(
            self.prior,
            self.laplace,
            self.iterations,
            self.residuals,
            self._problem,
            grid,
            self.merits,
        )

    def __repr__(self) -> str:
        kind = f"components={len(self.components)}, " if self.components else ""
        return (
            f"NonlinearPosterior({kind}grid={self.grid!r}, iterations={self.iterations}, "
            f"sites={[site.name for site in self._problem.sites]})"
        )


def _project(
    draw: torch.Tensor,
    prior: GaussianPrediction,
    problem: _Problem,
    linear: LinearConstraint | None,
    label: str,
) -> torch.Tensor:
    """Gauss-Newton onto the exact sites in the prior's metric: x <- x + alpha (T(x) - x),
    T(x) = E[u | rows linearised at x] for u ~ N(x, Sigma) (the exact linear rows included),
    alpha from `_Damping` backtracked on the scaled violation (`_feasibility_search`), until
    they hold to the tolerance."""
    point = draw
    damping = _Damping()
    for step in range(problem.max_iterations + 1):
        where = f"{label}, projection step {step}"
        states = problem.states(point, where, exact_only=True)
        if problem.worst(states)[0] <= 1:
            return point
        if step == problem.max_iterations:
            break
        constraint, flat = _stacked(states, linear, prior.grid)
        local = GaussianPrediction(point, prior.covariance, prior.grid)
        try:
            target = _conditioned(local, constraint, flat, problem.rcond).mean
        except SingularConstraintError as error:
            raise SingularConstraintError(f"{where}: {error}") from error
        fraction = _feasibility_search(
            problem, states, linear, point, target, damping(target - point)
        )
        point = target if fraction == 1.0 else point + fraction * (target - point)
    _, state = problem.worst(states)
    raise ConvergenceError(
        f"{label}: projection onto the exact sites did not converge in "
        f"{problem.max_iterations} steps (max_iterations): {state.describe(problem.tolerance)}"
    )


def _violation(
    problem: _Problem,
    states: list[_SiteState],
    linear: LinearConstraint | None,
    point: torch.Tensor,
    values: list[torch.Tensor] | None = None,
) -> float:
    """theta(u) = sum_s |h_s(u) - b_s|_1 / scale_s over the exact rows of the sites of `states`
    (values: h_s(u) in their order, else the states' own), + |G u - c|_1 / scale over the exact
    rows of `linear`; the scales are the states' (read at the start of the step)."""
    total = 0.0
    for index, state in enumerate(states):
        site = state.site
        residual = (state.values if values is None else values[index]) - site.value
        total += float(residual[site.exact].abs().sum()) / max(state.scale, SMALLEST_SQUARABLE)
    if linear is not None:
        exact = (linear.noise_std == 0).expand(linear.n_t, linear.rows_per_slice)
        residual = _linear_residual(linear, point)[exact].abs()
        total += float(residual.sum()) / max(float(linear.values.abs().max()), 1.0)
    return total


def _feasibility_search(
    problem: _Problem,
    states: list[_SiteState],
    linear: LinearConstraint | None,
    point: torch.Tensor,
    target: torch.Tensor,
    fraction: float,
) -> float:
    """alpha for the projection step x + alpha (T(x) - x): `fraction` halved until the scaled
    violation theta (`_violation`) decreases by ARMIJO alpha theta(x) (theta'(x; d) = -theta(x),
    as J d = -c for every exact row). When no alpha >= MIN_LINE_STEP does (round-off, or a
    valley of theta), `fraction` itself, as the damped iteration alone would take."""
    before = _violation(problem, states, linear, point)
    rows = sum(int(state.site.exact.sum()) for state in states)
    slack = MERIT_ROUNDOFF * (rows + (0 if linear is None else linear.num_rows))
    alpha = fraction
    while alpha >= MIN_LINE_STEP:
        trial = target if alpha == 1.0 else point + alpha * (target - point)
        values = [_site_values(state.site, trial) for state in states]
        if all(value is not None for value in values):
            after = _violation(problem, states, linear, trial, values)
            if after <= (1 - ARMIJO * alpha) * before + slack:
                return alpha
        alpha = 0.5 * alpha
    return fraction


def _check_sites(sites) -> tuple[NonlinearSite, ...]:
    if isinstance(sites, NonlinearSite):
        sites = (sites,)
    if not isinstance(sites, (list, tuple)) or not sites:
        raise UsageError(
            f"sites: expected a NonlinearSite or a non-empty list of them, got {describe(sites)}"
        )
    for index, site in enumerate(sites):
        if not isinstance(site, NonlinearSite):
            raise UsageError(f"sites[{index}]: expected a NonlinearSite, got {describe(site)}")
    names = [site.name for site in sites]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"sites: expected distinct names, got {repeated} more than once")
    return tuple(sites)


def _check_linear(linear, grid: Grid) -> LinearConstraint | None:
    """None, or the rows stacked: on grid's shape (per slice) or on its flattening (1, N)."""
    if isinstance(linear, (list, tuple)):
        for index, part in enumerate(linear):
            if not isinstance(part, LinearConstraint):
                raise UsageError(
                    f"linear[{index}]: expected a LinearConstraint, got {describe(part)}"
                )
        linear = linear[0].stack(*linear[1:]) if linear else None
    if linear is None:
        return None
    if not isinstance(linear, LinearConstraint):
        raise UsageError(
            f"linear: expected None, a LinearConstraint or a list of them, got {describe(linear)}"
        )
    if (linear.n_t, linear.n_x) not in (grid.shape, (1, grid.size)):
        raise UsageError(
            f"linear: expected rows on a grid of shape {grid.shape} (per time slice) or "
            f"(1, {grid.size}) (flattened), got ({linear.n_t}, {linear.n_x})"
        )
    return linear if linear.rows_per_slice else None


def condition_nonlinear(
    prior: Posterior,
    sites: NonlinearSite | Sequence[NonlinearSite],
    linear: LinearConstraint | Sequence[LinearConstraint] | None = None,
    *,
    tolerance: float = TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
    rcond: float = RCOND,
) -> NonlinearPosterior:
    """The mode of N(m, Sigma) given h_s(u) = b_s + eps_s and G u = c + eps, and its Laplace
    posterior, by iterated exact linear updates (see the module docstring).

    prior: a GaussianPrediction, or a GaussianMixture (each component its own mode). sites: one
    NonlinearSite or a list. linear: rows per time slice on prior.grid, or on its flattening, or
    None. tolerance: relative, in (0, 1). Raises ConvergenceError (naming the site and the
    residual reached) after max_iterations conditionings, SingularConstraintError for a row the
    prior cannot see.
    """
    if not isinstance(prior, (GaussianPrediction, GaussianMixture)):
        raise UsageError(
            f"prior: expected a GaussianPrediction or GaussianMixture, got {describe(prior)}"
        )
    problem = _Problem(
        _check_sites(sites),
        _check_linear(linear, prior.grid),
        check_in_interval(tolerance, "tolerance", 0.0, 1.0, include_low=False, include_high=False),
        check_positive_int(max_iterations, "max_iterations"),
        check_in_interval(rcond, "rcond", 0.0, 1.0, include_low=False, include_high=False),
    )
    if isinstance(prior, GaussianPrediction):
        return _find_mode(prior, problem, "")
    return NonlinearPosterior.mixture(
        [_find_mode(c, problem, f"component {k}: ") for k, c in enumerate(prior.components)]
    )


__all__ = [
    "MAX_ITERATIONS",
    "TOLERANCE",
    "NonlinearPosterior",
    "NonlinearSite",
    "condition_nonlinear",
    "nonlinear_site",
]
