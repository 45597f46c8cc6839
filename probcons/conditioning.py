"""Exact conditioning of a Gaussian prediction on linear constraints (ProbConserv, HardC).

With u ~ N(mu, Sigma) and G u = b + eps, eps ~ N(0, R):
    S = G Sigma G^T + R,  mu~ = mu + Sigma G^T S^-1 (b - G mu),
    Sigma~ = Sigma - Sigma G^T S^-1 G Sigma.
Samples are drawn pathwise (Matheron's rule), u~ = u + Sigma G^T S^-1 (b - G u - eps), so the
singular posterior (R = 0) never needs a Cholesky factor. The solve with S follows the structure
of Sigma: per time slice (diagonal, block), Woodbury (low rank), or dense; all in float64.
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
from probcons.prediction import GaussianPrediction

RCOND = 1e-13
"""A pivot of S below rcond times S's largest diagonal entry marks S as singular."""
DENSE_LIMIT = 20_000
"""Largest N for which a general covariance is handled as a dense matrix."""
CHUNK_ELEMENTS = 1 << 20
"""Entries of each (points, rank) temporary of the low-rank variance update (8 MB in float64)."""
REFINEMENT_STEPS = 2
"""Most steps of iterative refinement of S y = rows, so that G (Sigma G^T y) + R y = rows."""
REFINEMENT_TOLERANCE = 1e-14
"""Refinement stops once max |misfit| <= this times max |rows| (one check when well conditioned)."""


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
        where = torch.nonzero(bad.reshape(-1))[0].item()
        raise ValueError(
            f"constraint: G Sigma G^T + R is singular ({what} {where}): constraint rows are "
            "redundant, or look only at points of zero prior variance, while noise_std = 0. "
            "Remove the redundant rows or give the constraint noise_std > 0."
        )
    return factor


def _check_grid(prediction: GaussianPrediction, constraint: LinearConstraint) -> None:
    if not isinstance(prediction, GaussianPrediction):
        raise ValueError(
            f"prediction: expected a GaussianPrediction, got {type(prediction).__name__}"
        )
    if not isinstance(constraint, LinearConstraint):
        raise ValueError(
            f"constraint: expected a probcons LinearConstraint, got {type(constraint).__name__}"
        )
    if (constraint.n_t, constraint.n_x) != prediction.grid.shape:
        raise ValueError(
            f"constraint: expected rows on a grid of shape {prediction.grid.shape}, "
            f"got ({constraint.n_t}, {constraint.n_x})"
        )


