"""Wave equation u_tt = c^2 u_xx with Neumann ends, zero initial velocity; leapfrog in time.

Boundary nodes are eliminated with the one-sided stencil (see `neumann`): the discrete
condition holds to round-off. Second order in h and dt; stable for c dt / h below about 0.8.
"""

from __future__ import annotations

import torch

from probcons.errors import UsageError
from probcons.solvers._common import check_grid, check_initial, check_times, step_plan
from probcons.solvers.neumann import laplacian_rows, neumann_elimination
from probcons.validation import check_nonnegative

TIME_TOLERANCE = 1e-9


def solve_wave_neumann(
    u0,
    x,
    times,
    speed: float,
    order: int = 2,
    courant: float = 0.5,
) -> torch.Tensor:
    """Solution at `times`, (batch, m, n_x), of u_tt = c^2 u_xx, u_x = 0 at both ends, u_t(0) = 0.

    The time step is at most courant * h / c and divides each gap between output times.
    """
    x = check_grid(x)
    u0 = check_initial(u0, x.numel())
    times = check_times(times)
    c = check_nonnegative(speed, "speed")
    if not 0 < courant <= 0.8:
        raise UsageError(f"courant: expected a number in (0, 0.8], got {courant!r}")
    transfer, _ = neumann_elimination(x, order)
    operator = c**2 * laplacian_rows(x) @ transfer
    h = float((x[1:] - x[:-1]).min())
    max_step = courant * h / max(c, 1e-300)
    current = u0[:, 1:-1].clone()
    previous = None
    out = torch.empty(u0.shape[0], times.numel(), x.numel(), dtype=torch.float64)
    # Leapfrog needs a constant step: use the finest one the plan asks for on every gap.
    plan = list(step_plan(times, max_step))
    dt = min((step for _, n, step in plan if n), default=0.0)
    t = 0.0
    for index, _, _ in plan:
        target = float(times[index])
        n_steps = round((target - t) / dt) if dt > 0 else 0
        if abs(n_steps * dt - (target - t)) > TIME_TOLERANCE * max(1.0, target):
            raise UsageError("times: expected gaps that are whole multiples of the smallest step")
        for _ in range(n_steps):
            acceleration = current @ operator.T
            if previous is None:  # u(dt) = u0 + dt^2/2 u_tt(0) + O(dt^4) since u_t(0) = 0
                nxt = current + 0.5 * dt**2 * acceleration
            else:
                nxt = 2 * current - previous + dt**2 * acceleration
            previous, current = current, nxt
        t += n_steps * dt
        out[:, index] = current @ transfer.T
    return out
