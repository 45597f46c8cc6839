"""The per-function variance factor f: its formula, its shrinkage, and its input checks."""

import pytest
import torch

from probcons.backbones.context_scale import PRIOR_CONTEXTS, context_scale_factor


def test_factor_is_the_shrunk_mean_squared_standardised_error_at_the_contexts():
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(3, 2, 5, generator=generator, dtype=torch.float64)  # S, B, k
    stds = torch.rand(3, 2, 5, generator=generator, dtype=torch.float64) + 0.1
    values = torch.randn(2, 5, generator=generator, dtype=torch.float64)
    factor = context_scale_factor(means, stds, values)
    for b in range(2):
        mixture_mean = sum(means[s, b] for s in range(3)) / 3
        total = sum(stds[s, b] ** 2 + (means[s, b] - mixture_mean) ** 2 for s in range(3)) / 3
        squared = float(((values[b] - mixture_mean) ** 2 / total).sum())
        expected = (PRIOR_CONTEXTS + squared) / (PRIOR_CONTEXTS + 5)
        assert float(factor[b]) == pytest.approx(expected, rel=1e-12)


def test_exact_fit_and_many_pseudo_contexts_bound_the_factor():
    means = torch.zeros(4, 7, dtype=torch.float64)
    stds = torch.ones(4, 7, dtype=torch.float64)
    # predictions that hit every context: f = nu / (nu + k)
    assert float(context_scale_factor(means, stds, torch.zeros(7))) == pytest.approx(10 / 17)
    # errors of 3 sd: f -> 9 with few pseudo-contexts, -> 1 with many
    far = torch.full((7,), 3.0, dtype=torch.float64)
    assert float(context_scale_factor(means, stds, far, prior_contexts=1e-9)) == pytest.approx(9)
    assert float(context_scale_factor(means, stds, far, prior_contexts=1e9)) == pytest.approx(1)


def test_factor_names_the_bad_argument():
    means = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="means, stds, context_u"):
        context_scale_factor(means, torch.ones(2, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="prior_contexts"):
        context_scale_factor(means, torch.ones(2, 3), torch.zeros(3), prior_contexts=0.0)
