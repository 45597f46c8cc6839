"""Lid-driven cavity: incompressible Navier-Stokes on [0, 1]^2 in vorticity-streamfunction form.

    omega_t + u omega_x + v omega_y = (1 / Re) (omega_xx + omega_yy),   -(psi_xx + psi_yy) = omega,
    u = psi_y,  v = -psi_x,  u = v = 0 on the walls except the lid y = 1, where u = U (= 1).

Node grid x_i = i h, y_j = j h (h = 1 / resolution), fields stored [..., ix, iy] (x first).
Second-order central differences; psi = 0 on the walls; the Poisson problem is solved exactly for
the five-point Laplacian by a type-I sine transform (scipy.fft.dstn); the wall vorticity comes from
Thom's formula omega_wall = -2 psi_1 / h^2 - 2 U_wall / h (psi_1: the first interior row); time
stepping is the three-stage strong-stability-preserving Runge-Kutta scheme (SSP-RK3), step set by
the diffusive and convective stability limits. The nodal velocity (u, v) = (D_y psi, -D_x psi) has a
central-difference divergence D_x u + D_y v that vanishes to round-off at every interior node.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.fft
import torch
from scipy.interpolate import CubicSpline

from probcons.errors import UsageError
from probcons.validation import check_positive_int

LID_VELOCITY = 1.0
# Time step limits: SSP-RK3 reaches 2.51 on the negative real axis (dt <= 0.31 Re h^2 for the
# five-point Laplacian) and sqrt(3) on the imaginary axis (central convection, dt <= 1.7 h / speed).
DIFFUSION_SAFETY = 0.2  # dt <= DIFFUSION_SAFETY Re h^2
CONVECTION_SAFETY = 0.8  # dt <= CONVECTION_SAFETY h / max(|u| + |v|)
STEADY_TOLERANCE = 1e-8
STEADY_MAX_TIME = 200.0

# Ghia, Ghia & Shin (1982), Re = 100, Tables I and II: positions as node indices k of their 129 x 129
# grid (position k / 128); u on the vertical centre line x = 1/2, v on the horizontal one y = 1/2.
GHIA_RE100_U_NODES = (128, 125, 124, 123, 122, 109, 94, 79, 64, 58, 36, 22, 13, 9, 8, 7, 0)
GHIA_RE100_U = (1.0, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581)
GHIA_RE100_U += (-0.21090, -0.15662, -0.10150, -0.06434, -0.04775, -0.04192, -0.03717, 0.0)
GHIA_RE100_V_NODES = (128, 124, 123, 122, 121, 116, 110, 103, 64, 30, 29, 20, 12, 10, 9, 8, 0)
GHIA_RE100_V = (0.0, -0.05906, -0.07391, -0.08864, -0.10313, -0.16914, -0.22445, -0.24533, 0.05454)
GHIA_RE100_V += (0.17527, 0.17507, 0.16077, 0.12317, 0.10890, 0.10091, 0.09233, 0.0)


class CavityField(NamedTuple):
    """A cavity flow on the node grid: nodes (n + 1,), fields (..., n + 1, n + 1) indexed [ix, iy]."""

    nodes: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    streamfunction: torch.Tensor
    vorticity: torch.Tensor
    time: float


def _check_number(value, name: str, positive: bool = True) -> float:
    """A finite real number, > 0 (positive) or >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        number = math.nan
    if (
        isinstance(value, bool)
        or not math.isfinite(number)
        or not (number > 0 if positive else number >= 0)
    ):
        allowed = "a positive" if positive else "a non-negative"
        raise UsageError(f"{name}: expected {allowed} finite number, got {value!r}")
    return number


def _check_resolution(resolution, minimum: int = 4) -> int:
    resolution = check_positive_int(resolution, "resolution")
    if resolution < minimum:
        raise UsageError(f"resolution: expected at least {minimum} cells, got {resolution}")
    return resolution


