"""Exact conditioning of a Gaussian prediction on linear constraints (ProbConserv, HardC).

With u ~ N(mu, Sigma) and G u = b + eps, eps ~ N(0, R):
    S = G Sigma G^T + R,  mu~ = mu + Sigma G^T S^-1 (b - G mu),
    Sigma~ = Sigma - Sigma G^T S^-1 G Sigma.
Samples are drawn pathwise (Matheron's rule), u~ = u + Sigma G^T S^-1 (b - G u - eps), so the
singular posterior (R = 0) never needs a Cholesky factor. The solve with S follows the structure
of Sigma: per time slice (diagonal, block), Woodbury (low rank), or dense; all in float64.
A singular S raises, or with singular="pinv" gives the pseudo-inverse (minimum-norm) update
S^+, which conditions on the rows' independent combinations when the redundant ones agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from probcons.constraints import LinearConstraint
from probcons.covariance import (
    BlockCovariance,
    Covariance,
    DiagonalCovariance,
    LowRankCovariance,
    psd_root,
)
from probcons.errors import SingularConstraintError, UsageError
from probcons.posterior import Posterior, check_posterior
from probcons.validation import check_in_interval

RCOND = 1e-13
"""A pivot of S below rcond times S's largest diagonal entry marks S as singular."""
DENSE_LIMIT = 20_000
"""Largest N for which a general covariance is handled as a dense matrix."""
CHUNK_ELEMENTS = 1 << 20
"""Entries of each (points, rank) temporary of the low-rank variance update (8 MB in float64)."""
SAMPLE_CHUNK_ELEMENTS = 1 << 16
"""Entries of each block of the gain subtracted from a posterior draw (512 kB: in cache)."""
REFINEMENT_STEPS = 2
"""Most steps of iterative refinement of S y = rows, so that G (Sigma G^T y) + R y = rows."""
REFINEMENT_TOLERANCE = 1e-14
"""Refinement stops once max |misfit| <= this times max |rows| (one check when well conditioned)."""
SINGULAR_OPTIONS = ("raise", "pinv")
"""What `condition` does with a singular S: raise a ValueError, or use the pseudo-inverse."""
CONSISTENCY_TOLERANCE = 1e-8
"""With singular="pinv", the part of (b - G mu) that S cannot reach, relative to the size of
|b| + |G| |mu| (both scaled like the rows of S), above which the rows are inconsistent."""


def _check_rcond(rcond) -> float:
    """A relative pivot threshold: a real number in (0, 1)."""
    return check_in_interval(rcond, "rcond", 0.0, 1.0, include_low=False, include_high=False)


def _check_singular(singular) -> str:
    if not isinstance(singular, str) or singular not in SINGULAR_OPTIONS:
        allowed = ", ".join(repr(option) for option in SINGULAR_OPTIONS)
        raise UsageError(f"singular: expected one of {allowed}, got {singular!r}")
    return singular


def _singular_error(what: str, where: int) -> SingularConstraintError:
    return SingularConstraintError(
        f"constraint: G Sigma G^T + R is singular ({what} {where}): constraint rows are "
        "redundant, or look only at points of zero prior variance, while noise_std = 0. "
        "Remove the redundant rows, give the constraint noise_std > 0, or pass "
        "singular='pinv' for the pseudo-inverse update."
    )


def _checked_cholesky(matrices: torch.Tensor, rcond: float, what: str) -> torch.Tensor:
    """Cholesky factors of (..., r, r) SPD matrices; a clear ValueError if any is singular.

    Row k counts as redundant when its pivot L_kk^2 <= rcond * S_kk: the test is relative to each
    row's own scale, so multiplying a row of G and b by any factor does not change the verdict.
    """
    factor, info = torch.linalg.cholesky_ex(matrices)
    pivots = factor.diagonal(dim1=-2, dim2=-1) ** 2
    diagonal = matrices.diagonal(dim1=-2, dim2=-1)
    bad = (info != 0) | (pivots <= rcond * diagonal).any(dim=-1) | (diagonal <= 0).any(dim=-1)
    if bool(bad.any()):
        raise _singular_error(what, torch.nonzero(bad.reshape(-1))[0].item())
    return factor


