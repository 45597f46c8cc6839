"""Heat equation u_t = k u_xx with Neumann ends, method of lines + Crank-Nicolson.

Boundary nodes are eliminated with the one-sided stencil of `order` (see `neumann`), so the
discrete condition holds to round-off; interior second differences are central. Error O(h^2 +
dt^2) for order 2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from probcons.solvers._common import check_grid, check_initial, check_times, step_plan
from probcons.solvers.neumann import laplacian_rows, neumann_elimination
from probcons.validation import check_nonnegative

Flux = Callable[[float], torch.Tensor]


def _flux_values(flux: Flux | None, t: float, batch: int) -> torch.Tensor:
    """(batch, 2) boundary derivatives [u_x(x_L), u_x(x_R)] at time t."""
    if flux is None:
        return torch.zeros(batch, 2, dtype=torch.float64)
    return torch.as_tensor(flux(t), dtype=torch.float64).expand(batch, 2)


def solve_heat_neumann(
    u0,
    x,
    times,
    diffusivity: float,
    flux: Flux | None = None,
    order: int = 2,
    max_step: float = 1e-2,
    substeps: int | None = None,
) -> torch.Tensor:
    """Solution at `times`, (batch, m, n_x), from u0 (batch, n_x) at t = 0.

    flux(t) -> broadcastable to (batch, 2): prescribed u_x at the left and right end (None: 0).
    The boundary nodes of u0 are replaced so that u0 satisfies the condition at t = 0.
    """
    x = check_grid(x)
    u0 = check_initial(u0, x.numel())
    times = check_times(times)
    k = check_nonnegative(diffusivity, "diffusivity")
    transfer, source = neumann_elimination(x, order)
    rows = laplacian_rows(x)
    operator = k * rows @ transfer  # (n - 2, n - 2)
    forcing = k * rows @ source  # (n - 2, 2)
    identity = torch.eye(operator.shape[0], dtype=torch.float64)
    batch = u0.shape[0]
    interior = u0[:, 1:-1].clone()
    out = torch.empty(batch, times.numel(), x.numel(), dtype=torch.float64)
    t = 0.0
    cache: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    for index, n_steps, dt in step_plan(times, max_step, substeps):
        if n_steps:
            if dt not in cache:
                left = identity - 0.5 * dt * operator
                cache[dt] = (torch.linalg.inv(left), identity + 0.5 * dt * operator)
            inverse, right = cache[dt]
            g_old = _flux_values(flux, t, batch)
            for _ in range(n_steps):
                g_new = _flux_values(flux, t + dt, batch)
                rhs = interior @ right.T + 0.5 * dt * (g_old + g_new) @ forcing.T
                interior = rhs @ inverse.T
                t, g_old = t + dt, g_new
        g = _flux_values(flux, float(times[index]), batch)
        out[:, index] = interior @ transfer.T + g @ source.T
    return out
