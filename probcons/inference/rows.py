"""Constraint rows read from autograd: a site's Jacobian, grouped per time slice when it can be.

A site with values s(u) (m,) on a field u (n_t, n_x) has rows matrix = ds/du (m, N), N = n_t n_x,
and offset = s(u0) - matrix u0 at the point u0 where it was read, so s(u) = matrix u + offset for a
linear site (and to first order about u0 otherwise). `slice_rows` recognises rows that each read
one time slice, so the update with them stays block-diagonal over time (O(N)); `flat` puts
per-slice rows on the flattened grid for rows that mix time slices; `padded_rows` puts rows
with unequal counts per slice into (n_t, r, n_x) with placeholder rows that move nothing.

`SlicedJacobian` keeps such rows as (m, n_x) weights and a slice per row; once the pattern is
known, `compressed_jacobian` reads them in r + u + 1 backward passes (r rows per slice, u rows
of unknown slice, one random check) instead of the m of `jacobian`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probcons.constraints import LinearConstraint
from probcons.grid import Grid

JACOBIAN_LIMIT = 50_000_000
"""Most entries (rows x grid points) of a hand-written site's dense Jacobian (400 MB)."""

PLACEHOLDER_NOISE = 1.0
"""Slack of a padding row 0 u = 0 + eps: any eps > 0 makes it move nothing and keeps S regular."""


