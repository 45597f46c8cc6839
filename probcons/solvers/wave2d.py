"""2-D wave equation u_tt = c^2 (u_xx + u_yy) on [0, 1]^2 with Neumann walls (u_n = 0), u_t(0) = 0.

Two solutions on the node grid x_i = y_i = i / (n - 1), fields indexed [..., ix, iy]:
- `solve_wave2d_neumann`: second-order leapfrog; the wall nodes are eliminated along each axis with
  the one-sided stencil of `neumann_elimination` (u = T U T^T, U the interior block), so the discrete
  Neumann condition holds to round-off on all four walls (corners included) at every step;
- `wave2d_cosine_series`: the exact solution for initial data sum_kl a_kl cos(k pi x) cos(l pi y),
  u = sum_kl a_kl cos(c pi sqrt(k^2 + l^2) t) cos(k pi x) cos(l pi y) (the continuum condition).
"""

from __future__ import annotations

import math

import torch

from probcons.errors import UsageError
from probcons.solvers.neumann import laplacian_rows, neumann_elimination
from probcons.validation import as_float64_tensor, check_nonnegative, check_positive_int

TIME_TOLERANCE = 1e-9
MAX_COURANT = 0.55  # c dt / h; leapfrog on the 2-D five-point Laplacian is stable below 1 / sqrt(2)


def _check_field(u0, name: str = "u0") -> torch.Tensor:
    """(batch, n, n) float64 on a square node grid; a single (n, n) field becomes a batch of one."""
    u0 = as_float64_tensor(u0, name)
    if u0.dim() == 2:
        u0 = u0[None]
    if u0.dim() != 3 or u0.shape[1] != u0.shape[2] or u0.shape[1] < 6:
        raise UsageError(f"{name}: expected shape (batch, n, n) with n >= 6, got {tuple(u0.shape)}")
    return u0


def _check_times(times) -> torch.Tensor:
    times = as_float64_tensor(times, "times").reshape(-1)
    if times.numel() == 0 or bool((times < 0).any()) or bool((times[1:] < times[:-1]).any()):
        raise UsageError(f"times: expected non-negative, non-decreasing times, got {times}")
    return times


def solve_wave2d_neumann(
    u0,
    times,
    speed: float = 1.0,
    courant: float = 0.4,
    order: int = 2,
    with_velocity: bool = False,
) -> torch.Tensor:
    """Leapfrog solution at `times`: (batch, m, n, n), or (batch, m, 2, n, n) with (u, u_t).

    u0 (batch, n, n) [ix, iy] on x_i = i / (n - 1); its interior values are used and its wall values
    rebuilt from the Neumann stencils. dt = t_gap / ceil(t_gap c / (courant h)), one constant step
    for all gaps (they must be whole multiples of it). u_t is the centred difference
    (u^{k+1} - u^{k-1}) / (2 dt), exactly 0 at t = 0.
    """
    u0 = _check_field(u0)
    times = _check_times(times)
    c = check_nonnegative(speed, "speed")
    if not 0 < courant <= MAX_COURANT:
        raise UsageError(f"courant: expected a number in (0, {MAX_COURANT}], got {courant!r}")
    check_positive_int(order, "order")
    n = u0.shape[1]
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    transfer, _ = neumann_elimination(x, order)  # (n, n - 2)
    operator = c**2 * laplacian_rows(x) @ transfer  # (n - 2, n - 2): u_xx at interior nodes

    def acceleration(interior: torch.Tensor) -> torch.Tensor:
        return operator @ interior + interior @ operator.T

    def full(interior: torch.Tensor) -> torch.Tensor:
        return transfer @ interior @ transfer.T

    h = 1.0 / (n - 1)
    max_step = courant * h / max(c, 1e-300)
    gaps = torch.diff(times, prepend=times.new_zeros(1))
    smallest = float(gaps[gaps > 0].min()) if bool((gaps > 0).any()) else 0.0
    dt = smallest / max(1, math.ceil(smallest / max_step - 1e-9)) if smallest > 0 else 0.0
    current = u0[:, 1:-1, 1:-1].clone()
    previous = current + 0.5 * dt**2 * acceleration(current)  # u(-dt) = u(dt) since u_t(0) = 0
    shape = (u0.shape[0], times.numel()) + ((2,) if with_velocity else ()) + (n, n)
    out = torch.empty(shape, dtype=torch.float64)
    t = 0.0
    for index, target in enumerate(times.tolist()):
        n_steps = round((target - t) / dt) if dt > 0 else 0
        if abs(n_steps * dt - (target - t)) > TIME_TOLERANCE * max(1.0, target):
            raise UsageError("times: expected gaps that are whole multiples of the smallest step")
        for _ in range(n_steps):
            previous, current = current, 2 * current - previous + dt**2 * acceleration(current)
        t += n_steps * dt
        if with_velocity:
            following = 2 * current - previous + dt**2 * acceleration(current)
            out[:, index, 0] = full(current)
            if t > 0:
                out[:, index, 1] = full((following - previous) / (2 * dt))
            else:  # the initial velocity, zero by assumption
                out[:, index, 1] = 0.0
        else:
            out[:, index] = full(current)
    return out