class _VorticityStreamfunction:
    """Discrete operators of the scheme on an (n + 1) x (n + 1) node grid, batched over axis 0."""

    def __init__(self, resolution: int, reynolds: float, lid_velocity: float = LID_VELOCITY):
        self.n = resolution
        self.h = 1.0 / resolution
        self.reynolds = reynolds
        self.lid = lid_velocity
        k = np.arange(1, resolution)
        # Eigenvalues of the negative five-point Laplacian on the sine modes sin(k pi x_i).
        one_d = (4.0 / self.h**2) * np.sin(0.5 * np.pi * k / resolution) ** 2
        self.eigenvalues = one_d[:, None] + one_d[None, :]

    def streamfunction(self, omega: np.ndarray) -> np.ndarray:
        """psi (batch, n + 1, n + 1), zero on the walls, with -Laplace_h psi = omega inside."""
        coefficients = scipy.fft.dstn(omega[:, 1:-1, 1:-1], type=1, axes=(1, 2), workers=1)
        interior = scipy.fft.idstn(coefficients / self.eigenvalues, type=1, axes=(1, 2), workers=1)
        psi = np.zeros_like(omega)
        psi[:, 1:-1, 1:-1] = interior
        return psi

    def set_wall_vorticity(self, omega: np.ndarray, psi: np.ndarray) -> None:
        """Thom's formula on the four walls, in place (corners: average of the two walls)."""
        h2 = self.h**2
        omega[:, 0, :] = -2.0 * psi[:, 1, :] / h2  # left, x = 0
        omega[:, -1, :] = -2.0 * psi[:, -2, :] / h2  # right, x = 1
        omega[:, :, 0] = -2.0 * psi[:, :, 1] / h2  # bottom, y = 0
        omega[:, :, -1] = -2.0 * psi[:, :, -2] / h2 - 2.0 * self.lid / self.h  # lid, y = 1
        for ix in (0, -1):
            omega[:, ix, 0] = 0.5 * (omega[:, ix, 1] + omega[:, 1 if ix == 0 else -2, 0])
            omega[:, ix, -1] = 0.5 * (omega[:, ix, -2] + omega[:, 1 if ix == 0 else -2, -1])

    def velocity(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) = (D_y psi, -D_x psi) inside; the Dirichlet data on the walls (lid u = U)."""
        u = np.zeros_like(psi)
        v = np.zeros_like(psi)
        u[:, 1:-1, 1:-1] = (psi[:, 1:-1, 2:] - psi[:, 1:-1, :-2]) / (2 * self.h)
        v[:, 1:-1, 1:-1] = -(psi[:, 2:, 1:-1] - psi[:, :-2, 1:-1]) / (2 * self.h)
        u[:, :, -1] = self.lid
        return u, v

    def state(self, omega_interior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(omega with its wall values, psi) from the interior vorticity."""
        omega = np.zeros((omega_interior.shape[0], self.n + 1, self.n + 1))
        omega[:, 1:-1, 1:-1] = omega_interior
        psi = self.streamfunction(omega)
        self.set_wall_vorticity(omega, psi)
        return omega, psi

    def tendency(self, omega_interior: np.ndarray) -> np.ndarray:
        """d omega / dt at the interior nodes: -(u omega_x + v omega_y) + Laplace_h omega / Re."""
        omega, psi = self.state(omega_interior)
        h = self.h
        u = (psi[:, 1:-1, 2:] - psi[:, 1:-1, :-2]) / (2 * h)
        v = -(psi[:, 2:, 1:-1] - psi[:, :-2, 1:-1]) / (2 * h)
        omega_x = (omega[:, 2:, 1:-1] - omega[:, :-2, 1:-1]) / (2 * h)
        omega_y = (omega[:, 1:-1, 2:] - omega[:, 1:-1, :-2]) / (2 * h)
        laplacian = (
            omega[:, 2:, 1:-1]
            + omega[:, :-2, 1:-1]
            + omega[:, 1:-1, 2:]
            + omega[:, 1:-1, :-2]
            - 4 * omega[:, 1:-1, 1:-1]
        ) / h**2
        return laplacian / self.reynolds - u * omega_x - v * omega_y

    def stable_step(self, omega_interior: np.ndarray) -> float:
        """The largest step allowed by the diffusive and convective limits for the current flow."""
        _, psi = self.state(omega_interior)
        u, v = self.velocity(psi)
        speed = max(float(np.max(np.abs(u) + np.abs(v))), abs(self.lid), 1e-12)
        return min(DIFFUSION_SAFETY * self.reynolds * self.h**2, CONVECTION_SAFETY * self.h / speed)

    def rk3_step(self, omega_interior: np.ndarray, dt: float) -> np.ndarray:
        """One SSP-RK3 step (Shu-Osher form)."""
        first = omega_interior + dt * self.tendency(omega_interior)
        second = 0.75 * omega_interior + 0.25 * (first + dt * self.tendency(first))
        return omega_interior / 3 + (2 / 3) * (second + dt * self.tendency(second))

    def interior_vorticity(self, psi: np.ndarray) -> np.ndarray:
        """-Laplace_h psi at the interior nodes."""
        h2 = self.h**2
        return (
            -(
                psi[:, 2:, 1:-1]
                + psi[:, :-2, 1:-1]
                + psi[:, 1:-1, 2:]
                + psi[:, 1:-1, :-2]
                - 4 * psi[:, 1:-1, 1:-1]
            )
            / h2
        )


