"""Equal-weight mixtures of Gaussian predictions (one component per latent sample of an ANP).

With components N(mu_k, Sigma_k), k = 1..K, on one grid:

    mean      = (1/K) sum_k mu_k
    variance  = (1/K) sum_k diag(Sigma_k)  +  (1/K) sum_k (mu_k - mean)^2   (law of total variance)
                 `within_variance`              `between_variance`

Constraints act per component (`condition`: ProbConserv, `project`: HardC), so a mixture of
conditioned components keeps the spread between latent samples in its variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from probcons.grid import Grid
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


class GaussianMixture:
    """Equal-weight mixture of `GaussianPrediction`s on one grid; moments are (n_t, n_x) float64."""

    def __init__(self, components: Sequence) -> None:
        components = list(components)
        if not components:
            raise ValueError("components: expected at least one GaussianPrediction, got none")
        for index, component in enumerate(components):
            for attribute in ("mean", "covariance", "grid", "variance"):
                if not hasattr(component, attribute):
                    raise ValueError(
                        f"components[{index}]: expected a GaussianPrediction, got "
                        f"{describe(component)}"
                    )
        grid = components[0].grid
        for index, component in enumerate(components):
            if tuple(component.mean.shape) != tuple(grid.shape):
                raise ValueError(
                    f"components[{index}]: expected a mean of shape {tuple(grid.shape)}, got "
                    f"{tuple(component.mean.shape)}"
                )
        self.components = components
        self.grid: Grid = grid

    def __len__(self) -> int:
        return len(self.components)

    @property
    def means(self) -> torch.Tensor:
        """Component means, (K, n_t, n_x)."""
        return torch.stack([c.mean for c in self.components])

    @property
    def variances(self) -> torch.Tensor:
        """Component marginal variances, (K, n_t, n_x)."""
        return torch.stack([c.variance for c in self.components])

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean (1/K) sum_k mu_k, (n_t, n_x)."""
        return self.means.mean(dim=0)

    @property
    def within_variance(self) -> torch.Tensor:
        """Average component variance (1/K) sum_k diag Sigma_k, (n_t, n_x)."""
        return self.variances.mean(dim=0)

    @property
    def between_variance(self) -> torch.Tensor:
        """Variance of the component means (1/K) sum_k (mu_k - mean)^2, (n_t, n_x)."""
        means = self.means
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
            raise ValueError(
                f"values: expected shape {tuple(self.grid.shape)}, got {describe(values)}"
            )
        variances = self.variances
        if bool((variances <= 0).any()):
            raise ValueError("values: the mixture has zero marginal variance at some point")
        log_pdf = -0.5 * (
            (values - self.means) ** 2 / variances + torch.log(2 * math.pi * variances)
        )
        return torch.logsumexp(log_pdf, dim=0) - math.log(len(self))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, n_t, n_x): a uniform component per draw, then that component's Gaussian."""
        check_positive_int(n, "n")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator: expected a torch.Generator or None, got {describe(generator)}"
            )
        choice = torch.randint(len(self), (n,), generator=generator)
        draws = torch.empty((n, *self.grid.shape), dtype=torch.float64)
        for index in torch.unique(choice).tolist():
            rows = (choice == index).nonzero().reshape(-1)
            draws[rows] = self.components[index].sample(rows.numel(), generator)
        return draws

    def moment_matched(self):
        """The Gaussian with the mixture's mean and (diagonal) variance."""
        from probcons.covariance import DiagonalCovariance
        from probcons.prediction import GaussianPrediction

        return GaussianPrediction(
            self.mean, DiagonalCovariance(self.variance.reshape(-1)), self.grid
        )

    def condition(self, constraint, **options) -> GaussianMixture:
        """ProbConserv per component (exact Gaussian update), then mixed again.

        options: passed to `probcons.conditioning.condition` (e.g. singular="pinv").
        """
        from probcons.conditioning import condition

        return GaussianMixture([condition(c, constraint, **options) for c in self.components])

    def project(self, constraint, **options) -> GaussianMixture:
        """HardC per component (mean projected, covariance unchanged), then mixed again."""
        from probcons.conditioning import project

        return GaussianMixture([project(c, constraint, **options) for c in self.components])

    def __repr__(self) -> str:
        return f"GaussianMixture(components={len(self)}, grid={self.grid!r})"