def wave2d_cosine_series(coefficients, n: int, times, speed: float = 1.0) -> torch.Tensor:
    """Exact (batch, m, n, n) for u0 = sum_kl a_kl cos(k pi x) cos(l pi y), a (batch, K, L)."""
    a = as_float64_tensor(coefficients, "coefficients")
    if a.dim() != 3:
        raise UsageError(f"coefficients: expected shape (batch, K, L), got {tuple(a.shape)}")
    check_positive_int(n, "n")
    times = _check_times(times)
    c = check_nonnegative(speed, "speed")
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    k = torch.arange(a.shape[1], dtype=torch.float64)
    ell = torch.arange(a.shape[2], dtype=torch.float64)
    frequency = c * math.pi * (k[:, None] ** 2 + ell[None, :] ** 2).sqrt()  # (K, L)
    phase = torch.cos(frequency[None] * times[:, None, None])  # (m, K, L)
    cos_x = torch.cos(math.pi * k[:, None] * x[None])  # (K, n)
    cos_y = torch.cos(math.pi * ell[:, None] * x[None])  # (L, n)
    return torch.einsum("bkl,tkl,ki,lj->btij", a, phase, cos_x, cos_y)


def wave2d_random_coefficients(
    n_samples: int,
    generator: torch.Generator | None = None,
    n_modes: int = 8,
    decay: float = 3.0,
) -> torch.Tensor:
    """a (n_samples, n_modes, n_modes): a_kl ~ N(0, s (1 + k^2 + l^2)^-decay), a_00 = 0.

    s normalises the expected mean square of the field over the square to 1. Sample i is the same
    for every n_samples > i.
    """
    check_positive_int(n_samples, "n_samples")
    check_positive_int(n_modes, "n_modes")
    if not decay > 0:
        raise UsageError(f"decay: expected a positive number, got {decay!r}")
    k = torch.arange(n_modes, dtype=torch.float64)
    variance = (1 + k[:, None] ** 2 + k[None, :] ** 2) ** (-decay)
    variance[0, 0] = 0.0
    # mean of cos^2(k pi x) over [0, 1]: 1 for k = 0, 1/2 otherwise
    weight = torch.where(k == 0, 1.0, 0.5).to(torch.float64)
    variance = variance / float((variance * weight[:, None] * weight[None, :]).sum())
    # One draw after the other, so that sample i does not depend on n_samples.
    xi = torch.stack(
        [
            torch.randn(n_modes, n_modes, generator=generator, dtype=torch.float64)
            for _ in range(n_samples)
        ]
    )
    return xi * variance.sqrt()


def wave2d_trajectories(
    n_samples: int,
    n_steps: int = 25,
    t_end: float = 1.0,
    n_out: int = 50,
    c: float = 1.0,
    seed: int = 0,
    method: str = "finite-difference",
    with_velocity: bool = False,
    n_modes: int = 8,
    decay: float = 3.0,
) -> torch.Tensor:
    """(n_samples, n_steps + 1, n_out, n_out) float64 [..., ix, iy] at t_k = k t_end / n_steps.

    With with_velocity, (n_samples, n_steps + 1, 2, n_out, n_out), channels (u, u_t). Initial data:
    the random cosine series of `wave2d_random_coefficients`, zero initial velocity. method
    "finite-difference": leapfrog on the output grid (discrete one-sided Neumann condition exact);
    "spectral": the exact cosine series (continuum condition; u_t from its series).
    """
    check_positive_int(n_samples, "n_samples")
    check_positive_int(n_steps, "n_steps")
    check_positive_int(n_out, "n_out")
    if method not in ("finite-difference", "spectral"):
        raise UsageError(f"method: expected 'finite-difference' or 'spectral', got {method!r}")
    if isinstance(t_end, bool) or not isinstance(t_end, (int, float)) or not 0 < t_end < math.inf:
        raise UsageError(f"t_end: expected a positive finite number, got {t_end!r}")
    generator = torch.Generator().manual_seed(seed)
    a = wave2d_random_coefficients(n_samples, generator, n_modes, decay)
    times = torch.linspace(0, t_end, n_steps + 1, dtype=torch.float64)
    if method == "finite-difference":
        u0 = wave2d_cosine_series(a, n_out, times[:1], c)[:, 0]
        return solve_wave2d_neumann(u0, times, c, with_velocity=with_velocity)
    u = wave2d_cosine_series(a, n_out, times, c)
    if not with_velocity:
        return u
    k = torch.arange(n_modes, dtype=torch.float64)
    frequency = c * math.pi * (k[:, None] ** 2 + k[None, :] ** 2).sqrt()
    # u_t = sum_kl -w_kl sin(w_kl t) a_kl cos(k pi x) cos(l pi y)
    x = torch.linspace(0, 1, n_out, dtype=torch.float64)
    cosines = torch.cos(math.pi * k[:, None] * x[None])
    rate = -frequency[None] * torch.sin(frequency[None] * times[:, None, None])  # (m, K, L)
    u_t = torch.einsum("bkl,tkl,ki,lj->btij", a, rate, cosines, cosines)
    return torch.stack([u, u_t], dim=2)