def _initial_interior(scheme: _VorticityStreamfunction, initial) -> np.ndarray:
    """Interior vorticity (batch, n - 1, n - 1) from a streamfunction (batch, n + 1, n + 1); None: rest."""
    n = scheme.n
    if initial is None:
        return np.zeros((1, n - 1, n - 1))
    psi = torch.as_tensor(initial, dtype=torch.float64)
    if psi.dim() == 2:
        psi = psi[None]
    if psi.dim() != 3 or tuple(psi.shape[1:]) != (n + 1, n + 1):
        raise UsageError(
            f"initial: expected a streamfunction of shape (batch, {n + 1}, {n + 1}), "
            f"got {tuple(psi.shape)}"
        )
    psi = psi.numpy().copy()
    if not np.isfinite(psi).all():
        raise UsageError("initial: expected finite values")
    walls = np.concatenate([psi[:, 0], psi[:, -1], psi[:, :, 0], psi[:, :, -1]], axis=1)
    if np.abs(walls).max() > 1e-12 * max(1.0, np.abs(psi).max()):
        raise UsageError("initial: expected a streamfunction that vanishes on the walls")
    return scheme.interior_vorticity(psi)


def solve_cavity(
    reynolds: float,
    t_end: float,
    resolution: int,
    initial=None,
    n_saves: int = 26,
    lid_velocity: float = LID_VELOCITY,
) -> torch.Tensor:
    """Velocity (batch, n_saves, 2, n + 1, n + 1) [..., (u, v), ix, iy] at t_k = k t_end / (n_saves - 1).

    `initial`: streamfunction (batch, n + 1, n + 1) or (n + 1, n + 1), zero on the walls (its
    normal derivative should vanish there too for a flow compatible with no slip), or None: rest.
    The lid moves from t = 0 on; the saved walls hold the Dirichlet data exactly. n = resolution.
    """
    reynolds = _check_number(reynolds, "reynolds")
    resolution = _check_resolution(resolution)
    check_positive_int(n_saves, "n_saves")
    t_end = _check_number(t_end, "t_end", positive=False)
    if n_saves == 1 and t_end != 0:
        raise UsageError(f"n_saves: expected at least 2 saves for t_end > 0, got {n_saves}")
    scheme = _VorticityStreamfunction(resolution, reynolds, float(lid_velocity))
    omega = _initial_interior(scheme, initial)
    saves = np.empty((omega.shape[0], n_saves, 2, resolution + 1, resolution + 1))
    interval = t_end / (n_saves - 1) if n_saves > 1 else 0.0
    for k in range(n_saves):
        if k > 0 and interval > 0:
            n_sub = math.ceil(interval / scheme.stable_step(omega) - 1e-9)
            for _ in range(n_sub):
                omega = scheme.rk3_step(omega, interval / n_sub)
        _, psi = scheme.state(omega)
        saves[:, k, 0], saves[:, k, 1] = scheme.velocity(psi)
    return torch.from_numpy(saves)


