"""How well a predictive fits a function's own contexts: the per-function variance factor f.

A held-out scale s fixes the decoder's variance on average over the training range, but the
error of a conditional process varies from function to function (larger near the ends of the
range, and beyond it). The contexts are exact values the prediction can be checked against.
With the predictive's mixture mean m_c and total variance v_c at each of the k contexts,

    z_c^2 = (u_c - m_c)^2 / v_c,        f = (nu + sum_c z_c^2) / (nu + k),

the mean squared standardised error at the contexts, shrunk to 1 by nu pseudo-contexts (an
inverse-gamma prior on the scale with mean 1), so a handful of contexts cannot swing it. The
calibrated variance is s0 f^gamma sigma^2 (`probcons.training.calibration` fits s0 and gamma on
held-out functions; gamma = 0 is the single scalar).

A second factor depends on how many contexts k a function has. A network trained with k = 100
is over-confident with k = 1 (its variance was never asked to cover a function it barely sees),
and f cannot tell: with few contexts it is shrunk to 1. `ContextCountScales` is a scale c(k)
fitted at a ladder of counts k_1 < ... < k_J (`probcons.training.conditioned_calibration`) and
interpolated linearly in (log k, log c), constant beyond the ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from probcons.errors import UsageError
from probcons.mixture import mixture_moments
from probcons.validation import check_in_interval, describe

PRIOR_CONTEXTS = 10.0
"""nu: pseudo-contexts with z^2 = 1 added to the k real ones (f -> 1 when k << nu)."""


def context_scale_factor(
    means: torch.Tensor,
    stds: torch.Tensor,
    context_u: torch.Tensor,
    prior_contexts: float = PRIOR_CONTEXTS,
) -> torch.Tensor:
    """f per function from the decoder's draws at the contexts.

    means, stds (S, *batch, k): decoder mean and sd of each latent draw at the k contexts (the
    variance as trained, no scale); context_u (*batch, k) the context values -> f (*batch).
    The mixture's total variance is the mean decoder variance plus the variance of the means.
    """
    if means.dim() < 2 or means.shape != stds.shape or means.shape[1:] != context_u.shape:
        raise UsageError(
            "means, stds, context_u: expected (S, *batch, k), (S, *batch, k) and (*batch, k), "
            f"got {describe(means)}, {describe(stds)} and {describe(context_u)}"
        )
    check_in_interval(prior_contexts, "prior_contexts", 0.0, float("inf"), include_low=False)
    mean, _, total = mixture_moments(means, stds)
    squared = (context_u - mean) ** 2 / total
    return (prior_contexts + squared.sum(-1)) / (prior_contexts + context_u.shape[-1])


@dataclass(frozen=True)
class ContextCountScales:
    """c(k): variance scales `scales` fitted at context counts `counts` (strictly increasing
    positive integers), interpolated linearly in (log k, log c) and constant beyond the ends."""

    counts: tuple[int, ...]
    scales: tuple[float, ...]

    def __post_init__(self) -> None:
        counts, scales = tuple(self.counts), tuple(float(c) for c in self.scales)
        if not counts or len(counts) != len(scales):
            raise UsageError(
                f"counts, scales: expected two non-empty sequences of one length, got "
                f"{len(counts)} counts and {len(scales)} scales"
            )
        if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in counts) or any(
            b <= a for a, b in zip(counts, counts[1:], strict=False)
        ):
            raise UsageError(
                f"counts: expected strictly increasing positive integers, got {list(counts)}"
            )
        if not all(math.isfinite(c) and c > 0 for c in scales):
            raise UsageError(f"scales: expected finite scales > 0, got {list(scales)}")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "scales", scales)

    def __call__(self, k: int) -> float:
        """c(k) for k >= 1 contexts."""
        if k < 1:
            raise UsageError(f"k: expected at least one context, got {k!r}")
        counts, scales = self.counts, self.scales
        if k <= counts[0]:
            return scales[0]
        if k >= counts[-1]:
            return scales[-1]
        upper = next(j for j, count in enumerate(counts) if count >= k)
        lower = upper - 1
        weight = math.log(k / counts[lower]) / math.log(counts[upper] / counts[lower])
        return math.exp((1 - weight) * math.log(scales[lower]) + weight * math.log(scales[upper]))

    def to_dict(self) -> dict:
        return {"counts": list(self.counts), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, stored: dict) -> ContextCountScales:
        return cls(tuple(int(k) for k in stored["counts"]), tuple(stored["scales"]))


__all__ = ["PRIOR_CONTEXTS", "ContextCountScales", "context_scale_factor"]
