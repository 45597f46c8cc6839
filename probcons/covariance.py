"""Structured covariances over a flattened (t, x) grid (N = n_t n_x, t-major).

Each class stores only its structure and owns its algebra behind one small interface:
`diagonal()` (N,), `sample(n, generator)` (n, N) zero-mean draws, `transform(base)` the same
draws from given standard normals base (n, base_size) (common random numbers), `to_dense()`
(N, N), `matmul(X)` for X (N, k). The exact update against constraint rows is chosen per
structure in `probcons.conditioning.constraint_update`. Nothing here forms an N x N matrix
unless it is dense already.

linear_operator (GPyTorch's structured matrices) is not used for these: its `solve` and
`root_decomposition` switch from Cholesky to CG and Lanczos above its global
`max_cholesky_size` setting, so the exact, float64, round-off-checked update promised here
would depend on a setting outside the call; and the update needs the per-time-slice view of
the constraint rows, which no linear_operator type offers. The GP backbone still uses it
through GPyTorch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from probcons.errors import UsageError
from probcons.validation import as_float64_tensor, describe

SYMMETRY_TOLERANCE = 1e-10
"""Relative asymmetry max|S - S^T| / max|S| accepted for dense blocks."""
PSD_TOLERANCE = 1e-10
"""Relative negative eigenvalue -lambda_min / lambda_max accepted for dense blocks."""


def _check_symmetric_psd(blocks: torch.Tensor, name: str, tolerance: float = PSD_TOLERANCE) -> None:
    """Blocks (..., n, n) must be symmetric and positive semi-definite (relative tolerances)."""
    scale = blocks.abs().amax(dim=(-2, -1)).clamp_min(torch.finfo(torch.float64).tiny)
    asymmetry = (blocks - blocks.transpose(-2, -1)).abs().amax(dim=(-2, -1)) / scale
    if bool((asymmetry > SYMMETRY_TOLERANCE).any()):
        raise UsageError(
            f"{name}: expected a symmetric matrix, got relative asymmetry {float(asymmetry.max()):.3g}"
        )
    eigenvalues = torch.linalg.eigvalsh(blocks)
    relative = eigenvalues[..., 0] / eigenvalues[..., -1].abs().clamp_min(
        torch.finfo(torch.float64).tiny
    )
    if bool((relative < -tolerance).any()):
        raise UsageError(
            f"{name}: expected a positive semi-definite matrix, got relative minimum "
            f"eigenvalue {float(relative.min()):.3g}"
        )


def psd_root(blocks: torch.Tensor) -> torch.Tensor:
    """A matrix R with R R^T = blocks (..., n, n): Cholesky, else a clamped eigen-root.

    Eigenvalues at most n eps lambda_max are round-off of zero and dropped, so that a direction of
    zero variance (a pinned point) gets no noise: keeping sqrt(1e-17) would give it 3e-9.
    """
    factor, info = torch.linalg.cholesky_ex(blocks)
    if not bool((info != 0).any()):
        return factor
    eigenvalues, vectors = torch.linalg.eigh(blocks)
    cutoff = blocks.shape[-1] * torch.finfo(blocks.dtype).eps * eigenvalues[..., -1:].abs()
    kept = torch.where(eigenvalues > cutoff, eigenvalues, 0.0)
    return vectors * kept.sqrt()[..., None, :]


def _normal(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


class Covariance(ABC):
    """A symmetric PSD covariance over N grid points."""

    size: int

    @abstractmethod
    def diagonal(self) -> torch.Tensor:
        """Marginal variances, (N,)."""

    @property
    def base_size(self) -> int:
        """Standard normals per draw that `transform` maps to one draw (N unless overridden)."""
        return self.size

    @abstractmethod
    def transform(self, base: torch.Tensor) -> torch.Tensor:
        """Zero-mean draws (n, N) from standard normals base (n, base_size)."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n zero-mean draws, (n, N)."""
        return self.transform(_normal((n, self.base_size), generator))

    @abstractmethod
    def matmul(self, matrix: torch.Tensor) -> torch.Tensor:
        """Sigma X for X (N, k) -> (N, k)."""

    def to_dense(self) -> torch.Tensor:
        """(N, N); only for small N."""
        return self.matmul(torch.eye(self.size, dtype=torch.float64))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class DenseCovariance(Covariance):
    """A full (N, N) covariance matrix."""

    def __init__(self, matrix: torch.Tensor, validate: bool = True) -> None:
        matrix = as_float64_tensor(matrix, "matrix")
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise UsageError(
                f"matrix: expected a square (N, N) matrix with N >= 1, got {describe(matrix)}"
            )
        if validate:
            _check_symmetric_psd(matrix, "matrix")
        self.matrix = (matrix + matrix.T) / 2
        self.size = matrix.shape[0]
        self._root: torch.Tensor | None = None

    def diagonal(self) -> torch.Tensor:
        return self.matrix.diagonal().clone()

    def root(self) -> torch.Tensor:
        if self._root is None:
            self._root = psd_root(self.matrix)
        return self._root

    def transform(self, base):
        return base @ self.root().T

    def matmul(self, matrix):
        return self.matrix @ matrix

    def to_dense(self):
        return self.matrix.clone()