class SystemInverse:
    """S^+ = root root^T for a batch of symmetric PSD blocks S (..., r, r); S^-1 when regular.

    singular="raise": Cholesky S = L L^T (root = L^-T), a ValueError when S is singular.
    singular="pinv": Cholesky when S is regular; otherwise E = diag(scale)^-1/2 equilibrates
    E S E (entries in [-1, 1] when scale_k bounds the variance of row k), its eigenvalues at
    most rcond are dropped and root = E V_+ Lambda_+^-1/2; `null` keeps E V_0 for the check
    that the right-hand sides lie in range(S).
    """

    def __init__(
        self,
        system: torch.Tensor,
        rcond: float,
        what: str,
        singular: str = "raise",
        scale: torch.Tensor | None = None,
    ) -> None:
        self.factor = self.root = self.null = None
        if singular == "raise":
            self.factor = _checked_cholesky(system, rcond, what)
            return
        diagonal = system.diagonal(dim1=-2, dim2=-1)
        if not bool((diagonal <= rcond * scale).any()):
            try:
                self.factor = _checked_cholesky(system, rcond, what)
                return
            except ValueError:
                pass
        inverse_sqrt = torch.where(scale > 0, scale, 1.0).rsqrt()  # E, (..., r)
        equilibrated = system * inverse_sqrt[..., :, None] * inverse_sqrt[..., None, :]
        values, vectors = torch.linalg.eigh((equilibrated + equilibrated.mT) / 2)
        keep = values > rcond
        weights = torch.where(keep, values, 1.0).rsqrt() * keep
        self.root = inverse_sqrt[..., :, None] * vectors * weights[..., None, :]
        self.null = vectors * (~keep)[..., None, :]  # in equilibrated units
        self.inverse_sqrt = inverse_sqrt

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """S^+ rhs for rhs (..., r, k)."""
        if self.factor is not None:
            return torch.cholesky_solve(rhs, self.factor)
        return self.root @ (self.root.mT @ rhs)

    def whiten(self, rhs: torch.Tensor) -> torch.Tensor:
        """root^T rhs, (..., r, k): column sums of its square are diag(rhs^T S^+ rhs)."""
        if self.factor is not None:
            return torch.linalg.solve_triangular(self.factor, rhs, upper=False)
        return self.root.mT @ rhs

    def roots(self) -> torch.Tensor:
        """root (..., r, r) with S^+ = root root^T."""
        if self.factor is None:
            return self.root
        eye = torch.eye(self.factor.shape[-1], dtype=self.factor.dtype)
        return torch.linalg.solve_triangular(self.factor, eye, upper=False).mT

    def check_consistent(self, rhs: torch.Tensor, magnitude: torch.Tensor) -> None:
        """Raise unless rhs (..., r, k) lies in range(S) up to round-off of `magnitude` (>= 0)."""
        if self.null is None:
            return
        scaled = self.inverse_sqrt[..., :, None]
        outside = (self.null.mT @ (scaled * rhs)).norm(dim=-2)
        allowed = CONSISTENCY_TOLERANCE * (scaled * magnitude).norm(dim=-2)
        bad = outside > allowed
        if bool(bad.any()):
            ratio = float((outside / allowed.clamp_min(torch.finfo(torch.float64).tiny)).max())
            raise SingularConstraintError(
                "constraint: rows are inconsistent: a part of b - G mu of "
                f"{ratio * CONSISTENCY_TOLERANCE:.3g} times |b| + |G| |mu| (allowed "
                f"{CONSISTENCY_TOLERANCE:g}) lies where S = G Sigma G^T + R is singular: "
                "redundant rows with different values, or rows on zero-variance points that the "
                "prior mean does not satisfy; singular='pinv' only drops rows that agree"
            )


def _shared_rows(constraint: LinearConstraint) -> torch.Tensor | None:
    """The (r, n_x) rows when every time slice has the same ones (stored once, stride 0)."""
    weights = constraint.weights
    return weights[0] if weights.shape[0] == 1 or weights.stride(0) == 0 else None


def _apply(constraint: LinearConstraint, field: torch.Tensor) -> torch.Tensor:
    """G u for fields (..., n_t, n_x) -> (..., n_t, r); one matrix product for shared rows."""
    shared = _shared_rows(constraint)
    if shared is None:
        return constraint.apply(field)
    return field @ shared.T


def _apply_transpose(constraint: LinearConstraint, rows: torch.Tensor) -> torch.Tensor:
    """G^T y for (..., n_t, r) -> (..., n_t, n_x); one matrix product for shared rows."""
    shared = _shared_rows(constraint)
    if shared is not None:
        return rows @ shared
    weights = constraint.weights  # row by row: a bmm with inner size r is slow
    field = rows[..., 0, None] * weights[:, 0]
    for row in range(1, constraint.rows_per_slice):
        field.addcmul_(rows[..., row, None], weights[:, row])
    return field


def _apply_abs(constraint: LinearConstraint, field: torch.Tensor) -> torch.Tensor:
    """|G| u for a field (n_t, n_x) or (N,) -> (n_t, r)."""
    field = field.reshape(constraint.n_t, constraint.n_x)
    shared = _shared_rows(constraint)
    if shared is not None:
        return field @ shared.abs().T
    return torch.einsum("jki,ji->jk", constraint.weights.abs(), field)


def _row_scale(constraint: LinearConstraint, deviation: torch.Tensor) -> torch.Tensor:
    """(|G| sd)^2 + R per row, (n_t, r): a bound on each row's variance, Cauchy-Schwarz."""
    return _apply_abs(constraint, deviation).square_() + constraint.noise_std**2


def _check_grid(prediction: Posterior, constraint: LinearConstraint) -> None:
    if not isinstance(constraint, LinearConstraint):
        raise UsageError(
            f"constraint: expected a probcons LinearConstraint, got {type(constraint).__name__}"
        )
    if (constraint.n_t, constraint.n_x) != prediction.grid.shape:
        raise UsageError(
            f"constraint: expected rows on a grid of shape {prediction.grid.shape}, "
            f"got ({constraint.n_t}, {constraint.n_x})"
        )


