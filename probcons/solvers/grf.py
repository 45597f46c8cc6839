"""Gaussian random fields N(0, s (-Laplacian + tau I)^(-p)) on a periodic interval, as Fourier sums.

With period L the eigenpairs are (2 pi k / L)^2 and sqrt(2/L) cos, sqrt(2/L) sin (k >= 1), 1/sqrt(L)
the constant; a draw is sum_k sqrt(lambda_k) xi_k phi_k(x), truncated at `n_modes`.
"""

from __future__ import annotations

import math

import torch

from probcons.errors import UsageError
from probcons.validation import as_float64_vector, check_positive_int


def gaussian_random_field(
    n: int,
    x,
    generator: torch.Generator | None = None,
    period: float = 1.0,
    scale: float = 625.0,
    shift: float = 25.0,
    power: float = 2.0,
    n_modes: int = 64,
) -> torch.Tensor:
    """n draws evaluated at x, (n, len(x)) float64. Defaults: the Burgers data of the FNO paper."""
    check_positive_int(n, "n")
    check_positive_int(n_modes, "n_modes")
    x = as_float64_vector(x, "x", min_length=1)
    if not period > 0:
        raise UsageError(f"period: expected a positive number, got {period!r}")
    if not (scale > 0 and shift > 0 and power > 0):
        raise UsageError(
            f"scale, shift, power: expected positive numbers, got {scale}, {shift}, {power}"
        )
    k = torch.arange(1, n_modes + 1, dtype=torch.float64)
    std = (scale * ((2 * math.pi * k / period) ** 2 + shift) ** (-power)).sqrt()
    std0 = math.sqrt(scale * shift ** (-power))
    phase = 2 * math.pi * k[:, None] * x[None, :] / period  # (K, n_x)
    xi = torch.randn(n, 2 * n_modes + 1, generator=generator, dtype=torch.float64)
    norm = math.sqrt(2.0 / period)
    field = std0 / math.sqrt(period) * xi[:, :1]
    field = field + norm * (xi[:, 1 : n_modes + 1] * std) @ torch.cos(phase)
    return field + norm * (xi[:, n_modes + 1 :] * std) @ torch.sin(phase)
