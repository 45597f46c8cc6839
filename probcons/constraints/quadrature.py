"""Quadrature weights over the x-grid: the integral of u(x) is approximated by sum_i w_i u(x_i).

Rules (n = number of points, dx the spacing of a uniform grid):
    "trapezoid"  w_i = (x_{i+1} - x_{i-1}) / 2, halves at both ends; any increasing grid; O(dx^2).
    "periodic"   w_i = dx: a periodic grid x_i = x_0 + i dx, i < n, the repeated end point
                 x_0 + n dx left out; spectrally accurate for smooth periodic integrands.
    "simpson"    dx/3 (1, 4, 2, 4, ..., 2, 4, 1): uniform grid, n odd; O(dx^4).
On a periodic grid without its end point the trapezoid rule is the wrong choice: it halves the
weight of x_0 and x_{n-1}, though neither is a boundary of the period.
"""

from __future__ import annotations

import torch

from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.validation import as_float64_tensor, describe

QUADRATURE_RULES = ("trapezoid", "periodic", "simpson")
"""The named rules of `quadrature_weights`."""
UNIFORM_TOLERANCE = 1e-9
"""Largest |x_{i+1} - x_i - dx| / dx for which a grid counts as uniform ("periodic", "simpson")."""


def _uniform_step(x: torch.Tensor, rule: str) -> float:
    """The spacing dx of a uniform grid; a UsageError naming `quadrature` when it is not uniform."""
    steps = x[1:] - x[:-1]
    step = float((x[-1] - x[0]) / (x.numel() - 1))
    deviation = float((steps - step).abs().max()) / step
    if deviation > UNIFORM_TOLERANCE:
        raise UsageError(
            f"quadrature: the {rule!r} rule expects a uniform x-grid (spacing varying by at most "
            f"{UNIFORM_TOLERANCE:g} relative), got spacings from {float(steps.min()):.6g} to "
            f"{float(steps.max()):.6g} (coordinates computed in float32 are uniform only to "
            "~1e-6: build them in float64)"
        )
    return step


def quadrature_weights(grid: Grid, quadrature="trapezoid") -> torch.Tensor:
    """(n_x,) weights w of the rule named by `quadrature` on `grid.x` (see the module docstring).

    `quadrature` may also be the weights themselves, (n_x,) or (n_t, n_x); they are checked for
    shape and finiteness and returned as float64.
    """
    if not isinstance(quadrature, str):
        weights = as_float64_tensor(quadrature, "quadrature")
        if tuple(weights.shape) not in ((grid.n_x,), (grid.n_t, grid.n_x)):
            raise UsageError(
                f"quadrature: expected one of {', '.join(repr(r) for r in QUADRATURE_RULES)} or "
                f"weights of shape ({grid.n_x},) or ({grid.n_t}, {grid.n_x}), got "
                f"{describe(weights)}"
            )
        return weights
    if quadrature not in QUADRATURE_RULES:
        raise UsageError(
            f"quadrature: expected one of {', '.join(repr(r) for r in QUADRATURE_RULES)} or an "
            f"array of weights, got {quadrature!r}"
        )
    x = grid.x
    n = x.numel()
    if quadrature == "trapezoid":
        return grid.trapezoid_weights()
    if n < 2:
        raise UsageError(f"quadrature: the {quadrature!r} rule expects at least 2 points, got {n}")
    step = _uniform_step(x, quadrature)
    if quadrature == "periodic":
        return torch.full((n,), step, dtype=torch.float64)
    if n % 2 == 0:
        raise UsageError(
            f"quadrature: the 'simpson' rule expects an odd number of x points, got {n}"
        )
    weights = torch.full((n,), 2.0, dtype=torch.float64)
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    return weights * (step / 3)


__all__ = ["QUADRATURE_RULES", "UNIFORM_TOLERANCE", "quadrature_weights"]
