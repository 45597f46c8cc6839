"""The one prediction type: a distribution over a (t, x) grid that constraints act on.

Every backbone's `predict` returns a `Posterior`; ProbConserv (`condition`), HardC (`project`)
and the unconstrained prediction are of the same type, so callers never branch on what made it.

    mean, variance           (n_t, n_x) float64 marginal moments
    rsample(shape, base)     (*shape, n_t, n_x) draws; `base` standard normals of shape
                             (*shape, *base_sample_shape) make them common random numbers
    sample(n, generator)     (n, n_t, n_x) draws from a seeded torch.Generator
    condition(constraint)    the exact posterior given G u = b + eps (ProbConserv)
    project(constraint)      the mean projected onto G u = b, spread unchanged (HardC)
    with_grid(grid)          the same numbers on another grid of the same size

`probcons.prediction.GaussianPrediction` and `probcons.mixture.GaussianMixture` implement it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.validation import check_positive_int, describe


class Posterior(ABC):
    """A predictive distribution of u on `grid` (abstract; see the module docstring)."""

    grid: Grid

    @property
    @abstractmethod
    def mean(self) -> torch.Tensor:
        """E[u], (n_t, n_x)."""

    @property
    @abstractmethod
    def variance(self) -> torch.Tensor:
        """Var[u] pointwise, (n_t, n_x)."""

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.clamp_min(0).sqrt()

    @property
    @abstractmethod
    def base_sample_shape(self) -> torch.Size:
        """Shape of the standard normals that `rsample` maps to one draw."""

    @abstractmethod
    def draws_from_base(self, base: torch.Tensor) -> torch.Tensor:
        """Draws (n, n_t, n_x) from standard normals base (n, *base_sample_shape)."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws, (n, n_t, n_x)."""

    @abstractmethod
    def condition(self, constraint, **options) -> Posterior:
        """ProbConserv: the exact posterior given G u = b + eps (`probcons.conditioning`)."""

    @abstractmethod
    def project(self, constraint, **options) -> Posterior:
        """HardC: the mean projected onto G u = b; the spread is left unchanged."""

    @abstractmethod
    def with_grid(self, grid: Grid) -> Posterior:
        """The same distribution read on another grid with as many points (t-major order)."""

    def rsample(self, sample_shape: torch.Size | tuple = (), base_samples=None) -> torch.Tensor:
        """Draws (*sample_shape, n_t, n_x), from `base_samples` when given.

        base_samples: standard normals (*sample_shape, *base_sample_shape), e.g. shared by
        the unconstrained, HardC and ProbConserv posteriors of one prior (common random
        numbers: their draws then differ only by what each method changes).
        """
        shape = torch.Size(sample_shape)
        count = math.prod(shape)
        if base_samples is None:
            return self.sample(check_positive_int(count, "sample_shape"), None).reshape(
                *shape, *self.grid.shape
            )
        expected = (*shape, *self.base_sample_shape)
        if not isinstance(base_samples, torch.Tensor) or tuple(base_samples.shape) != expected:
            raise UsageError(
                f"base_samples: expected a tensor of shape {expected} "
                f"(sample_shape + base_sample_shape), got {describe(base_samples)}"
            )
        base = base_samples.to(torch.float64).reshape(count, *self.base_sample_shape)
        return self.draws_from_base(base).reshape(*shape, *self.grid.shape)

    def base_samples(
        self, sample_shape: torch.Size | tuple, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Standard normals (*sample_shape, *base_sample_shape) for `rsample`."""
        shape = (*torch.Size(sample_shape), *self.base_sample_shape)
        return torch.randn(shape, generator=generator, dtype=torch.float64)


def check_generator(generator) -> None:
    """Raise unless `generator` is a torch.Generator or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise UsageError(
            f"generator: expected a torch.Generator or None, got {describe(generator)}"
        )


def check_posterior(value, name: str = "prediction") -> Posterior:
    """Raise unless `value` is a probcons Posterior."""
    if not isinstance(value, Posterior):
        raise UsageError(
            f"{name}: expected a probcons Posterior (GaussianPrediction, GaussianMixture), "
            f"got {type(value).__name__}"
        )
    return value


__all__ = ["Posterior", "check_generator", "check_posterior"]
