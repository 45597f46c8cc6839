"""The one prediction type every backbone returns: a Gaussian over a (t, x) grid."""

from __future__ import annotations

import torch

from probcons.covariance import Covariance, check_size, covariance_from_dense_or_structure
from probcons.grid import Grid
from probcons.validation import as_float64_tensor, check_positive_int, check_shape


class GaussianPrediction:
    """u ~ N(mean, covariance) on `grid`: mean (n_t, n_x), covariance over N = n_t n_x points.

    The covariance is structured (see `probcons.covariance`); all values are float64.
    """

    def __init__(self, mean: torch.Tensor, covariance: Covariance, grid: Grid) -> None:
        if not isinstance(grid, Grid):
            raise ValueError(f"grid: expected a probcons.grid.Grid, got {type(grid).__name__}")
        mean = as_float64_tensor(mean, "mean")
        if mean.dim() == 1 and mean.numel() == grid.size:
            mean = mean.reshape(grid.shape)
        check_shape(mean, grid.shape, "mean")
        covariance = covariance_from_dense_or_structure(covariance)
        check_size(covariance, grid.size)
        self.mean = mean
        self.covariance = covariance
        self.grid = grid

    @property
    def variance(self) -> torch.Tensor:
        """Marginal variances, (n_t, n_x)."""
        return self.covariance.diagonal().reshape(self.grid.shape)

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.clamp_min(0).sqrt()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws, (n, n_t, n_x)."""
        check_positive_int(n, "n")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator: expected a torch.Generator or None, got {type(generator).__name__}"
            )
        noise = self.covariance.sample(n, generator).reshape(n, *self.grid.shape)
        return self.mean + noise

    def condition(self, constraint, **options) -> GaussianPrediction:
        """ProbConserv: the exact posterior given G u = b + eps (see `probcons.conditioning`)."""
        from probcons.conditioning import condition

        return condition(self, constraint, **options)

    def project(self, constraint, **options) -> GaussianPrediction:
        """HardC: the mean projected onto G u = b, covariance unchanged."""
        from probcons.conditioning import project

        return project(self, constraint, **options)

    def __repr__(self) -> str:
        return f"GaussianPrediction(grid={self.grid}, covariance={self.covariance!r})"
