"""Argument checks at the public boundary: each error names the argument, the allowed and the given."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from probcons.errors import UsageError


def describe(value: Any) -> str:
    """Short description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def as_float64_tensor(value: Any, name: str) -> torch.Tensor:
    """Convert to a float64 tensor; reject non-numeric input and NaN/inf."""
    if value is None:
        raise UsageError(f"{name}: expected a numeric array, got None")
    try:
        if isinstance(value, torch.Tensor):
            tensor = value
        elif isinstance(value, bool) or (isinstance(value, np.ndarray) and value.dtype == bool):
            tensor = torch.as_tensor(value)
        else:  # straight to float64: Python floats must not pass through float32
            tensor = torch.from_numpy(np.array(value, dtype=np.float64))
    except (TypeError, ValueError, RuntimeError) as error:
        raise UsageError(f"{name}: expected a numeric array, got {describe(value)}") from error
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise UsageError(f"{name}: expected real numbers, got {describe(tensor)}")
    tensor = tensor.to(torch.float64)
    check_finite(tensor, name)
    return tensor


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise if `tensor` holds NaN or infinity.

    A finite sum proves every entry finite (NaN and infinity propagate) in one reduction; only
    an infinite sum (an overflow or a bad entry) takes the elementwise test.
    """
    if (
        tensor.is_floating_point()
        and tensor.numel()
        and math.isfinite(float(tensor.detach().sum()))
    ):
        return
    if not bool(torch.isfinite(tensor.detach()).all()):
        bad = int((~torch.isfinite(tensor.detach())).sum())
        raise UsageError(f"{name}: expected finite values, got {bad} NaN or infinite entries")


def as_float64_vector(value: Any, name: str, min_length: int = 0) -> torch.Tensor:
    """A finite 1-D float64 tensor with at least `min_length` entries."""
    tensor = as_float64_tensor(value, name)
    if tensor.dim() != 1 or tensor.numel() < min_length:
        raise UsageError(
            f"{name}: expected a 1-D array of length >= {min_length}, got {describe(tensor)}"
        )
    return tensor


def check_shape(tensor: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    """Raise unless `tensor.shape == shape`."""
    if tuple(tensor.shape) != tuple(shape):
        raise UsageError(f"{name}: expected shape {tuple(shape)}, got {tuple(tensor.shape)}")


def check_positive_int(value: Any, name: str) -> int:
    """A positive integer (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name}: expected a positive integer, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (compared with ==)."""
    if value not in choices:
        raise UsageError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def check_nonnegative(value: float, name: str) -> float:
    """A finite number >= 0 (bools rejected: True is not a standard deviation)."""
    if isinstance(value, bool):
        raise UsageError(f"{name}: expected a finite number >= 0, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: expected a finite number >= 0, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise UsageError(f"{name}: expected a finite number >= 0, got {value!r}")
    return number


def check_in_interval(
    value: Any,
    name: str,
    low: float,
    high: float,
    include_low: bool = True,
    include_high: bool = True,
) -> float:
    """A real number (bools and NaN rejected) in the interval from low to high, each end
    included or not (an infinite end is never reached)."""
    left = "[" if include_low and math.isfinite(low) else "("
    right = "]" if include_high and math.isfinite(high) else ")"
    message = f"{name}: expected a number in {left}{low:g}, {high:g}{right}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(message)
    number = float(value)
    above = number >= low if include_low else number > low
    below = number <= high if include_high else number < high
    if not (above and below and math.isfinite(number)):
        raise UsageError(message)
    return number