def steady_cavity(
    reynolds: float,
    resolution: int,
    tolerance: float = STEADY_TOLERANCE,
    max_time: float = STEADY_MAX_TIME,
    lid_velocity: float = LID_VELOCITY,
) -> CavityField:
    """The steady flow, marched from rest until max |d omega / dt| <= tolerance * max |omega|.

    Raises RuntimeError when the residual is still above tolerance at `max_time`.
    """
    reynolds = _check_number(reynolds, "reynolds")
    resolution = _check_resolution(resolution)
    tolerance = _check_number(tolerance, "tolerance")
    max_time = _check_number(max_time, "max_time")
    scheme = _VorticityStreamfunction(resolution, reynolds, float(lid_velocity))
    omega_interior = np.zeros((1, resolution - 1, resolution - 1))
    time, check_every = 0.0, 50
    dt = scheme.stable_step(omega_interior)
    step = 0
    while True:
        omega_interior = scheme.rk3_step(omega_interior, dt)
        time += dt
        step += 1
        if step % check_every == 0:
            omega, psi = scheme.state(omega_interior)
            residual = np.abs(scheme.tendency(omega_interior)).max()
            if residual <= tolerance * np.abs(omega).max():
                break
            if time >= max_time:
                raise RuntimeError(
                    f"steady_cavity: residual {residual:.3e} above tolerance at t = {time:.1f}"
                )
            dt = scheme.stable_step(omega_interior)
    u, v = scheme.velocity(psi)
    nodes = torch.linspace(0, 1, resolution + 1, dtype=torch.float64)
    return CavityField(
        nodes,
        torch.from_numpy(u[0]),
        torch.from_numpy(v[0]),
        torch.from_numpy(psi[0]),
        torch.from_numpy(omega[0]),
        time,
    )


def random_cavity_streamfunction(
    n_samples: int,
    resolution: int,
    generator: np.random.Generator,
    n_modes: int = 4,
    decay: float = 2.0,
    speed_range: tuple[float, float] = (0.25, 1.0),
) -> np.ndarray:
    """Smooth random psi (n_samples, n + 1, n + 1) vanishing with its gradient on the walls.

    psi = sin(pi x) sin(pi y) sum_{k, l <= n_modes} a_kl sin(k pi x) sin(l pi y), a_kl ~ N(0, (k^2
    + l^2)^-decay), scaled so that max |(u, v)| (central differences) is uniform in `speed_range`;
    sample i is the same for every n_samples > i.
    """
    check_positive_int(n_samples, "n_samples")
    resolution = _check_resolution(resolution)
    check_positive_int(n_modes, "n_modes")
    low, high = speed_range
    if not 0 < low <= high:
        raise UsageError(f"speed_range: expected 0 < low <= high, got {speed_range!r}")
    h = 1.0 / resolution
    s = np.linspace(0.0, 1.0, resolution + 1)
    k = np.arange(1, n_modes + 1)
    basis = np.sin(np.pi * s)[None, :] * np.sin(np.pi * k[:, None] * s[None, :])  # (K, n + 1)
    std = (k[:, None] ** 2 + k[None, :] ** 2) ** (-decay / 2)
    # One draw after the other, so that sample i does not depend on n_samples.
    draws = [
        (generator.standard_normal((n_modes, n_modes)), generator.uniform(low, high))
        for _ in range(n_samples)
    ]
    coefficients = np.stack([normal for normal, _ in draws]) * std
    target = np.array([speed for _, speed in draws])
    psi = np.einsum("bkl,kx,ly->bxy", coefficients, basis, basis)
    u = (psi[:, 1:-1, 2:] - psi[:, 1:-1, :-2]) / (2 * h)
    v = (psi[:, 2:, 1:-1] - psi[:, :-2, 1:-1]) / (2 * h)
    speed = np.sqrt(u**2 + v**2).max(axis=(1, 2))
    return psi * (target / speed)[:, None, None]