class ConstraintUpdate(ABC):
    """S^-1 and the gain Sigma G^T S^-1 for one prior covariance and one constraint."""

    def __init__(self, covariance: Covariance, constraint: LinearConstraint) -> None:
        self.covariance = covariance
        self.constraint = constraint

    @abstractmethod
    def solve(self, rows: torch.Tensor) -> torch.Tensor:
        """S^-1 y for y (..., n_t, r)."""

    @abstractmethod
    def variance_reduction(self) -> torch.Tensor:
        """diag(Sigma G^T S^-1 G Sigma), (N,)."""

    def spread(self, solved: torch.Tensor) -> torch.Tensor:
        """Sigma G^T y for y (..., n_t, r) -> (..., N)."""
        batch = solved.shape[:-2]
        back = self.constraint.apply_transpose(solved).reshape(-1, self.covariance.size)
        return self.covariance.matmul(back.T).T.reshape(*batch, self.covariance.size)

    def gain(self, rows: torch.Tensor, steps: int = REFINEMENT_STEPS) -> torch.Tensor:
        """Sigma G^T S^-1 y: (..., n_t, r) -> (..., N), refined so that G gain + R S^-1 y = y.

        Without refinement an ill-conditioned Sigma (cond 1e12) leaves |G mu~ - b| ~ 1e-5 |b|
        for exact rows; each step costs one more solve and spread.
        """
        constraint = self.constraint
        solved = self.solve(rows)
        update = self.spread(solved)
        for _ in range(steps):
            field = update.reshape(*rows.shape[:-2], constraint.n_t, constraint.n_x)
            misfit = rows - constraint.apply(field) - constraint.noise_std**2 * solved
            if misfit.abs().max() <= REFINEMENT_TOLERANCE * rows.abs().max():
                break
            correction = self.solve(misfit)
            solved = solved + correction
            update = update + self.spread(correction)
        return update

    def noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Slack draws eps ~ N(0, R), (n, n_t, r)."""
        standard = torch.randn(
            (n, *self.constraint.values.shape), generator=generator, dtype=torch.float64
        )
        return standard * self.constraint.noise_std


class SliceUpdate(ConstraintUpdate):
    """Sigma independent across time slices (diagonal, block): S is block-diagonal, (n_t, r, r)."""

    def __init__(self, covariance, constraint, rcond: float = RCOND) -> None:
        super().__init__(covariance, constraint)
        self.cross = covariance.slice_product(constraint.weights)  # (n_t, n_x, r)
        system = constraint.weights @ self.cross + torch.diag_embed(constraint.noise_std**2)
        self.factor = _checked_cholesky(system, rcond, "time slice")

    def solve(self, rows):
        flat = rows.reshape(-1, *rows.shape[-2:]).permute(1, 2, 0)  # (n_t, r, batch)
        solved = torch.cholesky_solve(flat, self.factor)
        return solved.permute(2, 0, 1).reshape(rows.shape)

    def spread(self, solved):
        batch = solved.shape[:-2]
        update = torch.einsum("jir,...jr->...ji", self.cross, solved)
        return update.reshape(*batch, self.covariance.size)

    def variance_reduction(self):
        whitened = torch.linalg.solve_triangular(
            self.factor, self.cross.transpose(1, 2), upper=False
        ).square_()  # (n_t, r, n_x)
        if whitened.shape[1] == 1:
            return whitened.reshape(-1)
        return whitened.sum(dim=1).reshape(-1)


class LowRankUpdate(ConstraintUpdate):
    """Sigma = D + F F^T: S = B + M M^T with B = G D G^T + R per slice, M = G F; Woodbury."""

    def __init__(self, covariance: LowRankCovariance, constraint, rcond: float = RCOND) -> None:
        super().__init__(covariance, constraint)
        n_t, r, n_x = constraint.weights.shape
        diagonal = DiagonalCovariance(covariance.diagonal_part)
        self.local_cross = diagonal.slice_product(constraint.weights)  # D G^T, (n_t, n_x, r)
        local = constraint.weights @ self.local_cross + torch.diag_embed(constraint.noise_std**2)
        self.local_factor = _checked_cholesky(local, rcond, "time slice (diagonal part)")
        factor = covariance.factor.T.reshape(-1, n_t, n_x)
        self.projected = constraint.apply(factor).permute(1, 2, 0)  # M = G F, (n_t, r, k)
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

    def __init__(self, covariance, constraint, rcond: float = RCOND) -> None:
        super().__init__(covariance, constraint)
        if covariance.size > DENSE_LIMIT:
            raise ValueError(
                f"covariance: a {type(covariance).__name__} over {covariance.size} points exceeds "
                f"the dense limit of {DENSE_LIMIT}; use a structured covariance (diagonal, low-rank, "
                "block) or condition on all constraints at once (LinearConstraint.stack)"
            )
        matrix = constraint.to_dense()  # (m, N)
        self.cross = covariance.matmul(matrix.T)  # (N, m)
        system = matrix @ self.cross + torch.diag(constraint.noise_std.reshape(-1) ** 2)
        self.factor = _checked_cholesky((system + system.T) / 2, rcond, "constraint row block")

    def solve(self, rows):
        flat = rows.reshape(-1, self.constraint.num_rows).T
        return torch.cholesky_solve(flat, self.factor).T.reshape(rows.shape)

    def spread(self, solved):
        batch = solved.shape[:-2]
        flat = solved.reshape(-1, self.constraint.num_rows)
        return (flat @ self.cross.T).reshape(*batch, self.covariance.size)

    def variance_reduction(self):
        whitened = torch.linalg.solve_triangular(self.factor, self.cross.T, upper=False)
        return (whitened**2).sum(dim=0)


def constraint_update(
    covariance: Covariance, constraint: LinearConstraint, rcond: float = RCOND
) -> ConstraintUpdate:
    """The update that exploits the covariance's structure."""
    if isinstance(covariance, DiagonalCovariance) or (
        isinstance(covariance, BlockCovariance) and covariance.n_x == constraint.n_x
    ):
        return SliceUpdate(covariance, constraint, rcond)
    if isinstance(covariance, LowRankCovariance):
        try:
            return LowRankUpdate(covariance, constraint, rcond)
        except ValueError:
            if covariance.size > DENSE_LIMIT:
                raise
    return DenseUpdate(covariance, constraint, rcond)


