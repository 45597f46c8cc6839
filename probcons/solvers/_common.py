"""Shared argument checks and time stepping plans for the solvers."""

from __future__ import annotations

import math

import torch

from probcons.errors import UsageError
from probcons.validation import as_float64_tensor, as_float64_vector, check_positive_int


def check_grid(x, name: str = "x", min_length: int = 3) -> torch.Tensor:
    """Increasing float64 nodes."""
    x = as_float64_vector(x, name, min_length=min_length)
    if not bool((x[1:] > x[:-1]).all()):
        raise UsageError(f"{name}: expected strictly increasing nodes")
    return x


def check_initial(u0, n_x: int, name: str = "u0") -> torch.Tensor:
    """(batch, n_x) float64; a single (n_x,) vector becomes a batch of one."""
    u0 = as_float64_tensor(u0, name)
    if u0.dim() == 1:
        u0 = u0[None]
    if u0.dim() != 2 or u0.shape[1] != n_x:
        raise UsageError(f"{name}: expected shape (batch, {n_x}), got {tuple(u0.shape)}")
    return u0


def check_times(times, name: str = "times") -> torch.Tensor:
    """Output times, non-negative and non-decreasing."""
    times = as_float64_vector(times, name, min_length=1)
    if bool((times < 0).any()) or bool((times[1:] < times[:-1]).any()):
        raise UsageError(f"{name}: expected non-negative, non-decreasing times, got {times}")
    return times


def step_plan(times: torch.Tensor, max_step: float, substeps: int | None = None):
    """Yield (index, n_steps, dt) to march from the previous output time to times[index]."""
    if substeps is not None:
        check_positive_int(substeps, "substeps")
    previous = 0.0
    for index, time in enumerate(times.tolist()):
        span = time - previous
        n = substeps if substeps is not None else max(1, math.ceil(span / max_step - 1e-9))
        yield index, (n if span > 0 else 0), (span / n if span > 0 else 0.0)
        previous = time
