"""Bound sites (lower <= u <= upper) and exact draws from truncated Gaussian posteriors.

A model states bounds with `observe_bounds(name, u, lower=0.0)`, a plain observed Pyro site
whose distribution is a `BoundObservation`. Given a prior u ~ N(mu, P) (one block per time
slice), linear rows G u = b + eps (`probcons.constraints.LinearConstraint`) and `Bounds`, the
target is the equality-conditioned Gaussian N(m, S) restricted to the box,

    m = mu + P G^T A^-1 (b - G mu),   S = P - P G^T A^-1 G P,   A = G P G^T + diag(s^2),
    p(u) ∝ N(u; m, S) 1[lower <= u <= upper],

drawn per time slice by exact Hamiltonian Monte Carlo (Pakman & Paninski 2014) in the metric
of S: the path u(t) = m + (u0 - m) cos t + v sin t, v ~ N(0, S), stays on the affine set of the
exact rows; a wall hit is found in closed form and reflects v <- v - 2 (v_i / S_ii) S[:, i].
Exact: the target, the feasibility of every draw and the exact rows (to round-off). Monte Carlo:
how well `steps` iterations forget the start, and every moment estimated from draws. An exact
row that asks the least or most value G u takes over the box (zero mass with u >= 0, as the
GPME problems do at t = 0) leaves only a face of the box: the points it reads are pinned to
their bound and the rest sampled given them (`_pin_faces`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import pyro
import torch
from pyro.distributions import TorchDistribution, constraints

from probcons.conditioning import RCOND
from probcons.constraints import LinearConstraint
from probcons.covariance import BlockCovariance, DiagonalCovariance, psd_root
from probcons.errors import SingularConstraintError, UsageError
from probcons.grid import Grid
from probcons.mixture import GaussianMixture
from probcons.posterior import Posterior, check_generator
from probcons.prediction import GaussianPrediction
from probcons.validation import check_positive_int, describe

DEFAULT_STEPS = 10
"""HMC iterations per draw (each travels TRAVEL_TIME with a fresh velocity), from one start."""
TRAVEL_TIME = math.pi / 2
"""Travel time of one iteration: without walls u(pi/2) = m + v is an exact independent draw."""
MAX_BOUNCES = 2000
"""Most wall hits of one chain in one iteration; a longer path (a grazing, nearly sliding one)
is dropped and the chain stays put for that iteration, which keeps the target (see _travel)."""
COMPACTION = 0.75
"""Finished chains are dropped from the arrays once fewer than this share are still moving."""
SQRT_FLOOR = 1e-300
"""R^2 - w^2 is floored here before its square root (sqrt of exact zeros is slow on CPUs)."""
FAR_WALL = 1e150
"""An open side is stored as a wall this far from the mean (R^2 - w^2 stays finite-negative)."""
DENSE_FALLBACK_LIMIT = 2000
"""Largest N = n_t n_x handled as one dense slice (other priors, rows that mix time slices)."""
COVARIANCE_CHUNK_ELEMENTS = 1 << 23
"""Entries of the dense per-slice S held at once (64 MB in float64)."""
CHAIN_CHUNK_ELEMENTS = 1 << 19
"""Entries (draws x slices x n_x) of each state array of one batch (4 MB; ~20 live: 80 MB)."""
START_MARGINS = (0.1, 1e-4)
"""Inset of the box for the start, in prior standard deviations (at most that share of half
the width): the start is the prior-weighted projection of m onto the rows and the inset box."""
START_ITERATIONS = 50
"""Most Newton steps of the start's dual problem."""
LINE_SEARCH_STEPS = 64
"""Doublings, then bisections, of the exact line search along a Newton direction."""
START_TOLERANCE = 1e-12
"""An exact row holds at the start when |G u - b| <= this times (|G| |u| + |b|)."""
NEWTON_JITTER = 1e-12
"""Ridge of the start's Newton system, relative to its largest diagonal entry."""
ROUNDOFF_TOLERANCE = 1e-9
"""Largest excursion past a wall, relative to |m| + |bound| + sd, accepted as round-off (and
clamped); a larger one is a bug and raises."""
FACE_TOLERANCE = 1e-12
"""An exact row whose value lies within this fraction of its range's scale of the end of the
range of G u over the box pins the points it reads to that end's corner (`_pin_faces`)."""
PLACEHOLDER_SLACK = 1.0
"""Slack std given to a row that a pinned face implies: it then reads only points of zero
variance, so any positive slack moves nothing and keeps G P G^T + R regular."""
MOMENT_DRAWS = 256
"""Draws behind TruncatedPosterior.mean and .variance (Monte Carlo estimates)."""
MOMENT_SEED = 0
"""Seed of the draws behind TruncatedPosterior.mean and .variance."""


# ----------------------------------------------------------------------------------- bounds
def _bound_tensor(value, name: str, shape: tuple[int, int], side: str) -> torch.Tensor | None:
    """A bound as a (n_t, n_x) float64 tensor (None stays None); -inf allowed for lower, +inf
    for upper, NaN never."""
    if value is None:
        return None
    allowed = f"a number or a tensor broadcastable to {shape}, finite or {'-inf' if side == 'lower' else '+inf'}"
    if isinstance(value, bool) or not isinstance(value, int | float | torch.Tensor):
        raise UsageError(f"{name}: expected {allowed} or None, got {describe(value)}")
    tensor = torch.as_tensor(value)
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise UsageError(f"{name}: expected {allowed} or None, got {describe(value)}")
    tensor = tensor.detach().to(torch.float64)
    try:
        tensor = torch.broadcast_to(tensor, shape).clone()
    except RuntimeError:
        raise UsageError(f"{name}: expected {allowed}, got {describe(value)}") from None
    wrong = math.inf if side == "lower" else -math.inf
    bad = torch.isnan(tensor) | (tensor == wrong)
    if bool(bad.any()):
        raise UsageError(f"{name}: expected {allowed}, got {int(bad.sum())} NaN or {wrong} entries")
    return tensor