class DiagonalCovariance(Covariance):
    """Independent points: Sigma = diag(variance), variance (N,)."""

    def __init__(self, variance: torch.Tensor) -> None:
        variance = as_float64_tensor(variance, "variance").reshape(-1)
        if bool((variance < 0).any()):
            raise UsageError(
                f"variance: expected values >= 0, got minimum {float(variance.min()):.3g}"
            )
        self.variance = variance
        self.size = variance.numel()

    def diagonal(self):
        return self.variance.clone()

    def transform(self, base):
        return base * self.variance.sqrt()

    def sample(self, n, generator=None):
        """n zero-mean draws (n, N): the standard normals scaled in place (no second array)."""
        return _normal((n, self.size), generator).mul_(self.variance.sqrt())

    def matmul(self, matrix):
        return self.variance[:, None] * matrix

    def slice_product(self, weights: torch.Tensor) -> torch.Tensor:
        """Sigma_j W_j^T per time slice: weights (n_t, r, n_x) -> (n_t, n_x, r)."""
        n_t, _, n_x = weights.shape
        return self.variance.reshape(n_t, n_x, 1) * weights.transpose(1, 2)


class LowRankCovariance(Covariance):
    """Sigma = diag(diagonal) + F F^T with F (N, k): ensembles (member spread) plus aleatoric noise."""

    def __init__(self, diagonal: torch.Tensor, factor: torch.Tensor) -> None:
        diagonal = as_float64_tensor(diagonal, "diagonal").reshape(-1)
        factor = as_float64_tensor(factor, "factor")
        if factor.dim() == 2 and factor.shape[1] == 0:
            raise UsageError(
                f"factor: expected at least one column, got shape {tuple(factor.shape)}; "
                "use DiagonalCovariance for a covariance without a low-rank part"
            )
        if factor.dim() != 2 or factor.shape[0] != diagonal.numel():
            raise UsageError(
                f"factor: expected shape ({diagonal.numel()}, k), got {describe(factor)}"
            )
        if bool((diagonal < 0).any()):
            raise UsageError(
                f"diagonal: expected values >= 0, got minimum {float(diagonal.min()):.3g}"
            )
        self.diagonal_part = diagonal
        self.factor = factor
        self.size = diagonal.numel()

    @property
    def rank(self) -> int:
        return self.factor.shape[1]

    def diagonal(self):
        """diag(D) + row sums of F * F, without an (N, k) temporary."""
        return torch.einsum("ik,ik->i", self.factor, self.factor).add_(self.diagonal_part)

    @property
    def base_size(self) -> int:
        """k weights of the factor's columns, then N for the diagonal part."""
        return self.rank + self.size

    def sample(self, n, generator=None):
        weights = _normal((n, self.rank), generator)
        noise = _normal((n, self.size), generator).mul_(self.diagonal_part.sqrt())
        return noise.addmm_(weights, self.factor.T)

    def transform(self, base):
        noise = base[:, self.rank :] * self.diagonal_part.sqrt()
        return noise.addmm_(base[:, : self.rank], self.factor.T)

    def matmul(self, matrix):
        return self.diagonal_part[:, None] * matrix + self.factor @ (self.factor.T @ matrix)


class BlockCovariance(Covariance):
    """Independent time slices: blocks (n_t, n_x, n_x), one covariance per slice."""

    def __init__(self, blocks: torch.Tensor, validate: bool = True) -> None:
        blocks = as_float64_tensor(blocks, "blocks")
        if blocks.dim() != 3 or blocks.shape[1] != blocks.shape[2]:
            raise UsageError(f"blocks: expected shape (n_t, n_x, n_x), got {describe(blocks)}")
        if validate:
            _check_symmetric_psd(blocks, "blocks")
        self.blocks = (blocks + blocks.transpose(1, 2)) / 2
        self.n_t, self.n_x = blocks.shape[0], blocks.shape[1]
        self.size = self.n_t * self.n_x
        self._root: torch.Tensor | None = None

    def diagonal(self):
        return self.blocks.diagonal(dim1=1, dim2=2).reshape(-1).clone()

    def root(self) -> torch.Tensor:
        if self._root is None:
            self._root = psd_root(self.blocks)
        return self._root

    def transform(self, base):
        noise = base.reshape(-1, self.n_t, self.n_x)
        return torch.einsum("jab,njb->nja", self.root(), noise).reshape(-1, self.size)

    def matmul(self, matrix):
        columns = matrix.shape[1]
        sliced = matrix.reshape(self.n_t, self.n_x, columns)
        return torch.bmm(self.blocks, sliced).reshape(self.size, columns)

    def slice_product(self, weights: torch.Tensor) -> torch.Tensor:
        """Sigma_j W_j^T per time slice: weights (n_t, r, n_x) -> (n_t, n_x, r)."""
        return torch.bmm(self.blocks, weights.transpose(1, 2))


def covariance_from_dense_or_structure(value) -> Covariance:
    """Accept a Covariance, a (N,) variance vector or a (N, N) matrix."""
    if isinstance(value, Covariance):
        return value
    tensor = as_float64_tensor(value, "covariance")
    if tensor.dim() == 1:
        return DiagonalCovariance(tensor)
    if tensor.dim() == 2:
        return DenseCovariance(tensor)
    raise UsageError(
        f"covariance: expected a Covariance, a (N,) variance or a (N, N) matrix, got {describe(tensor)}"
    )


def check_size(covariance: Covariance, size: int, name: str = "covariance") -> None:
    """Raise unless the covariance is over `size` points."""
    if covariance.size != size:
        raise UsageError(f"{name}: expected a covariance over {size} points, got {covariance.size}")


__all__ = [
    "BlockCovariance",
    "Covariance",
    "DenseCovariance",
    "DiagonalCovariance",
    "LowRankCovariance",
    "check_size",
    "covariance_from_dense_or_structure",
    "psd_root",
]
