"""Equal-weight mixtures of Gaussian predictions (one component per latent sample of an ANP).

With components N(mu_k, Sigma_k), k = 1..K, on one grid:

    mean      = (1/K) sum_k mu_k
    variance  = (1/K) sum_k diag(Sigma_k)  +  (1/K) sum_k (mu_k - mean)^2   (law of total variance)
                 `within_variance`              `between_variance`

Constraints act per component (`condition`: ProbConserv, `project`: HardC), so a mixture of
conditioned components keeps the spread between latent samples in its variance.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from probcons.covariance import DiagonalCovariance
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.posterior import Posterior, check_generator
from probcons.prediction import GaussianPrediction
from probcons.validation import check_positive_int, describe


def mixture_moments(
    means: torch.Tensor, stds: torch.Tensor, variance_scale: float | torch.Tensor = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, between_variance, variance) of the equal-weight mixture of N(means_k,
    variance_scale * stds_k^2): means, stds (K, *shape) -> each (*shape); variance_scale a
    number or a tensor that broadcasts against *shape."""
    mean = means.mean(0)
    between = means.var(0, unbiased=False)
    return mean, between, between + variance_scale * (stds**2).mean(0)


class GaussianMixture(Posterior):
    """Equal-weight mixture of `GaussianPrediction`s on one grid; moments are (n_t, n_x) float64.

    One component per latent sample (ANP) or ensemble member; base samples for `rsample` are
    one standard normal that picks the component (through its normal CDF) followed by the
    components' own base samples.
    """

    def __init__(self, components: Sequence) -> None:
        components = list(components)
        if not components:
            raise UsageError("components: expected at least one GaussianPrediction, got none")
        for index, component in enumerate(components):
            if not isinstance(component, GaussianPrediction):
                raise UsageError(
                    f"components[{index}]: expected a GaussianPrediction, got {describe(component)}"
                )
        grid = components[0].grid
        for index, component in enumerate(components):
            if tuple(component.mean.shape) != tuple(grid.shape):
                raise UsageError(
                    f"components[{index}]: expected a mean of shape {tuple(grid.shape)}, got "
                    f"{tuple(component.mean.shape)}"
                )
        self.components = components
        self.grid: Grid = grid

    def __len__(self) -> int:
        return len(self.components)

    @functools.cached_property
    def _means(self) -> torch.Tensor:
        """The component means stacked once (a conditioned component's variance is computed
        anew on every access, and the mixture's moments are read several times)."""
        return torch.stack([c.mean for c in self.components])

    @functools.cached_property
    def _variances(self) -> torch.Tensor:
        return torch.stack([c.variance for c in self.components])

    @property
    def means(self) -> torch.Tensor:
        """Component means, (K, n_t, n_x)."""
        return self._means.clone()

    @property
    def variances(self) -> torch.Tensor:
        """Component marginal variances, (K, n_t, n_x)."""
        return self._variances.clone()

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean (1/K) sum_k mu_k, (n_t, n_x)."""
        return self._means.mean(dim=0)

    @property
    def within_variance(self) -> torch.Tensor:
        """Average component variance (1/K) sum_k diag Sigma_k, (n_t, n_x)."""
        return self._variances.mean(dim=0)

    @property
    def between_variance(self) -> torch.Tensor:
        """Variance of the component means (1/K) sum_k (mu_k - mean)^2, (n_t, n_x)."""
        means = self._means
        return ((means - means.mean(dim=0)) ** 2).mean(dim=0)

    @property
    def variance(self) -> torch.Tensor:
        """Law of total variance: within + between, (n_t, n_x)."""
        return self.within_variance + self.between_variance

    def latent_variance_share(self) -> float:
        """sum(between) / sum(total) over the grid: the share of variance from the latent."""
        total = float(self.variance.sum())
        return float(self.between_variance.sum()) / total if total > 0 else math.nan

    def log_density(self, values: torch.Tensor) -> torch.Tensor:
        """Pointwise log of the mixture's marginal density at `values` (n_t, n_x) -> (n_t, n_x).

        log (1/K) sum_k N(values; mu_k, var_k); zero component variances are not allowed.
        """
        values = torch.as_tensor(values, dtype=torch.float64)
        if tuple(values.shape) != tuple(self.grid.shape):
            raise UsageError(
                f"values: expected shape {tuple(self.grid.shape)}, got {describe(values)}"
            )
        variances = self._variances
        if bool((variances <= 0).any()):
            raise UsageError("values: the mixture has zero marginal variance at some point")
        log_pdf = -0.5 * (
            (values - self._means) ** 2 / variances + torch.log(2 * math.pi * variances)
        )
        return torch.logsumexp(log_pdf, dim=0) - math.log(len(self))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, n_t, n_x): a uniform component per draw, then that component's Gaussian."""
        check_positive_int(n, "n")
        check_generator(generator)
        choice = torch.randint(len(self), (n,), generator=generator)
        draws = torch.empty((n, *self.grid.shape), dtype=torch.float64)
        for index in torch.unique(choice).tolist():
            rows = (choice == index).nonzero().reshape(-1)
            draws[rows] = self.components[index].sample(rows.numel(), generator)
        return draws

    @property
    def base_sample_shape(self) -> torch.Size:
        """1 (the component) + the components' base size (all components share it)."""
        sizes = {component.covariance.base_size for component in self.components}
        if len(sizes) != 1:
            raise UsageError(
                "base_samples: the mixture's components have covariances of different base "
                f"sizes {sorted(sizes)}; draw with sample(n, generator) instead"
            )
        return torch.Size([1 + sizes.pop()])

    def draws_from_base(self, base: torch.Tensor) -> torch.Tensor:
        """Component floor(K Phi(z_0)), then its Gaussian from z_1:."""
        uniform = torch.special.ndtr(base[:, 0])
        choice = (uniform * len(self)).long().clamp_(0, len(self) - 1)
        draws = torch.empty((base.shape[0], *self.grid.shape), dtype=torch.float64)
        for index in torch.unique(choice).tolist():
            rows = (choice == index).nonzero().reshape(-1)
            draws[rows] = self.components[index].draws_from_base(base[rows, 1:])
        return draws

    def with_grid(self, grid: Grid) -> GaussianMixture:
        return GaussianMixture([component.with_grid(grid) for component in self.components])

    def moment_matched(self) -> GaussianPrediction:
        """The Gaussian with the mixture's mean and (diagonal) variance."""
        return GaussianPrediction(
            self.mean, DiagonalCovariance(self.variance.reshape(-1)), self.grid
        )

    def condition(self, constraint, **options) -> GaussianMixture:
        """ProbConserv per component (exact Gaussian update), then mixed again.

        options: passed to `GaussianPrediction.condition` (e.g. singular="pinv").
        """
        return GaussianMixture([c.condition(constraint, **options) for c in self.components])

    def project(self, constraint, **options) -> GaussianMixture:
        """HardC per component (mean projected, covariance unchanged), then mixed again."""
        return GaussianMixture([c.project(constraint, **options) for c in self.components])

    def __repr__(self) -> str:
        return f"GaussianMixture(components={len(self)}, grid={self.grid!r})"