def _where_mask(where, shape: tuple[int, int]) -> torch.Tensor:
    if where is None:
        return torch.ones(shape, dtype=torch.bool)
    if not isinstance(where, torch.Tensor) or where.dtype != torch.bool:
        raise UsageError(
            f"where: expected None or a bool tensor broadcastable to {shape}, got {describe(where)}"
        )
    try:
        return torch.broadcast_to(where, shape).clone()
    except RuntimeError:
        raise UsageError(
            f"where: expected None or a bool tensor broadcastable to {shape}, got {describe(where)}"
        ) from None


def _first_bad(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


@dataclass(frozen=True, eq=False)
class Bounds:
    """lower <= u <= upper pointwise: lower, upper (n_t, n_x) float64, -inf / +inf where open.

    lower < upper everywhere (a point with lower == upper has no interior to sample).
    """

    lower: torch.Tensor
    upper: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("lower", "upper"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.dim() != 2:
                raise UsageError(f"{name}: expected a (n_t, n_x) tensor, got {describe(value)}")
        if self.lower.shape != self.upper.shape:
            raise UsageError(
                f"upper: expected the shape of lower {tuple(self.lower.shape)}, got "
                f"{tuple(self.upper.shape)}"
            )
        lower = _bound_tensor(self.lower, "lower", tuple(self.lower.shape), "lower")
        upper = _bound_tensor(self.upper, "upper", tuple(self.lower.shape), "upper")
        crossed = ~(lower < upper)
        if bool(crossed.any()):
            j, i = _first_bad(crossed)
            raise UsageError(
                f"upper: expected upper > lower at every point, got upper {float(upper[j, i]):g} "
                f"<= lower {float(lower[j, i]):g} at (t index {j}, x index {i})"
            )
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @classmethod
    def open(cls, shape: tuple[int, int]) -> Bounds:
        """No bound anywhere (the identity of `intersect`)."""
        return cls(
            torch.full(shape, -math.inf, dtype=torch.float64),
            torch.full(shape, math.inf, dtype=torch.float64),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.lower.shape)

    def intersect(self, *others: Bounds) -> Bounds:
        """The points inside all of them: max of the lowers, min of the uppers.

        Raises SingularConstraintError naming a point where nothing is left (lower >= upper).
        """
        lower, upper = self.lower, self.upper
        for index, other in enumerate(others):
            if not isinstance(other, Bounds) or other.shape != self.shape:
                raise UsageError(
                    f"others[{index}]: expected Bounds of shape {self.shape}, got {describe(other)}"
                )
            lower, upper = torch.maximum(lower, other.lower), torch.minimum(upper, other.upper)
        empty = ~(lower < upper)
        if bool(empty.any()):
            j, i = _first_bad(empty)
            raise SingularConstraintError(
                f"bounds: the bound sites leave no room at (t index {j}, x index {i}): lower "
                f"{float(lower[j, i]):g} >= upper {float(upper[j, i]):g}"
            )
        return Bounds(lower, upper)

    def _outside(self, fields: torch.Tensor) -> torch.Tensor:
        fields = torch.as_tensor(fields, dtype=torch.float64)
        if tuple(fields.shape[-2:]) != self.shape:
            raise UsageError(
                f"fields: expected shape (..., {self.shape[0]}, {self.shape[1]}), got "
                f"{describe(fields)}"
            )
        return torch.maximum(self.lower - fields, fields - self.upper).clamp_min(0)

    def violations(self, fields: torch.Tensor) -> int:
        """Number of points outside the bounds in fields (..., n_t, n_x)."""
        return int((self._outside(fields) > 0).sum())

    def max_violation(self, fields: torch.Tensor) -> float:
        """Largest distance outside the bounds over fields (..., n_t, n_x); 0 when inside."""
        outside = self._outside(fields)
        return float(outside.max()) if outside.numel() else 0.0

    def contains(self, fields: torch.Tensor) -> torch.Tensor:
        """True per field where every point is inside: (..., n_t, n_x) -> (...,) bool."""
        return (self._outside(fields) == 0).all(-1).all(-1)


def combine_bounds(sites) -> Bounds | None:
    """The intersection of several bound sites (Bounds or BoundObservation); None when empty."""
    parts = []
    for index, site in enumerate(sites):
        if isinstance(site, BoundObservation):
            site = site.bounds
        if not isinstance(site, Bounds):
            raise UsageError(
                f"sites[{index}]: expected Bounds or a BoundObservation, got {describe(site)}"
            )
        parts.append(site)
    return parts[0].intersect(*parts[1:]) if parts else None


class BoundObservation(TorchDistribution):
    """The indicator 1[lower <= field <= upper] of a field (..., n_t, n_x), as a distribution.

    Its value is one bool per field (batch shape field.shape[:-2], event shape ()): True when
    every point is inside. log_prob(True) = 0 inside and -inf outside (log_prob(False) the
    reverse), so observing True (what `observe_bounds` does) keeps exactly the fields inside.
    lower, upper: full (n_t, n_x) float64 tensors, -inf / +inf where open or masked out.
    """

    arg_constraints: dict = {}
    support = constraints.boolean

    def __init__(self, field: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor):
        if not isinstance(field, torch.Tensor) or field.dim() < 2:
            raise UsageError(
                f"field: expected a tensor (..., n_t, n_x) with at least 2 dimensions, got "
                f"{describe(field)}"
            )
        self.field = field
        self.bounds = Bounds(lower, upper)
        self.lower, self.upper = self.bounds.lower, self.bounds.upper
        if tuple(field.shape[-2:]) != self.bounds.shape:
            raise UsageError(
                f"field: expected last dimensions {self.bounds.shape}, got {tuple(field.shape)}"
            )
        super().__init__(field.shape[:-2], torch.Size(), validate_args=False)

    def inside(self) -> torch.Tensor:
        """True per field where every point is inside, (...,) bool."""
        return self.bounds.contains(self.field.detach())

    def sample(self, sample_shape=()) -> torch.Tensor:
        """The indicator (deterministic given the field), (*sample_shape, *batch_shape)."""
        return self.inside().expand(*torch.Size(sample_shape), *self.batch_shape)

    def log_prob(self, value) -> torch.Tensor:
        """0 where value == inside(field), -inf elsewhere."""
        value = torch.as_tensor(value, dtype=torch.bool)
        agrees = value == self.inside()
        return torch.where(agrees, 0.0, -math.inf).to(torch.float64)


def observe_bounds(name: str, field: torch.Tensor, lower=0.0, upper=None, where=None):
    """pyro.sample(name, BoundObservation(...), obs=torch.tensor(True)): lower <= u <= upper.

    field: the latent (..., n_t, n_x); lower, upper: a number or a tensor broadcastable to
    (n_t, n_x), None for no bound on that side (at least one given); where: a bool mask
    broadcastable to (n_t, n_x) (None = everywhere) of the points the bounds hold at.
    """
    if not isinstance(name, str):
        raise UsageError(f"name: expected a site name (str), got {name!r}")
    if not isinstance(field, torch.Tensor) or field.dim() < 2:
        raise UsageError(
            f"field: expected a tensor (..., n_t, n_x) with at least 2 dimensions, got "
            f"{describe(field)}"
        )
    shape = tuple(field.shape[-2:])
    if lower is None and upper is None:
        raise UsageError("lower, upper: expected at least one bound, got lower=None, upper=None")
    mask = _where_mask(where, shape)
    low = _bound_tensor(lower, "lower", shape, "lower")
    high = _bound_tensor(upper, "upper", shape, "upper")
    if low is not None and high is not None:
        crossed = mask & ~(low < high)
        if bool(crossed.any()):
            j, i = _first_bad(crossed)
            raise UsageError(
                f"upper: expected upper > lower where both are given, got upper "
                f"{float(high[j, i]):g} <= lower {float(low[j, i]):g} at (t index {j}, x index {i})"
            )
    low = torch.full(shape, -math.inf, dtype=torch.float64) if low is None else low
    high = torch.full(shape, math.inf, dtype=torch.float64) if high is None else high
    low = torch.where(mask, low, -math.inf)
    high = torch.where(mask, high, math.inf)
    return pyro.sample(name, BoundObservation(field, low, high), obs=torch.tensor(True))


# ------------------------------------------------------------------------- slice problems
@dataclass
class _Slices:
    """A Gaussian prior per slice with rows and bounds, B slices of n points each.

    mean, variance, lower, upper (B, n); blocks (B, n, n) or None (diagonal prior);
    weights (B, r, n), values, noise (B, r); names r row labels; labels B slice labels.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    blocks: torch.Tensor | None
    weights: torch.Tensor
    values: torch.Tensor
    noise: torch.Tensor
    names: tuple[str, ...]
    lower: torch.Tensor
    upper: torch.Tensor
    labels: tuple[str, ...]

    @property
    def size(self) -> tuple[int, int, int]:
        """(B, r, n)."""
        return self.weights.shape

    def cross(self) -> torch.Tensor:
        """C = P G^T per slice, (B, n, r)."""
        if self.blocks is None:
            return self.variance[:, :, None] * self.weights.transpose(1, 2)
        return self.blocks @ self.weights.transpose(1, 2)


def _check_constraint(constraint, grid: Grid) -> tuple[LinearConstraint | None, bool]:
    """(constraint, flat): flat when its rows are on the t-major flattening of `grid`."""
    if constraint is None:
        return None, False
    if not isinstance(constraint, LinearConstraint):
        raise UsageError(
            f"constraint: expected a probcons LinearConstraint or None, got {describe(constraint)}"
        )
    if (constraint.n_t, constraint.n_x) == tuple(grid.shape):
        return constraint, False
    if (constraint.n_t, constraint.n_x) == (1, grid.size):
        return constraint, True
    raise UsageError(
        f"constraint: expected rows on a grid of shape {tuple(grid.shape)} (or (1, {grid.size}) "
        f"for rows that mix time slices), got ({constraint.n_t}, {constraint.n_x})"
    )


def _component_slices(
    component: GaussianPrediction, constraint: LinearConstraint | None, flat: bool, bounds: Bounds
) -> _Slices:
    """One Gaussian component as slices: per time slice, or one dense slice when needed."""
    n_t, n_x = component.grid.shape
    covariance = component.covariance
    structured = isinstance(covariance, DiagonalCovariance | BlockCovariance)
    if structured and not flat and isinstance(covariance, DiagonalCovariance):
        blocks, shape = None, (n_t, n_x)
    elif structured and not flat and covariance.n_x == n_x:
        blocks, shape = covariance.blocks, (n_t, n_x)
    elif component.grid.size <= DENSE_FALLBACK_LIMIT:
        shape = (1, n_t * n_x)
        if isinstance(covariance, DiagonalCovariance):
            blocks = None
        else:
            blocks = covariance.to_dense()[None]
        if constraint is not None and not flat:
            constraint = constraint.flattened()
    else:
        what = "rows that mix time slices" if flat else f"a {type(covariance).__name__}"
        raise UsageError(
            f"prior: expected a GaussianPrediction with DiagonalCovariance or BlockCovariance "
            f"and rows per time slice (or N <= {DENSE_FALLBACK_LIMIT} points for a dense "
            f"fallback), got {what} on {component.grid.size} points"
        )
    slices, n = shape
    if constraint is None:
        weights = torch.zeros(slices, 0, n, dtype=torch.float64)
        values = noise = torch.zeros(slices, 0, dtype=torch.float64)
        names: tuple[str, ...] = ()
    else:
        weights, values, noise = constraint.weights, constraint.values, constraint.noise_std
        names = constraint.names
    labels = tuple(f"time slice {j}" for j in range(slices)) if slices > 1 else ("the grid",)
    if slices == 1 and n_t == 1:
        labels = ("time slice 0",)
    return _Slices(
        mean=component.mean.reshape(shape),
        variance=covariance.diagonal().reshape(shape),
        blocks=blocks,
        weights=weights.expand(slices, *weights.shape[1:]),
        values=values,
        noise=noise,
        names=names,
        lower=bounds.lower.reshape(shape),
        upper=bounds.upper.reshape(shape),
        labels=labels,
    )


def _pin_faces(problem: _Slices) -> tuple[_Slices, torch.Tensor]:
    """(the problem with faces pinned, pinned (B, n) bool).

    An exact row that asks the least or the most value G u takes over the box (within
    FACE_TOLERANCE of its scale) leaves only a face of the box: every point the row reads sits
    at the bound that gives that extreme (the corner c). Those points are conditioned on
    u_i = c_i (their prior variance becomes 0, the others' prior is the Gaussian conditional),
    and the row, now implied, gets a placeholder slack so that it moves nothing and keeps
    G P G^T + R regular. The truncated posterior of the face is the truncated posterior of this
    problem; the pinned points are exactly c_i in every draw.
    """
    count, rows, n = problem.size
    pinned = torch.zeros(count, n, dtype=torch.bool)
    corner = torch.zeros(count, n, dtype=torch.float64)
    slack = torch.zeros(count, rows, dtype=torch.bool)
    for row in range(rows):
        w = problem.weights[:, row]
        used = w != 0
        low = torch.where(w > 0, problem.lower, problem.upper)
        high = torch.where(w > 0, problem.upper, problem.lower)
        target = problem.values[:, row]
        for end in (low, high):
            extreme = torch.where(used, w * end, 0.0).sum(-1)
            scale = torch.where(used, (w * end).abs(), 0.0).sum(-1) + target.abs()
            hit = (problem.noise[:, row] == 0) & torch.isfinite(extreme)
            hit &= (target - extreme).abs() <= FACE_TOLERANCE * scale
            points = hit[:, None] & used
            corner = torch.where(points, end, corner)
            pinned |= points
            slack[:, row] |= hit
    if not bool(pinned.any()):
        return problem, pinned
    mean, variance, blocks = problem.mean.clone(), problem.variance.clone(), problem.blocks
    if blocks is None:
        mean[pinned], variance[pinned] = corner[pinned], 0.0
    else:
        blocks = blocks.clone()
        for b in pinned.any(-1).nonzero().reshape(-1).tolist():
            index = pinned[b].nonzero().reshape(-1)
            block = blocks[b]
            gain = block[:, index] @ torch.linalg.pinv(block[index][:, index], hermitian=True)
            mean[b] = mean[b] + gain @ (corner[b, index] - mean[b, index])
            blocks[b] = block - gain @ block[index]
            blocks[b, index] = 0.0
            blocks[b, :, index] = 0.0
            mean[b, index] = corner[b, index]
        variance = blocks.diagonal(dim1=-2, dim2=-1).clone()
    noise = torch.where(slack, PLACEHOLDER_SLACK, problem.noise)
    values = torch.where(slack, torch.einsum("bkn,bn->bk", problem.weights, mean), problem.values)
    pinned_problem = dataclasses.replace(
        problem, mean=mean, variance=variance, blocks=blocks, values=values, noise=noise
    )
    return pinned_problem, pinned


def _slice_draws(problem: _Slices, count: int, steps: int, generator, max_bounces: int):
    """count draws per slice, (count, B, n), by exact HMC after pinning faces (`_pin_faces`)."""
    problem, pinned = _pin_faces(problem)
    draws = _SliceSampler(problem).draws(count, steps, generator, max_bounces)
    return torch.where(pinned, problem.mean, draws)


class _SliceSampler:
    """Exact HMC for N(m, S) restricted to [lower, upper], per slice (see the module docstring)."""

    def __init__(self, problem: _Slices, rcond: float = RCOND) -> None:
        self.problem = problem
        count, r, n = problem.size
        self.cross = problem.cross()  # C = P G^T, (B, n, r)
        if r:
            system = problem.weights @ self.cross + torch.diag_embed(problem.noise**2)
            factor, info = torch.linalg.cholesky_ex(system)
            pivots = factor.diagonal(dim1=-2, dim2=-1) ** 2
            diagonal = system.diagonal(dim1=-2, dim2=-1)
            bad = (info[:, None] != 0) | (pivots <= rcond * diagonal) | (diagonal <= 0)
            if bool(bad.any()):
                where, row = _first_bad(bad)
                raise SingularConstraintError(
                    f"constraint: G P G^T + R is singular in {problem.labels[where]} at row "
                    f"{problem.names[row]!r}: the rows are redundant or read only points of zero "
                    "prior variance while noise_std = 0"
                )
            self.factor = factor
            # E = C A^-1 (B, n, r), the gain of the Matheron update
            self.gain = torch.cholesky_solve(self.cross.transpose(1, 2), factor).transpose(1, 2)
        else:
            self.gain = torch.zeros(count, n, 0, dtype=torch.float64)
        self.mean = self._conditioned_mean()
        self.root = psd_root(problem.blocks) if problem.blocks is not None else None
        self.scale = self.mean.abs() + problem.variance.clamp_min(0).sqrt()

    def _conditioned_mean(self, refinements: int = 2) -> torch.Tensor:
        """m = mu + C A^-1 (b - G mu), refined so that G m + R A^-1 y = b - G mu + G mu."""
        problem = self.problem
        if not problem.size[1]:
            return problem.mean.clone()
        target = problem.values - torch.einsum("bkn,bn->bk", problem.weights, problem.mean)
        solved = torch.cholesky_solve(target[..., None], self.factor)[..., 0]
        for _ in range(refinements):
            update = torch.einsum("bnk,bk->bn", self.cross, solved)
            misfit = (
                target
                - torch.einsum("bkn,bn->bk", problem.weights, update)
                - problem.noise**2 * solved
            )
            solved = solved + torch.cholesky_solve(misfit[..., None], self.factor)[..., 0]
        return problem.mean + torch.einsum("bnk,bk->bn", self.cross, solved)

    def covariance(self, chunk: slice) -> torch.Tensor:
        """Dense S = P - E C^T for the slices in `chunk`, (b, n, n), symmetrised."""
        problem = self.problem
        if problem.blocks is None:
            dense = torch.diag_embed(problem.variance[chunk])
        else:
            dense = problem.blocks[chunk].clone()
        dense -= self.gain[chunk] @ self.cross[chunk].transpose(1, 2)
        return (dense + dense.transpose(1, 2)) / 2

    def velocity(self, draws: int, chunk: slice, generator) -> torch.Tensor:
        """v ~ N(0, S) by Matheron's rule: z - E (G z + eps), z ~ N(0, P); (draws, b, n)."""
        problem = self.problem
        variance = problem.variance[chunk]
        shape = (draws, *variance.shape)
        normal = torch.randn(shape, generator=generator, dtype=torch.float64)
        if self.root is None:
            field = normal * variance.clamp_min(0).sqrt()
        else:
            field = torch.einsum("bij,dbj->dbi", self.root[chunk], normal)
        weights = problem.weights[chunk]
        if not weights.shape[1]:
            return field
        rows = torch.einsum("bkn,dbn->dbk", weights, field)
        noise = problem.noise[chunk]
        rows += noise * torch.randn(rows.shape, generator=generator, dtype=torch.float64)
        return field - torch.einsum("bnk,dbk->dbn", self.gain[chunk], rows)

    # ------------------------------------------------------------------------- the start
    def start(self) -> torch.Tensor:
        """A point strictly inside the bounds on the exact rows, per slice, (B, n).

        The prior-weighted projection of m onto {G_e u = b_e} and the box inset by
        START_MARGINS: u(lambda) = clamp(m - D G_e^T lambda, lower', upper'), D = diag(P), with
        lambda maximising the concave dual (Newton directions, exact line search). A slice with no
        such point raises SingularConstraintError naming it and the row that cannot be met.
        """
        problem = self.problem
        pinned = problem.variance <= 0
        outside = pinned & ((self.mean < problem.lower) | (self.mean > problem.upper))
        if bool(outside.any()):
            where, point = _first_bad(outside)
            raise SingularConstraintError(
                f"bounds: in {problem.labels[where]} point {point} has zero prior variance and "
                f"mean {float(self.mean[where, point]):g} outside "
                f"[{float(problem.lower[where, point]):g}, {float(problem.upper[where, point]):g}]"
            )
        exact = problem.noise == 0
        weights = problem.weights * exact[..., None]
        values = problem.values * exact
        count, n = self.mean.shape
        start = self.mean.clone()
        done = torch.zeros(count, dtype=torch.bool)
        deviation = problem.variance.clamp_min(0).sqrt()
        half = (problem.upper - problem.lower) / 2
        for margin in START_MARGINS:
            inset = torch.minimum(margin * deviation, margin * half)
            point, ok = _box_projection(
                self.mean,
                problem.variance.clamp_min(0),
                weights,
                values,
                problem.lower + inset,
                problem.upper - inset,
            )
            ok &= _strictly_inside(point, problem.lower, problem.upper, pinned)
            new = ok & ~done
            start[new] = point[new]
            done |= ok
            if bool(done.all()):
                return start
        self._raise_infeasible(~done, weights, values, exact)
        return start  # not reached

    def _raise_infeasible(self, failed, weights, values, exact) -> None:
        problem = self.problem
        where = int(failed.nonzero()[0])
        low, high = problem.lower[where], problem.upper[where]
        for row in range(weights.shape[1]):
            if not bool(exact[where, row]):
                continue
            w = weights[where, row]
            reach_low = torch.where(w > 0, w * low, w * high)
            reach_high = torch.where(w > 0, w * high, w * low)
            used = w != 0
            least = float(torch.where(used, reach_low, 0.0).sum())
            most = float(torch.where(used, reach_high, 0.0).sum())
            target = float(values[where, row])
            if not least < target < most:
                raise SingularConstraintError(
                    f"constraint: in {problem.labels[where]} row {problem.names[row]!r} asks "
                    f"G u = {target:g}, but over the bounds G u ranges over [{least:g}, {most:g}] "
                    "(its interior is needed): no point satisfies the row and the bounds"
                )
        point, ok = _box_projection(
            self.mean[where : where + 1],
            problem.variance[where : where + 1].clamp_min(0),
            weights[where : where + 1],
            values[where : where + 1],
            low[None],
            high[None],
        )
        residual = (torch.einsum("bkn,bn->bk", weights[where : where + 1], point) - values[where])[
            0
        ]
        row = int(residual.abs().argmax()) if residual.numel() else 0
        name = problem.names[row] if problem.names else "(none)"
        state = "touch the bounds only on their boundary" if bool(ok[0]) else "have no point"
        raise SingularConstraintError(
            f"constraint: in {problem.labels[where]} the exact rows and the bounds {state} "
            f"(largest residual at row {name!r}); truncated draws need room inside the bounds"
        )

    # --------------------------------------------------------------------------- sampling
    def draws(self, count: int, steps: int, generator, max_bounces: int) -> torch.Tensor:
        """count draws per slice, (count, B, n)."""
        problem = self.problem
        slices, _, n = problem.size
        start = self.start()
        out = torch.empty(count, slices, n, dtype=torch.float64)
        per_chunk = max(1, min(slices, COVARIANCE_CHUNK_ELEMENTS // (n * n)))
        per_chunk = max(1, min(per_chunk, CHAIN_CHUNK_ELEMENTS // n))
        for first in range(0, slices, per_chunk):
            chunk = slice(first, min(slices, first + per_chunk))
            width = chunk.stop - chunk.start
            dense = self.covariance(chunk)
            draws_per = max(1, CHAIN_CHUNK_ELEMENTS // (width * n))
            for begin in range(0, count, draws_per):
                stop = min(count, begin + draws_per)
                out[begin:stop, chunk] = self._chains(
                    start[chunk], stop - begin, chunk, dense, steps, generator, max_bounces
                )
        return out

    def _chains(self, start, draws, chunk, dense, steps, generator, max_bounces):
        """`draws` chains per slice of `chunk` from `start` (b, n), `steps` iterations each."""
        problem = self.problem
        mean = self.mean[chunk]
        width, n = mean.shape
        lower = _relative_wall(problem.lower[chunk], mean, draws, -FAR_WALL)
        upper = _relative_wall(problem.upper[chunk], mean, draws, FAR_WALL)
        owner = torch.arange(width).repeat(draws)  # slice of each chain
        position = (start - mean).expand(draws, width, n).reshape(-1, n).clone()
        diagonal = dense.diagonal(dim1=1, dim2=2)
        for _ in range(steps):
            velocity = self.velocity(draws, chunk, generator).reshape(-1, n)
            position = _travel(
                position, velocity, lower, upper, owner, dense, diagonal, max_bounces
            )
        fields = (position.reshape(draws, width, n) + mean).clone()
        return self._within_walls(fields, chunk)

    def _within_walls(self, fields, chunk) -> torch.Tensor:
        """Clamp excursions past a wall of round-off size (u = m + (bound - m) need not be the
        bound exactly); a larger one raises."""
        problem = self.problem
        lower, upper = problem.lower[chunk], problem.upper[chunk]
        excess = torch.maximum(lower - fields, fields - upper).clamp_min(0)
        allowed = ROUNDOFF_TOLERANCE * (
            self.scale[chunk]
            + torch.where(torch.isfinite(lower), lower.abs(), 0.0)
            + torch.where(torch.isfinite(upper), upper.abs(), 0.0)
        )
        if bool((excess > allowed).any()):
            raise RuntimeError(
                f"truncated_draws: a draw left the bounds by {float(excess.max()):.3g}, beyond "
                "round-off; this is a bug in probcons.inference.bounds"
            )
        return torch.minimum(torch.maximum(fields, lower), upper)


def _relative_wall(bound, mean, draws: int, far: float) -> torch.Tensor | None:
    """bound - m per chain (draws * b, n), open sides at `far`; None when no point has one."""
    finite = torch.isfinite(bound)
    if not bool(finite.any()):
        return None
    wall = torch.where(finite, bound - mean, far)
    return wall.expand(draws, *wall.shape).reshape(-1, wall.shape[-1])


def _strictly_inside(point, lower, upper, pinned) -> torch.Tensor:
    inside = ((point > lower) & (point < upper)) | (pinned & (point >= lower) & (point <= upper))
    return inside.all(-1)


def _box_projection(mean, scale, weights, values, lower, upper):
    """argmin sum_i (u_i - m_i)^2 / (2 D_i) over lower <= u <= upper with G u = b, per slice.

    mean, scale D, lower, upper (B, n); weights (B, r, n), values (B, r) (zero rows ignored).
    The dual q(lambda) is concave with gradient G u(lambda) - b, u(lambda) = clamp(m - D G^T
    lambda): Newton directions with an exact line search (bisection on the slope along them).
    Returns (u (B, n), converged (B,) bool); D_i = 0 keeps u_i = m_i (clamped into the box).
    """
    count, r, _ = weights.shape
    multipliers = torch.zeros(count, r, dtype=torch.float64)
    magnitude = weights.abs()

    def primal(lam):
        return torch.clamp(mean - scale * torch.einsum("bkn,bk->bn", weights, lam), lower, upper)

    def slope(alpha, step):
        point = primal(multipliers + alpha[:, None] * step)
        return ((torch.einsum("bkn,bn->bk", weights, point) - values) * step).sum(-1)

    point = primal(multipliers)
    converged = torch.ones(count, dtype=torch.bool)
    if not r:
        return point, converged
    failed = torch.zeros(count, dtype=torch.bool)
    eye = torch.eye(r, dtype=torch.float64)
    for _ in range(START_ITERATIONS):
        residual = torch.einsum("bkn,bn->bk", weights, point) - values
        size = torch.einsum("bkn,bn->bk", magnitude, point.abs()) + values.abs()
        converged = (residual.abs() <= START_TOLERANCE * size).all(-1)
        active = ~converged & ~failed
        if not bool(active.any()):
            break
        free = (point > lower) & (point < upper)
        system = torch.einsum("bkn,bn,bln->bkl", weights, scale * free, weights)
        ridge = NEWTON_JITTER * system.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(1.0)
        step = torch.linalg.solve(system + ridge[:, None, None] * eye, residual)
        high = torch.ones(count, dtype=torch.float64)
        for _ in range(LINE_SEARCH_STEPS):
            grow = active & (slope(high, step) > 0)
            if not bool(grow.any()):
                break
            high = torch.where(grow, 2 * high, high)
        failed |= active & (slope(high, step) > 0)  # the dual grows without end: infeasible
        low = torch.zeros(count, dtype=torch.float64)
        for _ in range(LINE_SEARCH_STEPS):
            middle = (low + high) / 2
            ascending = slope(middle, step) > 0
            low, high = torch.where(ascending, middle, low), torch.where(ascending, high, middle)
        move = active & ~failed
        multipliers = torch.where(move[:, None], multipliers + high[:, None] * step, multipliers)
        point = primal(multipliers)
    return point, converged & ~failed


def _leave_keys(position, velocity, radius2, wall, sign: float):
    """Crossings of a cos t + v sin t outward through `wall` w (sign +1 lower, -1 upper).

    With s = sqrt(v^2 + (a - w)(a + w)) = sqrt(R^2 - w^2), the crossing is at the angle theta of
    (a + i v)(w + i sign s) = real + i imag, whose modulus is R^2: phi + acos(w / R) for the
    lower wall, phi - acos(w / R) for the upper. Returns (key, real, imag), key = cot(theta / 2)
    = (R^2 + real) / imag: decreasing in theta on (0, pi), <= 0 beyond pi, 0 out of reach.
    """
    span = torch.addcmul(velocity * velocity, position - wall, position + wall)  # R^2 - w^2
    root = span.clamp_min(SQRT_FLOOR).sqrt_()
    imaginary = torch.addcmul(velocity * wall, position, root, value=sign)
    real = torch.addcmul(position * wall, velocity, root, value=-sign)
    key = (radius2 + real).div_(imaginary).mul_(span > 0).nan_to_num_(nan=0.0)
    return key, real, imaginary


def _first_hit(position, velocity, lower, upper):
    """Earliest outward wall crossing per chain: (time (C,), coordinate (C,), upper_hit (C,)).

    position a, velocity v (C, n) relative to m; lower, upper (C, n) relative walls (or None
    when no point has one; open sides are stored as -/+ FAR_WALL). time > pi means none. Only
    the earliest crossing's angle is evaluated (atan2); the others are ranked by cot(theta / 2).
    """
    radius2 = torch.addcmul(position * position, velocity, velocity)
    rows = torch.arange(position.shape[0])
    parts = []
    for wall, sign in ((lower, 1.0), (upper, -1.0)):
        if wall is not None:
            parts.append(_leave_keys(position, velocity, radius2, wall, sign))
    if len(parts) == 1:
        (key, real, imaginary), upper_hit = parts[0], torch.full(rows.shape, upper is not None)
        best, coordinate = key.max(dim=1)
        real, imaginary = real[rows, coordinate], imaginary[rows, coordinate]
    else:
        (low, low_real, low_imag), (high, high_real, high_imag) = parts
        best, coordinate = torch.maximum(low, high).max(dim=1)
        upper_hit = high[rows, coordinate] > low[rows, coordinate]
        real = torch.where(upper_hit, high_real[rows, coordinate], low_real[rows, coordinate])
        imaginary = torch.where(upper_hit, high_imag[rows, coordinate], low_imag[rows, coordinate])
    time = torch.atan2(imaginary, real).remainder_(2 * math.pi)
    time = torch.where(best > 0, time, 4 * math.pi)
    return time, coordinate, upper_hit


def _travel(position, velocity, lower, upper, owner, dense, diagonal, max_bounces):
    """Positions (C, n) after TRAVEL_TIME along the reflected harmonic paths (relative to m).

    A chain with more than `max_bounces` wall hits keeps its position this iteration: a path
    and its time reversal hit the walls equally often, so dropping both keeps the target.
    """
    result = position.clone()
    count = position.shape[0]
    active = torch.arange(count)
    remaining = torch.full((count,), TRAVEL_TIME, dtype=torch.float64)
    bounces = torch.zeros(count, dtype=torch.int64)
    alive = torch.ones(count, dtype=torch.bool)
    while True:
        time, coordinate, upper_hit = _first_hit(position, velocity, lower, upper)
        finish = alive & (time >= remaining)
        if bool(finish.any()):
            angle = remaining[finish, None]
            result[active[finish]] = position[finish] * angle.cos() + velocity[finish] * angle.sin()
        alive &= ~finish & (bounces < max_bounces)
        living = int(alive.sum())
        if not living:
            break
        if living < COMPACTION * alive.numel():
            keep = alive.nonzero().reshape(-1)
            active, remaining, time, alive, bounces = (
                z[keep] for z in (active, remaining, time, alive, bounces)
            )
            position, velocity, owner = position[keep], velocity[keep], owner[keep]
            coordinate, upper_hit = coordinate[keep], upper_hit[keep]
            lower = lower[keep] if lower is not None else None
            upper = upper[keep] if upper is not None else None
        time = time.masked_fill(~alive, 0.0)
        bounces += alive
        cos, sin = time.cos()[:, None], time.sin()[:, None]
        position, velocity = position * cos + velocity * sin, velocity * cos - position * sin
        rows = torch.arange(position.shape[0])
        if lower is None:
            wall = upper[rows, coordinate]
        elif upper is None:
            wall = lower[rows, coordinate]
        else:
            wall = torch.where(upper_hit, upper[rows, coordinate], lower[rows, coordinate])
        position[rows, coordinate] = wall
        # reflection in the metric of S: v <- v - 2 (v_i / S_ii) S[:, i] (S symmetric: row i)
        normal = velocity[rows, coordinate]
        ratio = 2 * normal / diagonal[owner, coordinate]
        velocity.sub_(ratio[:, None] * dense[owner, coordinate])
        # the hit coordinate leaves its wall inward (its sign could only be lost to round-off)
        inward = torch.where(upper_hit, -1.0, 1.0)
        velocity[rows, coordinate] = normal.abs() * inward
        remaining = remaining - time
    return result


# ---------------------------------------------------------------------------- public API
def _check_prior(prior) -> list[GaussianPrediction]:
    if isinstance(prior, GaussianPrediction):
        return [prior]
    if isinstance(prior, GaussianMixture):
        return list(prior.components)
    raise UsageError(
        f"prior: expected a GaussianPrediction or GaussianMixture (diagonal or block "
        f"covariance), got {describe(prior) if isinstance(prior, torch.Tensor) else type(prior).__name__}"
    )


def _check_bounds(bounds, grid: Grid) -> Bounds:
    if isinstance(bounds, BoundObservation):
        bounds = bounds.bounds
    if not isinstance(bounds, Bounds) or bounds.shape != tuple(grid.shape):
        raise UsageError(
            f"bounds: expected Bounds of shape {tuple(grid.shape)} (the prior's grid), got "
            f"{describe(bounds) if not isinstance(bounds, Bounds) else bounds.shape}"
        )
    return bounds


def truncated_draws(
    prior: Posterior,
    constraint: LinearConstraint | None,
    bounds: Bounds,
    n: int,
    generator: torch.Generator | None = None,
    steps: int = DEFAULT_STEPS,
    max_bounces: int = MAX_BOUNCES,
) -> torch.Tensor:
    """n draws (n, n_t, n_x) of u ~ prior | G u = b + eps, truncated to `bounds`.

    prior: a GaussianPrediction with DiagonalCovariance or BlockCovariance (rows per time
    slice), a GaussianMixture of those, or any GaussianPrediction on N <= DENSE_FALLBACK_LIMIT
    points (one dense slice; also for rows on the flattened grid, (1, m, N)). Each draw is the
    end of its own exact-HMC chain of `steps` iterations from one feasible start: every draw
    satisfies the bounds and the exact rows (noise_std = 0) to round-off; its law approaches the
    target as `steps` grows (the tests check the default against rejection sampling).
    max_bounces: most wall hits of one chain in one iteration; a longer (grazing) path is
    dropped and the chain keeps its position for that iteration.

    A mixture: each draw picks a component uniformly (as GaussianMixture.sample does) and is
    drawn from that component's truncated posterior, so the bounds act given the latent sample.
    The truncated mixture proper would reweight component k by its probability of the box,
    which in hundreds of dimensions is dominated by one component.
    """
    components = _check_prior(prior)
    grid = prior.grid
    bounds = _check_bounds(bounds, grid)
    constraint, flat = _check_constraint(constraint, grid)
    check_positive_int(n, "n")
    check_generator(generator)
    check_positive_int(steps, "steps")
    check_positive_int(max_bounces, "max_bounces")
    if len(components) == 1:
        choice = torch.zeros(n, dtype=torch.int64)
    else:
        choice = torch.randint(len(components), (n,), generator=generator)
    if len(components) == 1:
        problem = _component_slices(components[0], constraint, flat, bounds)
        values = _slice_draws(problem, n, steps, generator, max_bounces)
        return values.reshape(n, *grid.shape)
    # one chain per draw and slice, the slices of every draw's component stacked: one batch
    parts = {}
    for index in torch.unique(choice).tolist():
        parts[index] = _component_slices(components[index], constraint, flat, bounds)
    problem = _stacked_slices([parts[int(index)] for index in choice], choice.tolist())
    values = _slice_draws(problem, 1, steps, generator, max_bounces)
    return values.reshape(n, *grid.shape)


def _stacked_slices(problems: list[_Slices], components: list[int]) -> _Slices:
    """The slices of several problems as one batch (B = sum of theirs); labels name the
    component of each."""

    def cat(name: str):
        return torch.cat([getattr(problem, name) for problem in problems])

    blocks = None if problems[0].blocks is None else cat("blocks")
    labels = tuple(
        f"component {k}, {label}"
        for problem, k in zip(problems, components, strict=True)
        for label in problem.labels
    )
    first = problems[0]
    return _Slices(
        mean=cat("mean"),
        variance=cat("variance"),
        blocks=blocks,
        weights=cat("weights"),
        values=cat("values"),
        noise=cat("noise"),
        names=first.names,
        lower=cat("lower"),
        upper=cat("upper"),
        labels=labels,
    )


class TruncatedPosterior(Posterior):
    """u ~ prior | G u = b + eps, truncated to `bounds` (see `truncated_draws`).

    Exact: the target and every draw's feasibility (bounds and exact rows to round-off). Monte
    Carlo: the chains' mixing (`steps`) and `mean` / `variance`, estimated from MOMENT_DRAWS
    draws seeded with MOMENT_SEED and cached. Not reparameterisable: a draw is the end of a
    Markov chain with data-dependent wall hits, not a smooth map of standard normals, so
    `rsample(base_samples=...)` and `draws_from_base` raise. Condition the prior on linear
    rows before the bounds (pass them as `constraint`): `condition` and `project` raise.
    """

    def __init__(
        self,
        prior: Posterior,
        constraint: LinearConstraint | None,
        bounds: Bounds,
        steps: int = DEFAULT_STEPS,
        max_bounces: int = MAX_BOUNCES,
        grid: Grid | None = None,
    ) -> None:
        _check_prior(prior)
        self.prior = prior
        self.bounds = _check_bounds(bounds, prior.grid)
        self.constraint, _ = _check_constraint(constraint, prior.grid)
        self.steps = check_positive_int(steps, "steps")
        self.max_bounces = check_positive_int(max_bounces, "max_bounces")
        if grid is not None and (not isinstance(grid, Grid) or grid.size != prior.grid.size):
            raise UsageError(
                f"grid: expected None or a Grid of {prior.grid.size} points, got {grid!r}"
            )
        self.grid = prior.grid if grid is None else grid

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, n_t, n_x) on this object's grid."""
        draws = truncated_draws(
            self.prior, self.constraint, self.bounds, n, generator, self.steps, self.max_bounces
        )
        return draws.reshape(n, *self.grid.shape)

    @functools.cached_property
    def _moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(MOMENT_SEED)
        draws = self.sample(MOMENT_DRAWS, generator)
        return draws.mean(0), draws.var(0)

    @property
    def mean(self) -> torch.Tensor:
        """Monte Carlo estimate of E[u] from MOMENT_DRAWS seeded draws, (n_t, n_x)."""
        return self._moments[0].clone()

    @property
    def variance(self) -> torch.Tensor:
        """Monte Carlo estimate of Var[u] (unbiased) from MOMENT_DRAWS seeded draws, (n_t, n_x)."""
        return self._moments[1].clone()

    @property
    def base_sample_shape(self) -> torch.Size:
        """Empty: draws come from a generator, not from given standard normals."""
        return torch.Size([0])

    def _not_reparameterisable(self) -> UsageError:
        return UsageError(
            "base_samples: expected None for a TruncatedPosterior, got a tensor: its draws end "
            "Markov chains with data-dependent wall hits, not a smooth map of standard normals, "
            "so they cannot share common random numbers; use sample(n, generator)"
        )

    def draws_from_base(self, base: torch.Tensor) -> torch.Tensor:
        raise self._not_reparameterisable()

    def rsample(self, sample_shape=(), base_samples=None) -> torch.Tensor:
        if base_samples is not None:
            raise self._not_reparameterisable()
        return super().rsample(sample_shape)

    def condition(self, constraint, **options) -> Posterior:
        raise UsageError(
            "constraint: a TruncatedPosterior cannot be conditioned further; condition the "
            "prior on linear rows first, e.g. TruncatedPosterior(prior, rows, bounds)"
        )

    def project(self, constraint, **options) -> Posterior:
        raise UsageError(
            "constraint: a TruncatedPosterior cannot be projected; pass the rows as its "
            "constraint (they hold exactly in every draw)"
        )

    def with_grid(self, grid: Grid) -> TruncatedPosterior:
        """The same draws read on `grid` (as many points, t-major); `bounds` and `constraint` stay
        on the prior's grid (read draws.reshape(n, *prior.grid.shape) against them)."""
        if not isinstance(grid, Grid) or grid.size != self.grid.size:
            raise UsageError(f"grid: expected a Grid of {self.grid.size} points, got {grid!r}")
        return TruncatedPosterior(
            self.prior, self.constraint, self.bounds, self.steps, self.max_bounces, grid
        )

    def __repr__(self) -> str:
        return (
            f"TruncatedPosterior(prior={self.prior!r}, constraint={self.constraint!r}, "
            f"steps={self.steps})"
        )


__all__ = [
    "BoundObservation",
    "Bounds",
    "TruncatedPosterior",
    "combine_bounds",
    "observe_bounds",
    "truncated_draws",
]