def pullback(output: torch.Tensor, value: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """seeds J for a flat output (m,), J = d output / d value: seeds (s, m) -> (s, *value.shape)
    float64, one batched backward pass (row by row for operations without a batching rule);
    zero where output does not depend on value."""
    try:
        (rows,) = torch.autograd.grad(
            output, value, seeds, retain_graph=True, is_grads_batched=True, allow_unused=True
        )
    except RuntimeError:  # an operation without a batching rule: one row at a time
        rows = torch.stack([_row_gradient(output, value, row) for row in seeds])
    return _gradient_or_zero(rows, value, seeds.shape[0]).to(torch.float64)


def jacobian(output: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """d output / d value as (m, N) float64 for a flat output (m,); zero where output does not
    depend on value."""
    eye = torch.eye(output.numel(), dtype=output.dtype)
    return pullback(output, value, eye).reshape(output.numel(), -1)


def _row_gradient(output: torch.Tensor, value: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """row^T d output / d value, shaped like value."""
    (gradient,) = torch.autograd.grad(output, value, row, retain_graph=True, allow_unused=True)
    return _gradient_or_zero(gradient, value)


def _gradient_or_zero(
    gradient: torch.Tensor | None, value: torch.Tensor, rows: int | None = None
) -> torch.Tensor:
    """`gradient`, or zeros of value's shape (after `rows` leading rows) when autograd found no
    path from the output to value."""
    if gradient is not None:
        return gradient
    shape = tuple(value.shape) if rows is None else (rows, *value.shape)
    return torch.zeros(shape, dtype=torch.float64)


@dataclass(frozen=True)
class SlicedJacobian:
    """A Jacobian (m, N) whose rows each read one time slice: row k is weights[k] (n_x,) on
    slice slice_of[k]; an all-zero row has weights 0 (its slice_of is then meaningless)."""

    weights: torch.Tensor  # (m, n_x)
    slice_of: torch.Tensor  # (m,) int64

    @classmethod
    def from_dense(cls, matrix: torch.Tensor, shape: tuple[int, int]) -> SlicedJacobian | None:
        """The rows of matrix (m, N) on a grid of `shape`, or None if one reads several slices."""
        blocks = matrix.reshape(-1, *shape)
        touched = blocks.abs().amax(dim=-1) > 0  # (m, n_t)
        if not bool((touched.sum(dim=1) <= 1).all()):
            return None
        slice_of = touched.to(torch.int64).argmax(dim=1)
        return cls(blocks[torch.arange(blocks.shape[0]), slice_of], slice_of)

    def pattern(self) -> JacobianPattern:
        """Which slice each nonzero row reads, for `compressed_jacobian` at the next point."""
        known = self.weights.abs().amax(dim=-1) > 0
        column = torch.full_like(self.slice_of, -1)
        column[known] = slice_columns(self.slice_of[known], int(self.slice_of.max()) + 1)
        return JacobianPattern(self.slice_of, known, column)


@dataclass(frozen=True)
class JacobianPattern:
    """Rows known to read one time slice each (slice_of, with column = their position among
    that slice's known rows) and rows not known (zero where the pattern was read)."""

    slice_of: torch.Tensor  # (m,) int64
    known: torch.Tensor  # (m,) bool
    column: torch.Tensor  # (m,) int64, -1 where not known

    @property
    def colours(self) -> int:
        """r: the most known rows on one slice; rows of one column never share a slice."""
        return int(self.column.max()) + 1 if bool(self.known.any()) else 0


PATTERN_TOLERANCE = 1e-10
"""A compressed Jacobian is accepted when w^T J from one backward pass matches the one rebuilt
from its rows to this fraction of sum_k |w_k| |J_k| (round-off is a few eps of it)."""
PATTERN_PROBE_SEED = 0
"""Seed of the random row weights w of that check."""


def compressed_jacobian(
    output: torch.Tensor, value: torch.Tensor, pattern: JacobianPattern
) -> SlicedJacobian | None:
    """The Jacobian of output (m,) at value (n_t, n_x) in r + u + 1 backward passes instead of m:
    one per column of the pattern (rows of one column read distinct slices, so one pass gives
    them all), one per unknown row, and one w^T J with random w that checks the result (None
    when it disagrees, or an unknown row reads several slices: then read the dense one)."""
    m = output.numel()
    unknown = (~pattern.known).nonzero().reshape(-1)
    colours = pattern.colours
    seeds = torch.zeros(colours + unknown.numel() + 1, m, dtype=output.dtype)
    known = pattern.known.nonzero().reshape(-1)
    seeds[pattern.column[known], known] = 1.0
    seeds[colours + torch.arange(unknown.numel()), unknown] = 1.0
    generator = torch.Generator().manual_seed(PATTERN_PROBE_SEED)
    probe = torch.randn(m, generator=generator, dtype=torch.float64)
    seeds[-1] = probe.to(output.dtype)
    pulled = pullback(output, value, seeds)  # (colours + u + 1, n_t, n_x)
    slice_of = pattern.slice_of.clone()
    weights = torch.zeros(m, value.shape[-1], dtype=torch.float64)
    weights[known] = pulled[pattern.column[known], pattern.slice_of[known]]
    if unknown.numel():
        rows = SlicedJacobian.from_dense(pulled[colours:-1], tuple(value.shape))
        if rows is None:
            return None
        weights[unknown], slice_of[unknown] = rows.weights, rows.slice_of
    rebuilt = torch.zeros(value.shape, dtype=torch.float64)
    rebuilt.index_add_(0, slice_of, probe[:, None] * weights)
    bound = torch.zeros(value.shape, dtype=torch.float64)
    bound.index_add_(0, slice_of, probe.abs()[:, None] * weights.abs())
    if bool(((pulled[-1] - rebuilt).abs() > PATTERN_TOLERANCE * bound).any()):
        return None
    return SlicedJacobian(weights, slice_of)


@dataclass(frozen=True)
class SiteRows:
    """Rows of one hand-written site: loc(u) = matrix u + offset, observed `value`."""

    name: str
    matrix: torch.Tensor  # (m, N)
    offset: torch.Tensor  # (m,)
    value: torch.Tensor  # (m,)
    noise: torch.Tensor  # (m,)


def slice_rows(rows: SiteRows, grid: Grid) -> LinearConstraint | None:
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


def slice_columns(slice_of: torch.Tensor, n_t: int) -> torch.Tensor:
    """Each row's position among the rows of its time slice (in row order), (k,)."""
    counts = torch.bincount(slice_of, minlength=n_t)
    order = torch.argsort(slice_of, stable=True)
    start = torch.cumsum(counts, 0) - counts  # first row of each slice in `order`
    column = torch.empty_like(slice_of)
    column[order] = torch.arange(order.numel()) - start[slice_of[order]]
    return column


def padded_rows(
    name: str,
    weights: torch.Tensor,
    slice_of: torch.Tensor,
    values: torch.Tensor,
    noise: torch.Tensor,
    n_t: int,
) -> LinearConstraint | None:
    """k rows, row k reading time slice slice_of[k] with weights[k] (n_x,), as (n_t, r, n_x),
    r = the most rows any slice has; the other places hold placeholders 0 u = 0 + eps,
    eps ~ N(0, PLACEHOLDER_NOISE^2). None when k = 0."""
    if slice_of.numel() == 0:
        return None
    column = slice_columns(slice_of, n_t)
    r = int(column.max()) + 1
    padded = torch.zeros(n_t, r, weights.shape[-1], dtype=torch.float64)
    right = torch.zeros(n_t, r, dtype=torch.float64)
    slack = torch.full((n_t, r), PLACEHOLDER_NOISE, dtype=torch.float64)
    padded[slice_of, column] = weights
    right[slice_of, column] = values
    slack[slice_of, column] = noise
    names = (name,) if r == 1 else tuple(f"{name}[{k}]" for k in range(r))
    return LinearConstraint(padded, right, slack, names)


def flat(constraint: LinearConstraint) -> LinearConstraint:
    """The same rows as one slice over the flattened grid, (1, m, N)."""
    return LinearConstraint(
        constraint.to_dense()[None],
        constraint.values.reshape(1, -1),
        constraint.noise_std.reshape(1, -1),
        tuple(f"{name}@{j}" for j in range(constraint.n_t) for name in constraint.names),
    )


__all__ = [
    "PLACEHOLDER_NOISE",
    "JacobianPattern",
    "SiteRows",
    "SlicedJacobian",
    "compressed_jacobian",
    "flat",
    "jacobian",
    "padded_rows",
    "pullback",
    "slice_columns",
    "slice_rows",
]
