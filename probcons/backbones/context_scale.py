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
"""

from __future__ import annotations

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


__all__ = ["PRIOR_CONTEXTS", "context_scale_factor"]
