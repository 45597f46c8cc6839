"""Stokes' second problem: u_t = nu u_xx on x >= 0, u(0, t) = U cos(w t), u -> 0 as x -> infinity.

The periodic steady state is u = U exp(-q x) cos(w t - q x) with q = sqrt(w / (2 nu)).
"""

from __future__ import annotations

import torch

from probcons.errors import UsageError
from probcons.validation import as_float64_tensor


def stokes_second_problem(x, t, amplitude, frequency, viscosity) -> torch.Tensor:
    """U exp(-q x) cos(w t - q x), all arguments broadcasting float64 tensors."""
    x = as_float64_tensor(x, "x")
    t = as_float64_tensor(t, "t")
    amplitude = as_float64_tensor(amplitude, "amplitude")
    frequency = as_float64_tensor(frequency, "frequency")
    viscosity = as_float64_tensor(viscosity, "viscosity")
    if bool((frequency <= 0).any()) or bool((viscosity <= 0).any()):
        raise UsageError("frequency, viscosity: expected positive values")
    q = (frequency / (2 * viscosity)).sqrt()
    return amplitude * torch.exp(-q * x) * torch.cos(frequency * t - q * x)
