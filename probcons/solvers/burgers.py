"""Viscous Burgers u_t + (u^2 / 2)_x = nu u_xx: Dirichlet (finite differences) and periodic (spectral).

Dirichlet: central differences in conservative form, fixed end values, classical RK4; O(h^2).
Periodic: Fourier pseudo-spectral with 2/3 dealiasing and integrating-factor RK4; spectral in
space, O(dt^4) in time.
"""

from __future__ import annotations

import math

import torch

from probcons.errors import UsageError
from probcons.solvers._common import check_grid, check_initial, check_times, step_plan
from probcons.validation import check_nonnegative

DIFFUSION_SAFETY = 0.4  # dt nu / h^2 (RK4 is stable to about 0.69)
ADVECTION_SAFETY = 0.5  # dt max|u| / h


def _burgers_rhs(u: torch.Tensor, h: float, nu: float) -> torch.Tensor:
    """Interior tendency, (batch, n_x) -> (batch, n_x) with zeros at the two (fixed) ends."""
    rhs = torch.zeros_like(u)
    flux = 0.5 * u**2
    rhs[:, 1:-1] = (
        -(flux[:, 2:] - flux[:, :-2]) / (2 * h)
        + nu * (u[:, 2:] - 2 * u[:, 1:-1] + u[:, :-2]) / h**2
    )
    return rhs


def solve_burgers_dirichlet(u0, x, times, viscosity: float = 0.1) -> torch.Tensor:
    """Solution at `times`, (batch, m, n_x), with u(x_L) and u(x_R) held at their initial values.

    x must be uniform. The step satisfies dt nu / h^2 <= 0.4 and dt max|u0| / h <= 0.5.
    """
    x = check_grid(x)
    u0 = check_initial(u0, x.numel())
    times = check_times(times)
    nu = check_nonnegative(viscosity, "viscosity")
    h = float(x[1] - x[0])
    if not torch.allclose(x[1:] - x[:-1], torch.full_like(x[1:], h), rtol=1e-9, atol=0):
        raise UsageError("x: expected uniform nodes")
    speed = float(u0.abs().max()) + 1e-12
    max_step = min(DIFFUSION_SAFETY * h**2 / max(nu, 1e-300), ADVECTION_SAFETY * h / speed)
    u = u0.clone()
    out = torch.empty(u0.shape[0], times.numel(), x.numel(), dtype=torch.float64)
    for index, n_steps, dt in step_plan(times, max_step):
        for _ in range(n_steps):
            k1 = _burgers_rhs(u, h, nu)
            k2 = _burgers_rhs(u + 0.5 * dt * k1, h, nu)
            k3 = _burgers_rhs(u + 0.5 * dt * k2, h, nu)
            k4 = _burgers_rhs(u + dt * k3, h, nu)
            u = u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[:, index] = u
    return out


def solve_burgers_periodic(
    u0, times, viscosity: float = 0.1, period: float = 1.0, max_step: float | None = None
) -> torch.Tensor:
    """Solution at `times`, (batch, m, M), from u0 (batch, M) on the periodic nodes k L / M.

    Integrating factor exp(-nu kappa^2 t) for diffusion, RK4 for the dealiased advection term.
    """
    u0 = check_initial(u0, torch.as_tensor(u0).shape[-1])
    times = check_times(times)
    nu = check_nonnegative(viscosity, "viscosity")
    m = u0.shape[1]
    if m < 4 or m % 2:
        raise UsageError(f"u0: expected an even number of nodes >= 4, got {m}")
    kappa = 2 * math.pi / period * torch.arange(m // 2 + 1, dtype=torch.float64)
    dealias = (torch.arange(m // 2 + 1) <= m // 3).to(torch.float64)
    if max_step is None:
        speed = float(u0.abs().max()) + 1e-12
        max_step = ADVECTION_SAFETY * period / m / speed

    def advection(spectrum: torch.Tensor) -> torch.Tensor:
        u = torch.fft.irfft(spectrum * dealias, n=m)
        return -0.5j * kappa * torch.fft.rfft(u**2) * dealias

    spectrum = torch.fft.rfft(u0)
    out = torch.empty(u0.shape[0], times.numel(), m, dtype=torch.float64)
    for index, n_steps, dt in step_plan(times, max_step):
        if n_steps:
            half = torch.exp(-nu * kappa**2 * dt / 2)
            full = half**2
        for _ in range(n_steps):
            k1 = advection(spectrum)
            k2 = advection(half * (spectrum + 0.5 * dt * k1))
            k3 = advection(half * spectrum + 0.5 * dt * k2)
            k4 = advection(full * spectrum + dt * half * k3)
            spectrum = full * spectrum + dt / 6 * (full * k1 + 2 * half * (k2 + k3) + k4)
        out[:, index] = torch.fft.irfft(spectrum, n=m)
    return out