def _resampling_matrix(resolution: int, n_out: int) -> np.ndarray:
    """(n_out, n + 1) map from solver nodes to output nodes: a slice when nested, else cubic spline."""
    if resolution % (n_out - 1) == 0:
        matrix = np.zeros((n_out, resolution + 1))
        matrix[np.arange(n_out), np.arange(n_out) * (resolution // (n_out - 1))] = 1.0
        return matrix
    spline = CubicSpline(np.linspace(0, 1, resolution + 1), np.eye(resolution + 1), axis=0)
    return spline(np.linspace(0, 1, n_out))


def set_cavity_walls(velocity: torch.Tensor, lid_velocity: float = LID_VELOCITY) -> torch.Tensor:
    """velocity (..., 2, n_x, n_y) with the no-slip data written on the walls, in place; returned."""
    velocity[..., :, 0, :] = 0.0
    velocity[..., :, -1, :] = 0.0
    velocity[..., :, :, 0] = 0.0
    velocity[..., 0, :, -1] = lid_velocity
    velocity[..., 1, :, -1] = 0.0
    return velocity


def cavity_trajectories(
    n_samples: int,
    reynolds: float = 100.0,
    n_steps: int = 25,
    t_end: float = 2.0,
    n_out: int = 50,
    resolution: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Velocity trajectories (n_samples, n_steps + 1, 2, n_out, n_out) float64, [..., (u, v), ix, iy].

    Output nodes x_i = i / (n_out - 1) in both directions, walls included; saved at t_k = k t_end /
    n_steps. Each sample starts from the random smooth divergence-free field of
    `random_cavity_streamfunction` (zero on the walls with its gradient), with the lid u = 1 moving
    from t = 0. The solver runs on resolution x resolution cells (default n_out - 1: the output
    nodes are the solver nodes, so the central-difference divergence vanishes to round-off inside);
    when n_out - 1 divides resolution the output nodes are solver nodes, else a cubic spline
    resamples; the wall nodes are then set to the Dirichlet data exactly (u = 1, v = 0 on the whole
    top row, corners included; u = v = 0 on the other walls).
    """
    check_positive_int(n_samples, "n_samples")
    check_positive_int(n_steps, "n_steps")
    n_out = check_positive_int(n_out, "n_out")
    if n_out < 3:
        raise UsageError(f"n_out: expected at least 3 nodes, got {n_out}")
    resolution = _check_resolution(n_out - 1 if resolution is None else resolution)
    generator = np.random.default_rng(seed)
    psi0 = random_cavity_streamfunction(n_samples, resolution, generator)
    velocity = solve_cavity(reynolds, t_end, resolution, psi0, n_saves=n_steps + 1)
    resample = torch.from_numpy(_resampling_matrix(resolution, n_out))
    out = torch.einsum("ix,jy,btcxy->btcij", resample, resample, velocity)
    return set_cavity_walls(out.contiguous())


def cavity_vorticity(velocity, spacing: float) -> torch.Tensor:
    """omega = v_x - u_y, (..., n_x, n_y), from velocity (..., 2, n_x, n_y) indexed [ix, iy].

    Central differences inside, second-order one-sided differences on the walls.
    """
    velocity = torch.as_tensor(velocity, dtype=torch.float64)
    if velocity.dim() < 3 or velocity.shape[-3] != 2 or min(velocity.shape[-2:]) < 3:
        raise UsageError(
            f"velocity: expected shape (..., 2, n_x, n_y) with n_x, n_y >= 3, "
            f"got {tuple(velocity.shape)}"
        )
    spacing = _check_number(spacing, "spacing")
    u, v = velocity[..., 0, :, :], velocity[..., 1, :, :]
    (v_x,) = torch.gradient(v, spacing=spacing, dim=-2, edge_order=2)
    (u_y,) = torch.gradient(u, spacing=spacing, dim=-1, edge_order=2)
    return v_x - u_y


def centreline_profiles(flow: CavityField, u_at, v_at) -> tuple[np.ndarray, np.ndarray]:
    """u(1/2, y) at y = u_at and v(x, 1/2) at x = v_at, cubic splines along the centre lines."""
    nodes = flow.nodes.numpy()
    if (nodes.size - 1) % 2:
        raise UsageError(f"flow: expected an even number of cells, got {nodes.size - 1}")
    middle = (nodes.size - 1) // 2
    u = CubicSpline(nodes, flow.u[middle].numpy())(np.asarray(u_at, dtype=np.float64))
    v = CubicSpline(nodes, flow.v[:, middle].numpy())(np.asarray(v_at, dtype=np.float64))
    return u, v


def ghia_errors(flow: CavityField) -> tuple[float, float]:
    """max |u - u_Ghia| and max |v - v_Ghia| over the tabulated Re = 100 points, over the lid speed."""
    u, v = centreline_profiles(
        flow, np.array(GHIA_RE100_U_NODES) / 128, np.array(GHIA_RE100_V_NODES) / 128
    )
    lid = float(flow.u[:, -1].abs().max())
    return (
        float(np.abs(u - np.array(GHIA_RE100_U)).max()) / lid,
        float(np.abs(v - np.array(GHIA_RE100_V)).max()) / lid,
    )
