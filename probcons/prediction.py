"""A Gaussian over a (t, x) grid with a structured covariance: the basic `Posterior`."""

from __future__ import annotations

import torch

from probcons.conditioning import conditioned_moments, projected_mean
from probcons.covariance import Covariance, check_size, covariance_from_dense_or_structure
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.posterior import Posterior, check_generator
from probcons.validation import as_float64_tensor, check_positive_int, check_shape


class GaussianPrediction(Posterior):
    """u ~ N(mean, covariance) on `grid`: mean (n_t, n_x), covariance over N = n_t n_x points.

    The covariance is structured (see `probcons.covariance`); all values are float64.
    """

    def __init__(self, mean: torch.Tensor, covariance: Covariance, grid: Grid) -> None:
        if not isinstance(grid, Grid):
            raise UsageError(f"grid: expected a probcons.grid.Grid, got {type(grid).__name__}")
        mean = as_float64_tensor(mean, "mean")
        if mean.dim() == 1 and mean.numel() == grid.size:
            mean = mean.reshape(grid.shape)
        check_shape(mean, grid.shape, "mean")
        covariance = covariance_from_dense_or_structure(covariance)
        check_size(covariance, grid.size)
        self._mean = mean
        self.covariance = covariance
        self.grid = grid

    @property
    def mean(self) -> torch.Tensor:
        return self._mean

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances, (n_t, n_x)."""
        return self.covariance.diagonal().reshape(self.grid.shape)

    @property
    def base_sample_shape(self) -> torch.Size:
        return torch.Size([self.covariance.base_size])

    def draws_from_base(self, base: torch.Tensor) -> torch.Tensor:
        return self.mean + self.covariance.transform(base).reshape(-1, *self.grid.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws, (n, n_t, n_x)."""
        check_positive_int(n, "n")
        check_generator(generator)
        noise = self.covariance.sample(n, generator).reshape(n, *self.grid.shape)
        return noise.add_(self.mean)  # the draws in place: no second (n, N) array

    def condition(self, constraint, **options) -> GaussianPrediction:
        """ProbConserv: the exact posterior given G u = b + eps (see `probcons.conditioning`)."""
        moments = conditioned_moments(self, constraint, **options)
        return self if moments is None else GaussianPrediction(*moments, self.grid)

    def project(self, constraint, **options) -> GaussianPrediction:
        """HardC: the mean projected onto G u = b, covariance unchanged."""
        mean = projected_mean(self, constraint, **options)
        return self if mean is None else GaussianPrediction(mean, self.covariance, self.grid)

    def with_grid(self, grid: Grid) -> GaussianPrediction:
        if not isinstance(grid, Grid) or grid.size != self.grid.size:
            raise UsageError(f"grid: expected a Grid of {self.grid.size} points, got {grid!r}")
        return GaussianPrediction(self.mean.reshape(grid.shape), self.covariance, grid)

    def __repr__(self) -> str:
        return f"GaussianPrediction(grid={self.grid}, covariance={self.covariance!r})"