class ConstraintUpdate(ABC):
    """S^-1 and the gain Sigma G^T S^-1 for one prior covariance and one constraint."""

    refinement_steps = REFINEMENT_STEPS
    inverse: SystemInverse | None = None

    def __init__(self, covariance: Covariance, constraint: LinearConstraint) -> None:
        self.covariance = covariance
        self.constraint = constraint

    @property
    def is_pseudo_inverse(self) -> bool:
        """True when S was singular and singular="pinv" put S^+ in place of S^-1."""
        return self.inverse is not None and self.inverse.null is not None

    @abstractmethod
    def solve(self, rows: torch.Tensor) -> torch.Tensor:
        """S^-1 y for y (..., n_t, r)."""

    @abstractmethod
    def variance_reduction(self) -> torch.Tensor:
        """diag(Sigma G^T S^-1 G Sigma), (N,)."""

    def check_consistent(self, rows: torch.Tensor, magnitude: torch.Tensor) -> None:
        """With the pseudo-inverse: raise unless rows (n_t, r) lie in range(S) (see SystemInverse)."""
        if self.inverse is not None:
            self.inverse.check_consistent(rows.reshape(-1, 1), magnitude.reshape(-1, 1))

    def spread(self, solved: torch.Tensor) -> torch.Tensor:
        """Sigma G^T y for y (..., n_t, r) -> (..., N)."""
        batch = solved.shape[:-2]
        back = _apply_transpose(self.constraint, solved).reshape(-1, self.covariance.size)
        return self.covariance.matmul(back.T).T.reshape(*batch, self.covariance.size)

    def gain(self, rows: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Sigma G^T S^-1 y: (..., n_t, r) -> (..., N), refined so that G gain + R S^-1 y = y.

        Without refinement an ill-conditioned Sigma (cond 1e12) leaves |G mu~ - b| ~ 1e-5 |b|
        for exact rows; each step costs one more solve and spread.
        """
        constraint = self.constraint
        steps = self.refinement_steps if steps is None else steps
        solved = self.solve(rows)
        update = self.spread(solved)
        for _ in range(steps):
            field = update.reshape(*rows.shape[:-2], constraint.n_t, constraint.n_x)
            misfit = rows - _apply(constraint, field) - constraint.noise_std**2 * solved
            if misfit.abs().max() <= REFINEMENT_TOLERANCE * rows.abs().max():
                break
            correction = self.solve(misfit)
            solved = solved + correction
            update = update + self.spread(correction)
        return update

    def shifted(self, base: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """base + Sigma G^T S^-1 y as a new tensor: base (n_t, n_x), y (n_t, r)."""
        gain = self.gain(rows).reshape(base.shape)
        return gain + base if base.requires_grad else gain.add_(base)

    def subtract_gain(self, fields: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """fields - Sigma G^T S^-1 y in place: fields (n, N), y (n, n_t, r)."""
        return fields.sub_(self.gain(rows))

    def differentiated(self) -> bool:
        """True when the prior's numbers require grad: the update then avoids in-place work."""
        return any(
            isinstance(value, torch.Tensor) and value.requires_grad
            for value in vars(self.covariance).values()
        )

    def reduction_through_rows(self) -> torch.Tensor:
        """diag(A S^-1 A^T), A = Sigma G^T, from m solves and spreads: (m, N) memory, for
        priors that are differentiated through (every structure; no in-place operations)."""
        n_t, r = self.constraint.values.shape
        m = n_t * r
        unit = torch.eye(m, dtype=torch.float64).reshape(m, n_t, r)
        spread = self.spread(unit)  # (m, N): row k is (Sigma G^T e_k)^T
        inverse = self.solve(unit).reshape(m, m)  # S^-1 (symmetric)
        return torch.einsum("kn,kl,ln->n", spread, inverse, spread)

    def posterior_variance(self) -> torch.Tensor:
        """diag(Sigma~) = diag(Sigma) - variance_reduction, clamped at zero against round-off."""
        prior = self.covariance
        variance = prior.variance if isinstance(prior, DiagonalCovariance) else prior.diagonal()
        if self.differentiated():
            return (variance - self.reduction_through_rows()).clamp(min=0)
        reduction = self.variance_reduction()  # a new tensor: overwritten in place
        return torch.sub(variance, reduction, out=reduction).clamp_(min=0)

    def noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Slack draws eps ~ N(0, R), (n, n_t, r)."""
        standard = torch.randn(
            (n, *self.constraint.values.shape), generator=generator, dtype=torch.float64
        )
        return standard * self.constraint.noise_std


class SliceUpdate(ConstraintUpdate):
    """Sigma independent across time slices (block): S is block-diagonal, (n_t, r, r)."""

    def __init__(self, covariance, constraint, rcond: float = RCOND, singular="raise") -> None:
        super().__init__(covariance, constraint)
        self.cross = covariance.slice_product(constraint.weights)  # (n_t, n_x, r)
        system = constraint.weights @ self.cross + torch.diag_embed(constraint.noise_std**2)
        scale = None
        if singular == "pinv":
            scale = _row_scale(constraint, covariance.diagonal().clamp_min(0).sqrt())
        self.inverse = SystemInverse(system, rcond, "time slice", singular, scale)

    @staticmethod
    def _by_slice(rows: torch.Tensor) -> torch.Tensor:
        """(..., n_t, r) -> (n_t, r, batch)."""
        return rows.reshape(-1, *rows.shape[-2:]).permute(1, 2, 0)

    def solve(self, rows):
        solved = self.inverse.solve(self._by_slice(rows))
        return solved.permute(2, 0, 1).reshape(rows.shape)

    def check_consistent(self, rows, magnitude):
        self.inverse.check_consistent(self._by_slice(rows), self._by_slice(magnitude))

    def spread(self, solved):
        batch = solved.shape[:-2]
        update = torch.einsum("jir,...jr->...ji", self.cross, solved)
        return update.reshape(*batch, self.covariance.size)

    def variance_reduction(self):
        whitened = self.inverse.whiten(self.cross.transpose(1, 2)).square_()  # (n_t, r, n_x)
        if whitened.shape[1] == 1:
            return whitened.reshape(-1)
        return whitened.sum(dim=1).reshape(-1)


class DiagonalUpdate(SliceUpdate):
    """Sigma = diag(v): S_j = W_j diag(v_j) W_j^T + R_j and Sigma G^T y = v * (G^T y).

    Nothing of size N is stored; rows shared by all slices are used as one (r, n_x) matrix.
    With one row per slice S_j is a sum of non-negative terms w_i^2 v_i, accurate to round-off,
    so the gain is not refined (refinement could not improve it).
    """

    def __init__(self, covariance, constraint, rcond: float = RCOND, singular="raise") -> None:
        ConstraintUpdate.__init__(self, covariance, constraint)
        n_t, r, n_x = constraint.weights.shape
        self.variance = covariance.variance.reshape(n_t, n_x)
        system = self._system() + torch.diag_embed(constraint.noise_std**2)
        scale = _row_scale(constraint, self.variance.sqrt()) if singular == "pinv" else None
        self.inverse = SystemInverse(system, rcond, "time slice", singular, scale)
        if r == 1:
            self.refinement_steps = 0

    def _system(self) -> torch.Tensor:
        """W_j diag(v_j) W_j^T, (n_t, r, r): one product with v for shared rows, else in chunks."""
        weights, variance = self.constraint.weights, self.variance
        n_t, r, n_x = weights.shape
        shared = _shared_rows(self.constraint)
        if shared is not None:
            products = (shared[:, None, :] * shared[None, :, :]).reshape(r * r, n_x)
            return (variance @ products.T).reshape(n_t, r, r)
        if variance.requires_grad:  # differentiated through: one einsum, no out= buffers
            return torch.einsum("jkn,jn,jln->jkl", weights, variance, weights)
        system = torch.empty(n_t, r, r, dtype=torch.float64)
        step = max(1, CHUNK_ELEMENTS // n_x)
        scaled = torch.empty(min(step, n_t), n_x, dtype=torch.float64)  # one row times v
        for start in range(0, n_t, step):
            rows = weights[start : start + step]
            chunk = scaled[: rows.shape[0]]
            for first in range(r):
                torch.mul(rows[:, first], variance[start : start + step], out=chunk)
                products = torch.bmm(rows[:, : first + 1], chunk[:, :, None])[..., 0]
                system[start : start + step, first, : first + 1] = products
                system[start : start + step, : first + 1, first] = products
        return system

    def spread(self, solved):
        batch = solved.shape[:-2]
        field = _apply_transpose(self.constraint, solved).mul_(self.variance)
        return field.reshape(*batch, self.covariance.size)

    def shifted(self, base, rows):
        if self.refinement_steps:
            return super().shifted(base, rows)
        field = _apply_transpose(self.constraint, self.solve(rows))  # (n_t, n_x), new
        if base.requires_grad or field.requires_grad:  # differentiated through: no out=
            return torch.addcmul(base, field, self.variance)
        return torch.addcmul(base, field, self.variance, out=field)

    def subtract_gain(self, fields, rows):
        """fields - v * G^T S^-1 y in place, a block of time slices of one draw at a time, so
        the gain never exists as a second (n, N) array (the same operations, entry by entry,
        as fields.sub_(gain(rows)); without refinement only)."""
        if self.refinement_steps:
            return super().subtract_gain(fields, rows)
        solved = self.solve(rows)  # (n, n_t, r)
        n_t, n_x = self.variance.shape
        step = max(1, SAMPLE_CHUNK_ELEMENTS // n_x)
        blocks = fields.reshape(-1, n_t, n_x)
        for draw in range(blocks.shape[0]):
            for start in range(0, n_t, step):
                stop = min(start + step, n_t)
                gain = self._slice_transpose(solved[draw, start:stop], start, stop)
                blocks[draw, start:stop].sub_(gain.mul_(self.variance[start:stop]))
        return fields

    def _slice_transpose(self, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """G^T y on time slices start:stop, rows (stop - start, r) -> (stop - start, n_x)."""
        shared = _shared_rows(self.constraint)
        if shared is not None:
            return rows @ shared
        weights = self.constraint.weights[start:stop]
        field = rows[:, 0, None] * weights[:, 0]
        for row in range(1, self.constraint.rows_per_slice):
            field.addcmul_(rows[:, row, None], weights[:, row])
        return field

    def _explained(self) -> torch.Tensor:
        """v_i w_i^T S_j^+ w_i per point (w_i the rows' weights there): in [0, 1], (n_t, n_x)."""
        roots = self.inverse.roots()  # (n_t, r, r), S^+ = roots roots^T
        shared = _shared_rows(self.constraint)
        if shared is not None and roots.shape[-1] == 1:  # an outer product: square its factors
            return (roots[..., 0] ** 2 @ shared**2).mul_(self.variance)
        share = None
        for column in range(roots.shape[-1]):
            whitened = _apply_transpose(self.constraint, roots[..., column])  # (n_t, n_x), new
            share = whitened.square_() if share is None else share.addcmul_(whitened, whitened)
        return share.mul_(self.variance)

    def variance_reduction(self):
        return self._explained().mul_(self.variance).reshape(-1)

    def posterior_variance(self):
        """v - v q, q = v w^T S^+ w: one new (N,) array, written in place."""
        if self.differentiated():
            return super().posterior_variance()
        share = self._explained()
        variance = torch.addcmul(self.variance, self.variance, share, value=-1, out=share)
        return variance.clamp_(min=0).reshape(-1)


class LowRankUpdate(ConstraintUpdate):
    """Sigma = D + F F^T: S = B + M M^T with B = G D G^T + R per slice, M = G F; Woodbury."""

    def __init__(self, covariance: LowRankCovariance, constraint, rcond: float = RCOND) -> None:
        super().__init__(covariance, constraint)
        n_t, r, n_x = constraint.weights.shape
        diagonal = DiagonalCovariance(covariance.diagonal_part)
        self.local_cross = diagonal.slice_product(constraint.weights)  # D G^T, (n_t, n_x, r)
        local = constraint.weights @ self.local_cross + torch.diag_embed(constraint.noise_std**2)
        self.local_factor = _checked_cholesky(local, rcond, "time slice (diagonal part)")
        factor = covariance.factor.reshape(n_t, n_x, -1)  # F per slice, no copy
        shared = _shared_rows(constraint)
        rows = constraint.weights if shared is None else shared
        self.projected = torch.matmul(rows, factor)  # M = G F, (n_t, r, k)
        self.whitened = torch.cholesky_solve(self.projected, self.local_factor)  # B^-1 M
        inner = torch.einsum("jrk,jrl->kl", self.projected, self.whitened)  # M^T B^-1 M
        capacitance = torch.eye(covariance.rank, dtype=torch.float64) + inner
        self.inner = inner
        self.capacitance_factor = _checked_cholesky(capacitance, rcond, "low-rank capacitance")

    def _local_solve(self, rows):
        flat = rows.reshape(-1, *rows.shape[-2:]).permute(1, 2, 0)
        solved = torch.cholesky_solve(flat, self.local_factor)
        return solved.permute(2, 0, 1).reshape(rows.shape)

    def solve(self, rows):
        local = self._local_solve(rows)  # B^-1 y
        projected = torch.einsum("jrk,...jr->...k", self.projected, local)  # M^T B^-1 y
        weights = torch.cholesky_solve(projected.unsqueeze(-1), self.capacitance_factor)[..., 0]
        return local - torch.einsum("jrk,...k->...jr", self.whitened, weights)

    def variance_reduction(self):
        """diag(A S^-1 A^T), A = Sigma G^T, by Woodbury, in chunks of time slices.

        Per point i with c_i = (D G^T B^-1 M)_i and F_i (k-vectors), inner = M^T B^-1 M and
        C = I + inner = L L^T: local_i + 2 c_i.F_i + F_i^T inner F_i - |L^-1 (c_i + inner F_i)|^2.
        Temporaries are (chunk, k): O(N) memory in all, whatever k.
        """
        factor = self.covariance.factor  # F, (N, k)
        n_t, n_x, r = self.local_cross.shape
        rank = factor.shape[1]
        result = torch.empty(n_t * n_x, dtype=torch.float64)
        step = max(1, CHUNK_ELEMENTS // (n_x * max(rank, r)))
        for start in range(0, n_t, step):
            stop = min(start + step, n_t)
            points = slice(start * n_x, stop * n_x)
            local_cross = self.local_cross[start:stop]  # D G^T, (chunk, n_x, r)
            whitened = torch.linalg.solve_triangular(
                self.local_factor[start:stop], local_cross.transpose(1, 2), upper=False
            )
            local_term = whitened.square_().sum(dim=1).reshape(-1)  # diag(D G^T B^-1 G D)
            whitened_rows = self.whitened[start:stop]  # B^-1 M, (chunk, r, k)
            cross = local_cross[..., :1] * whitened_rows[:, :1]  # c_i as a sum over the r rows
            for row in range(1, r):  # of outer products (a bmm with inner size r is slow)
                cross.addcmul_(local_cross[..., row : row + 1], whitened_rows[:, row : row + 1])
            cross = cross.reshape(-1, rank)
            chunk_factor = factor[points]
            total = torch.mm(chunk_factor, self.inner).add_(cross)  # c_i + inner F_i
            mixed = torch.einsum("ik,ik->i", cross.add_(total), chunk_factor)
            correction = torch.linalg.solve_triangular(
                self.capacitance_factor, total.T, upper=False
            )
            result[points] = local_term.add_(mixed).sub_(correction.square_().sum(dim=0))
        return result


class DenseUpdate(ConstraintUpdate):
    """Any covariance with N <= DENSE_LIMIT: dense Sigma G^T (N, m) and S (m, m)."""

    def __init__(self, covariance, constraint, rcond: float = RCOND, singular="raise") -> None:
        super().__init__(covariance, constraint)
        if covariance.size > DENSE_LIMIT:
            raise UsageError(
                f"covariance: a {type(covariance).__name__} over {covariance.size} points exceeds "
                f"the dense limit of {DENSE_LIMIT}; use a structured covariance (diagonal, low-rank, "
                "block) or condition on all constraints at once (LinearConstraint.stack)"
            )
        matrix = constraint.to_dense()  # (m, N)
        self.cross = covariance.matmul(matrix.T)  # (N, m)
        system = matrix @ self.cross + torch.diag(constraint.noise_std.reshape(-1) ** 2)
        scale = None
        if singular == "pinv":
            deviation = covariance.diagonal().clamp_min(0).sqrt()
            scale = _row_scale(constraint, deviation).reshape(-1)
        self.inverse = SystemInverse(
            (system + system.T) / 2, rcond, "constraint row block", singular, scale
        )

    def solve(self, rows):
        flat = rows.reshape(-1, self.constraint.num_rows).T
        return self.inverse.solve(flat).T.reshape(rows.shape)

    def spread(self, solved):
        batch = solved.shape[:-2]
        flat = solved.reshape(-1, self.constraint.num_rows)
        return (flat @ self.cross.T).reshape(*batch, self.covariance.size)

    def variance_reduction(self):
        return self.inverse.whiten(self.cross.T).square_().sum(dim=0)


def constraint_update(
    covariance: Covariance,
    constraint: LinearConstraint,
    rcond: float = RCOND,
    singular: str = "raise",
) -> ConstraintUpdate:
    """The update that exploits the covariance's structure."""
    if isinstance(covariance, DiagonalCovariance):
        return DiagonalUpdate(covariance, constraint, rcond, singular)
    if isinstance(covariance, BlockCovariance) and covariance.n_x == constraint.n_x:
        return SliceUpdate(covariance, constraint, rcond, singular)
    if isinstance(covariance, LowRankCovariance):
        try:
            return LowRankUpdate(covariance, constraint, rcond)
        except ValueError as error:
            if covariance.size <= DENSE_LIMIT:
                pass  # the dense form decides (S may be regular, or singular="pinv" asked)
            elif singular == "pinv":
                raise SingularConstraintError(
                    f"{error} (singular='pinv' with a low-rank prior works up to N = "
                    f"{DENSE_LIMIT}; this prior has N = {covariance.size})"
                ) from None
            else:
                raise
    return DenseUpdate(covariance, constraint, rcond, singular)


class ConditionedCovariance(Covariance):
    """Sigma~ = Sigma - Sigma G^T S^-1 G Sigma, kept as (prior, update); never formed densely."""

    def __init__(self, update: ConstraintUpdate) -> None:
        self.update = update
        self.prior = update.covariance
        self.size = self.prior.size

    def diagonal(self):
        """Marginal variances, clamped at zero against round-off."""
        return self.update.posterior_variance()

    @property
    def base_size(self) -> int:
        """The prior's base, then one standard normal per constraint row (its slack)."""
        return self.prior.base_size + self.update.constraint.num_rows

    def _pathwise(self, prior: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z - Sigma G^T S^-1 (G z + eps) for prior draws z (n, N), slack eps (n, n_t, r)."""
        constraint = self.update.constraint
        rows = _apply(constraint, prior.reshape(-1, constraint.n_t, constraint.n_x))
        return self.update.subtract_gain(prior, rows.add_(noise))

    def sample(self, n, generator=None):
        """Pathwise: z - Sigma G^T S^-1 (G z + eps), z ~ N(0, Sigma)."""
        prior = self.prior.sample(n, generator)
        return self._pathwise(prior, self.update.noise(n, generator))

    def transform(self, base):
        split = self.prior.base_size
        prior = self.prior.transform(base[:, :split]).clone()
        constraint = self.update.constraint
        noise = base[:, split:].reshape(-1, *constraint.values.shape) * constraint.noise_std
        return self._pathwise(prior, noise)

    def matmul(self, matrix):
        constraint = self.update.constraint
        product = self.prior.matmul(matrix)  # (N, k)
        rows = _apply(constraint, product.T.reshape(-1, constraint.n_t, constraint.n_x))
        return product - self.update.gain(rows).T

    def to_dense(self):
        """(N, N) in square-root form A A^T + B B^T, A = (I - K G) L, B = K R^1/2, L L^T = Sigma.

        Symmetric and PSD to round-off relative to the posterior itself (the difference form
        Sigma - K G Sigma is only PSD relative to the prior's scale).
        """
        constraint = self.update.constraint
        root = psd_root(self.prior.to_dense())  # (N, N)
        rows = _apply(constraint, root.T.reshape(-1, constraint.n_t, constraint.n_x))
        reduced = root - self.update.gain(rows).T
        eye = torch.eye(constraint.num_rows, dtype=torch.float64)
        unit = (eye * constraint.noise_std.reshape(-1)).reshape(
            -1, constraint.n_t, constraint.rows_per_slice
        )
        noise = self.update.gain(unit).T  # (N, m)
        dense = reduced @ reduced.T + noise @ noise.T
        return (dense + dense.T) / 2


def _as_constraint(constraint) -> LinearConstraint | None:
    """One LinearConstraint from a constraint or a list of them; None when there are no rows."""
    if isinstance(constraint, (list, tuple)):
        for index, part in enumerate(constraint):
            if not isinstance(part, LinearConstraint):
                raise UsageError(
                    f"constraint[{index}]: expected a probcons LinearConstraint, "
                    f"got {type(part).__name__}"
                )
        if not constraint:
            return None
        first, *rest = constraint
        constraint = first.stack(*rest) if rest else first
    if not isinstance(constraint, LinearConstraint):
        raise UsageError(
            "constraint: expected a probcons LinearConstraint or a list of them, "
            f"got {type(constraint).__name__}"
        )
    if constraint.rows_per_slice == 0:
        return None
    return constraint


def _corrected_mean(
    mean: torch.Tensor, constraint: LinearConstraint, update: ConstraintUpdate
) -> torch.Tensor:
    """mu + K (b - G mu); with the pseudo-inverse, b - G mu is first checked to lie in range(S)."""
    residual = constraint.values - _apply(constraint, mean)
    if update.is_pseudo_inverse:
        magnitude = _apply_abs(constraint, mean.abs()).add_(constraint.values.abs())
        update.check_consistent(residual, magnitude)
    return update.shifted(mean, residual)


DEGENERATE_TOLERANCE = 1e-14
"""An exact row whose prior variance g Sigma g^T is at most this times (|g| sd)^2, its
Cauchy-Schwarz bound, is degenerate: float64 forms g Sigma g^T with an error of a few eps times
that bound, so below ~50 eps the variance is round-off and an exact update would divide round-off
by round-off. (A prior of condition number 1e12 keeps rows down to 1e-12: those pass.)"""
DEGENERATE_OPTIONS = ("raise", "drop")
"""What conditioning does with a degenerate exact row: raise, or drop it with a warning."""


def _system_diagonal(update: ConstraintUpdate) -> torch.Tensor | None:
    """diag(S), (n_t, r), from the factors the update already formed; None if it has none."""
    inverse = update.inverse
    shape = update.constraint.values.shape
    if inverse is not None and inverse.factor is not None:
        return inverse.factor.square().sum(dim=-1).reshape(shape)
    local = getattr(update, "local_factor", None)  # low rank: S = B + M M^T, B = L L^T
    projected = getattr(update, "projected", None)
    if isinstance(local, torch.Tensor) and isinstance(projected, torch.Tensor):
        return (local.square().sum(dim=-1) + projected.square().sum(dim=-1)).reshape(shape)
    return None


def _row_variances(covariance: Covariance, constraint: LinearConstraint) -> torch.Tensor:
    """g Sigma g^T per row, (n_t, r), computed directly (when no update could be formed)."""
    n_t, r, n_x = constraint.weights.shape
    if isinstance(covariance, (DiagonalCovariance, LowRankCovariance)):
        diagonal = (
            covariance.variance
            if isinstance(covariance, DiagonalCovariance)
            else covariance.diagonal_part
        )
        variance = torch.einsum(
            "jki,ji->jk", constraint.weights.square(), diagonal.reshape(n_t, n_x)
        )
        if isinstance(covariance, LowRankCovariance):
            projected = torch.matmul(constraint.weights, covariance.factor.reshape(n_t, n_x, -1))
            variance = variance + projected.square().sum(dim=-1)
        return variance
    if isinstance(covariance, BlockCovariance) and covariance.n_x == n_x:
        return torch.einsum(
            "jki,jik->jk", constraint.weights, covariance.slice_product(constraint.weights)
        )
    matrix = constraint.to_dense()
    return (matrix * covariance.matmul(matrix.T).T).sum(dim=1).reshape(n_t, r)


def _screen_rows(
    grid,
    covariance: Covariance,
    constraint: LinearConstraint,
    on_degenerate: str,
    variance: torch.Tensor | None,
) -> LinearConstraint:
    """Exact rows whose prior variance is at most DEGENERATE_TOLERANCE (|g| sd)^2: raise naming
    the first, or ("drop") replace each by 0 u = 0 + eps, eps ~ N(0, 1), which moves nothing.
    Returns `constraint` itself when no row is degenerate. O(N r) beyond `variance`."""
    exact = constraint.noise_std == 0
    if not bool(exact.any()):
        return constraint
    if variance is None:
        variance = _row_variances(covariance, constraint)
    bound = _row_scale(constraint, covariance.diagonal().clamp_min(0).sqrt())
    degenerate = exact & (variance <= DEGENERATE_TOLERANCE * bound)
    if not bool(degenerate.any()):
        return constraint
    where = torch.nonzero(degenerate)
    labels = []
    for j, k in where.tolist():
        at = f" (t = {float(grid.t[j]):g})" if constraint.n_t == grid.n_t else ""
        labels.append(f"row {constraint.names[k]!r} of time slice {j}{at}")
    if on_degenerate == "drop":
        import warnings

        warnings.warn(
            f"constraint: dropped {len(labels)} exact row(s) the prior already fixes "
            f"(variance <= {DEGENERATE_TOLERANCE:g} of (|g| sd)^2): {', '.join(labels)}",
            RuntimeWarning,
            stacklevel=4,
        )
        weights = constraint.weights.clone()
        weights[degenerate] = 0.0
        values = constraint.values.masked_fill(degenerate, 0.0)
        noise = constraint.noise_std.masked_fill(degenerate, 1.0)
        return LinearConstraint(weights, values, noise, constraint.names)
    j, k = where[0].tolist()
    value, scale = float(variance[j, k]), float(bound[j, k])
    if scale > 0:
        size = (
            f"its prior variance g Sigma g^T = {value:.3g} is {value / scale:.3g} of its "
            f"Cauchy-Schwarz bound (|g| sd)^2 = {scale:.3g} (tolerance {DEGENERATE_TOLERANCE:g})"
        )
    else:
        size = "the prior's variance is zero at every point the row reads"
    more = f" ({len(labels) - 1} more degenerate rows)" if len(labels) > 1 else ""
    raise SingularConstraintError(
        f"constraint: G Sigma G^T + R is singular at {labels[0]}: {size}; zero prior variance "
        "along the row: the prior already fixes it and an exact update would only amplify "
        f"round-off; remove the row, give it noise_std > 0, or pass on_degenerate='drop'{more}"
    )


def _check_on_degenerate(on_degenerate) -> str:
    if not isinstance(on_degenerate, str) or on_degenerate not in DEGENERATE_OPTIONS:
        allowed = ", ".join(repr(option) for option in DEGENERATE_OPTIONS)
        raise UsageError(f"on_degenerate: expected one of {allowed}, got {on_degenerate!r}")
    return on_degenerate


def _screened_update(
    prediction, covariance, constraint, rcond, singular, on_degenerate
) -> tuple[LinearConstraint, ConstraintUpdate]:
    """The update after degenerate exact rows are screened out (singular="raise" only: the
    pseudo-inverse drops them itself). Healthy rows: the very same update as without screening."""
    if singular != "raise":
        return constraint, constraint_update(covariance, constraint, rcond, singular)
    try:
        update = constraint_update(covariance, constraint, rcond, singular)
    except SingularConstraintError:
        update = None
    if update is not None and isinstance(covariance, DiagonalCovariance):
        return constraint, update  # S_kk >= (|g| sd)^2 / n_x: only S_kk = 0, which fails above
    variance = None if update is None else _system_diagonal(update)
    screened = _screen_rows(prediction.grid, covariance, constraint, on_degenerate, variance)
    if update is None or screened is not constraint:  # raises if S is still singular
        update = constraint_update(covariance, screened, rcond, singular)
    return screened, update


def _flat_view(prediction, constraint: LinearConstraint) -> torch.Tensor:
    """The prior mean shaped for the constraint: (1, N) for rows on the flattened grid (rows that
    mix time slices, e.g. relative flux rows), else (n_t, n_x) after the grid check."""
    grid = prediction.grid
    if constraint.n_t == 1 and constraint.n_x == grid.size and grid.n_t > 1:
        return prediction.mean.reshape(1, grid.size)
    _check_grid(prediction, constraint)
    return prediction.mean


def _checked_arguments(prediction, constraint, rcond, singular, on_degenerate):
    """(mean as the rows see it, one LinearConstraint, rcond, singular, on_degenerate), checked;
    None when the constraint has no rows."""
    singular = _check_singular(singular)
    rcond = _check_rcond(rcond)
    on_degenerate = _check_on_degenerate(on_degenerate)
    constraint = _as_constraint(constraint)
    if constraint is None:
        return None
    return _flat_view(prediction, constraint), constraint, rcond, singular, on_degenerate


def conditioned_moments(
    prediction,
    constraint: LinearConstraint,
    rcond: float = RCOND,
    singular: str = "raise",
    on_degenerate: str = "raise",
) -> tuple[torch.Tensor, Covariance] | None:
    """(mu~, Sigma~) of a Gaussian (mean (n_t, n_x), covariance, grid) given G u = b + eps;
    None when the constraint has no rows. The arguments of `condition`.

    Rows on the flattened grid (n_t = 1, n_x = N) apply to a prediction on any grid of N points.
    on_degenerate: an exact row with prior variance at most DEGENERATE_TOLERANCE (|g| sd)^2
    raises a SingularConstraintError naming the row ("raise") or is dropped with a warning
    ("drop"); checked with singular="raise" (the pseudo-inverse drops such rows itself).
    """
    checked = _checked_arguments(prediction, constraint, rcond, singular, on_degenerate)
    if checked is None:
        return None
    mean, constraint, rcond, singular, on_degenerate = checked
    constraint, update = _screened_update(
        prediction, prediction.covariance, constraint, rcond, singular, on_degenerate
    )
    mean = _corrected_mean(mean, constraint, update).reshape(prediction.grid.shape)
    return mean, ConditionedCovariance(update)


def projected_mean(
    prediction,
    constraint: LinearConstraint,
    rcond: float = RCOND,
    singular: str = "raise",
    on_degenerate: str = "raise",
) -> torch.Tensor | None:
    """mu - G^T (G G^T + R)^-1 (G mu - b), (n_t, n_x); None when the constraint has no rows.
    Flattened rows and on_degenerate as in `conditioned_moments` (here only all-zero exact rows
    are degenerate)."""
    checked = _checked_arguments(prediction, constraint, rcond, singular, on_degenerate)
    if checked is None:
        return None
    mean, constraint, rcond, singular, on_degenerate = checked
    ones = torch.ones(1, dtype=torch.float64).expand(prediction.grid.size)
    identity = DiagonalCovariance(ones)
    try:  # |g|^2 >= |g|_1^2 / n_x: only an all-zero exact row is degenerate, and it fails here
        update = DiagonalUpdate(identity, constraint, rcond, singular)
    except SingularConstraintError:
        if singular != "raise":
            raise
        constraint = _screen_rows(prediction.grid, identity, constraint, on_degenerate, None)
        update = DiagonalUpdate(identity, constraint, rcond, singular)
    return _corrected_mean(mean, constraint, update).reshape(prediction.grid.shape)


def condition(
    prediction: Posterior,
    constraint: LinearConstraint,
    rcond: float = RCOND,
    singular: str = "raise",
    on_degenerate: str = "raise",
) -> Posterior:
    """ProbConserv: the exact Gaussian posterior of u given G u = b + eps (sigma_G >= 0).

    A mixture is conditioned component by component. `constraint` may be a list of constraints
    (stacked); an empty list returns `prediction`. singular: "raise" (a singular
    S = G Sigma G^T + R is a SingularConstraintError) or "pinv" (S^+ instead of S^-1:
    redundant rows that agree count once, rows on zero-variance points that already hold are
    dropped, rows that disagree raise). on_degenerate: "raise" (an exact row whose prior
    variance g Sigma g^T is round-off of zero is a SingularConstraintError naming it) or "drop"
    (the row is dropped with a warning); see `conditioned_moments`.
    """
    return check_posterior(prediction).condition(
        constraint, rcond=rcond, singular=singular, on_degenerate=on_degenerate
    )


def project(
    prediction: Posterior,
    constraint: LinearConstraint,
    rcond: float = RCOND,
    singular: str = "raise",
    on_degenerate: str = "raise",
) -> Posterior:
    """HardC: mu~ = mu - G^T (G G^T + R)^-1 (G mu - b); the covariance is left unchanged.

    singular="pinv" uses (G G^T + R)^+: the minimum-norm correction when rows are redundant.
    """
    return check_posterior(prediction).project(
        constraint, rcond=rcond, singular=singular, on_degenerate=on_degenerate
    )


__all__ = [
    "SINGULAR_OPTIONS",
    "ConditionedCovariance",
    "ConstraintUpdate",
    "SystemInverse",
    "condition",
    "conditioned_moments",
    "constraint_update",
    "project",
    "projected_mean",
]