class ConditionedCovariance(Covariance):
    """Sigma~ = Sigma - Sigma G^T S^-1 G Sigma, kept as (prior, update); never formed densely."""

    def __init__(self, update: ConstraintUpdate) -> None:
        self.update = update
        self.prior = update.covariance
        self.size = self.prior.size

    def diagonal(self):
        """Marginal variances, clamped at zero against round-off."""
        reduction = self.update.variance_reduction()  # a new tensor: overwritten in place
        prior = self.prior
        variance = prior.variance if isinstance(prior, DiagonalCovariance) else prior.diagonal()
        return torch.sub(variance, reduction, out=reduction).clamp_(min=0)

    def sample(self, n, generator=None):
        """Pathwise: z - Sigma G^T S^-1 (G z + eps), z ~ N(0, Sigma)."""
        prior = self.prior.sample(n, generator)
        constraint = self.update.constraint
        rows = constraint.apply(prior.reshape(n, constraint.n_t, constraint.n_x))
        return prior.sub_(self.update.gain(rows.add_(self.update.noise(n, generator))))

    def matmul(self, matrix):
        constraint = self.update.constraint
        product = self.prior.matmul(matrix)  # (N, k)
        rows = constraint.apply(product.T.reshape(-1, constraint.n_t, constraint.n_x))
        return product - self.update.gain(rows).T

    def to_dense(self):
        """(N, N) in square-root form A A^T + B B^T, A = (I - K G) L, B = K R^1/2, L L^T = Sigma.

        Symmetric and PSD to round-off relative to the posterior itself (the difference form
        Sigma - K G Sigma is only PSD relative to the prior's scale).
        """
        constraint = self.update.constraint
        root = psd_root(self.prior.to_dense())  # (N, N)
        rows = constraint.apply(root.T.reshape(-1, constraint.n_t, constraint.n_x))
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
                raise ValueError(
                    f"constraint[{index}]: expected a probcons LinearConstraint, "
                    f"got {type(part).__name__}"
                )
        if not constraint:
            return None
        first, *rest = constraint
        constraint = first.stack(*rest) if rest else first
    if isinstance(constraint, LinearConstraint) and constraint.rows_per_slice == 0:
        return None
    return constraint


def condition(
    prediction: GaussianPrediction, constraint: LinearConstraint, rcond: float = RCOND
) -> GaussianPrediction:
    """ProbConserv: the exact Gaussian posterior of u given G u = b + eps (sigma_G >= 0).

    `constraint` may be a list of constraints (stacked); an empty list returns `prediction`.
    """
    constraint = _as_constraint(constraint)
    if constraint is None:
        return prediction
    _check_grid(prediction, constraint)
    update = constraint_update(prediction.covariance, constraint, rcond)
    residual = constraint.values - constraint.apply(prediction.mean)
    mean = prediction.mean + update.gain(residual).reshape(prediction.grid.shape)
    return GaussianPrediction(mean, ConditionedCovariance(update), prediction.grid)


def project(
    prediction: GaussianPrediction, constraint: LinearConstraint, rcond: float = RCOND
) -> GaussianPrediction:
    """HardC: mu~ = mu - G^T (G G^T + R)^-1 (G mu - b); the covariance is left unchanged."""
    constraint = _as_constraint(constraint)
    if constraint is None:
        return prediction
    _check_grid(prediction, constraint)
    identity = DiagonalCovariance(torch.ones(prediction.grid.size, dtype=torch.float64))
    update = SliceUpdate(identity, constraint, rcond)
    residual = constraint.values - constraint.apply(prediction.mean)
    mean = prediction.mean + update.gain(residual).reshape(prediction.grid.shape)
    return GaussianPrediction(mean, prediction.covariance, prediction.grid)


__all__ = [
    "ConditionedCovariance",
    "ConstraintUpdate",
    "condition",
    "constraint_update",
    "project",
]
