"""Operator-learning problems with their own data: initial condition -> solution at later times.

Each sample maps a(x) = u(0, x) on n_x nodes to u(t_c, x) at m output times, stored as m output
channels (x-t multi-step; m = 1 is the single-step map). The boundary data of every output
channel is part of the sample, (m, r) per sample: [left, right] values (Dirichlet) or
derivatives (Neumann); periodic problems have none. `boundary_varies` says whether those data
differ between samples (heat: one heater for all; wave: zeros), i.e. whether they can inform a
model given them as inputs. Every map is well-posed: the output depends
only on what the input holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from probcons.constraints.boundary_condition import BoundaryCondition, dirichlet, neumann, periodic
from probcons.errors import UsageError
from probcons.solvers import (
    gaussian_random_field,
    solve_burgers_dirichlet,
    solve_burgers_periodic,
    solve_heat_neumann,
    solve_wave_neumann,
    stokes_second_problem,
)
from probcons.validation import check_positive_int


@dataclass(frozen=True)
class OperatorData:
    """inputs (n, 1, n_x), targets (n, m, n_x), boundary (n, m, r) or None; float64.

    parameters (n, p): the sampled physical parameters (e.g. the heat problem's w), or None.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    boundary: torch.Tensor | None
    parameters: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def subset(self, index) -> OperatorData:
        boundary = None if self.boundary is None else self.boundary[index]
        parameters = None if self.parameters is None else self.parameters[index]
        return OperatorData(self.inputs[index], self.targets[index], boundary, parameters)


@dataclass(frozen=True)
class OperatorProblem:
    """A registered map with its grid, output times, boundary condition and data generator."""

    name: str
    description: str
    x: torch.Tensor
    times: torch.Tensor
    condition: BoundaryCondition
    sampler: Callable[[int, torch.Generator, OperatorProblem], OperatorData] = field(repr=False)
    coordinates: str = "linear"
    parameters: dict = field(default_factory=dict)
    boundary_varies: bool = True  # False: every sample has the same boundary data (no information)

    @property
    def n_x(self) -> int:
        return self.x.numel()

    @property
    def n_times(self) -> int:
        return self.times.numel()

    def generate(self, n: int, generator: torch.Generator | None = None) -> OperatorData:
        """n samples drawn with `generator` (seeded => reproducible)."""
        check_positive_int(n, "n")
        return self.sampler(n, generator if generator is not None else torch.Generator(), self)


# -- heat with Neumann ends ----------------------------------------------------------------------
HEAT = {"diffusivity": 0.01, "heater": 5.0, "w_range": (2.01, 3.99)}


def _heat_flux(t: float) -> torch.Tensor:
    """[u_x(0, t), u_x(1, t)] = [0, U sin(pi t)]."""
    return torch.tensor([0.0, HEAT["heater"] * math.sin(math.pi * t)], dtype=torch.float64)


def _sample_heat(n: int, generator: torch.Generator, problem: OperatorProblem) -> OperatorData:
    low, high = HEAT["w_range"]
    w = low + (high - low) * torch.rand(n, 1, generator=generator, dtype=torch.float64)
    u0 = torch.cos(w * math.pi * problem.x)
    order = problem.condition.order
    u = solve_heat_neumann(
        u0, problem.x, problem.times, HEAT["diffusivity"], _heat_flux, order=order, max_step=2e-3
    )
    flux = torch.stack([_heat_flux(float(t)) for t in problem.times])  # (m, 2)
    return OperatorData(u0[:, None], u, flux.expand(n, -1, -1).clone(), w)


def heat_mass(problem: OperatorProblem, w: torch.Tensor) -> torch.Tensor:
    """Exact U(t_c) = int_0^1 u dx for u0 = cos(w pi x): U(0) + k U_h (1 - cos(pi t)) / pi, (n, m).

    Flux F = -k u_x, so dU/dt = F(0) - F(1) = k u_x(1, t) = k U_h sin(pi t).
    """
    w = w.reshape(-1, 1)
    initial = torch.sin(w * math.pi) / (w * math.pi)
    k, heater = HEAT["diffusivity"], HEAT["heater"]
    return initial + k * heater * (1 - torch.cos(math.pi * problem.times[None])) / math.pi


# -- Stokes' second problem ------------------------------------------------------------------------
STOKES = {
    "viscosity": 0.05,
    "amplitude_range": (0.5, 1.5),
    "frequency_range": (math.pi, 4 * math.pi),
}


def _sample_stokes(n: int, generator: torch.Generator, problem: OperatorProblem) -> OperatorData:
    # u(0, x) = U exp(-q x) cos(q x) determines U and q, hence w = 2 nu q^2: the map is well-posed.
    (a_lo, a_hi), (w_lo, w_hi) = STOKES["amplitude_range"], STOKES["frequency_range"]
    amplitude = a_lo + (a_hi - a_lo) * torch.rand(n, 1, 1, generator=generator, dtype=torch.float64)
    frequency = w_lo + (w_hi - w_lo) * torch.rand(n, 1, 1, generator=generator, dtype=torch.float64)
    nu = STOKES["viscosity"]
    x, t = problem.x[None, None, :], problem.times[None, :, None]
    u0 = stokes_second_problem(x, torch.zeros(()), amplitude, frequency, nu)[:, 0]
    u = stokes_second_problem(x, t, amplitude, frequency, nu)
    boundary = torch.stack([u[..., 0], u[..., -1]], dim=-1)
    return OperatorData(u0[:, None], u, boundary, torch.cat([amplitude, frequency], -1)[:, 0])


# -- viscous Burgers -------------------------------------------------------------------------------
BURGERS = {"viscosity": 0.1, "refinement": 2, "periodic_nodes": 128}


def _sample_burgers_dirichlet(
    n: int, generator: torch.Generator, problem: OperatorProblem
) -> OperatorData:
    # GRF of the FNO paper drawn on a period twice the domain, so the two end values differ.
    r = BURGERS["refinement"]
    fine = torch.linspace(float(problem.x[0]), float(problem.x[-1]), (problem.n_x - 1) * r + 1)
    a = gaussian_random_field(n, fine, generator, period=2.0)
    u = solve_burgers_dirichlet(a, fine, problem.times, BURGERS["viscosity"])[..., ::r]
    boundary = torch.stack([u[..., 0], u[..., -1]], dim=-1)
    return OperatorData(a[:, None, ::r].contiguous(), u.contiguous(), boundary)


def _sample_burgers_periodic(
    n: int, generator: torch.Generator, problem: OperatorProblem
) -> OperatorData:
    m = BURGERS["periodic_nodes"]
    stride = m // (problem.n_x - 1)
    nodes = torch.arange(m, dtype=torch.float64) / m
    a = gaussian_random_field(n, nodes, generator, period=1.0)
    u = solve_burgers_periodic(a, problem.times, BURGERS["viscosity"])

    def on_grid(values: torch.Tensor) -> torch.Tensor:  # periodic nodes -> grid with both ends
        coarse = values[..., ::stride]
        return torch.cat([coarse, coarse[..., :1]], dim=-1).contiguous()

    return OperatorData(on_grid(a)[:, None], on_grid(u), None)


# -- wave equation with Neumann ends -----------------------------------------------------------------
WAVE = {"speed": 1.0, "n_modes": 8, "decay": 1.5}


def _sample_wave(n: int, generator: torch.Generator, problem: OperatorProblem) -> OperatorData:
    # u0 = sum_k a_k cos(k pi x), a_k ~ N(0, k^(-2 decay)), k = 1..n_modes; u_t(0) = 0.
    k = torch.arange(1, WAVE["n_modes"] + 1, dtype=torch.float64)
    coefficients = torch.randn(n, k.numel(), generator=generator, dtype=torch.float64)
    coefficients = coefficients * k ** (-WAVE["decay"])
    u0 = coefficients @ torch.cos(math.pi * k[:, None] * problem.x[None, :])
    order = problem.condition.order
    u = solve_wave_neumann(u0, problem.x, problem.times, WAVE["speed"], order=order)
    u0 = problem.condition.enforce(u0[:, None])  # the solver's t = 0 state: discrete u_x = 0
    return OperatorData(u0, u, torch.zeros(n, problem.n_times, 2, dtype=torch.float64))


def _grid(n_x: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, n_x, dtype=torch.float64)


def _times(end: float, n_times: int) -> torch.Tensor:
    return end * torch.arange(1, n_times + 1, dtype=torch.float64) / n_times


def make_problem(name: str, n_x: int = 65, n_times: int | None = None) -> OperatorProblem:
    """The problem `name` on n_x nodes over [0, 1] with n_times output times (default per problem)."""
    if name not in OPERATOR_PROBLEMS:
        raise UsageError(f"name: expected one of {sorted(OPERATOR_PROBLEMS)}, got {name!r}")
    check_positive_int(n_x, "n_x")
    defaults = {
        "heat-neumann": 10,
        "stokes": 10,
        "burgers-dirichlet": 1,
        "burgers-periodic": 1,
        "wave": 10,
    }
    m = check_positive_int(defaults[name] if n_times is None else n_times, "n_times")
    x = _grid(n_x)
    h = 1.0 / (n_x - 1)
    if name == "heat-neumann":
        return OperatorProblem(
            name,
            OPERATOR_PROBLEMS[name],
            x,
            _times(1.0, m),
            neumann(h),
            _sample_heat,
            "linear",
            HEAT,
            boundary_varies=False,  # the same heater U sin(pi t) for every sample
        )
    if name == "stokes":
        return OperatorProblem(
            name,
            OPERATOR_PROBLEMS[name],
            x,
            _times(1.0, m),
            dirichlet(),
            _sample_stokes,
            "linear",
            STOKES,
        )
    if name == "burgers-dirichlet":
        return OperatorProblem(
            name,
            OPERATOR_PROBLEMS[name],
            x,
            _times(1.0, m),
            dirichlet(),
            _sample_burgers_dirichlet,
            "linear",
            BURGERS,
        )
    if name == "burgers-periodic":
        if BURGERS["periodic_nodes"] % (n_x - 1):
            raise UsageError(
                f"n_x: expected n_x - 1 to divide {BURGERS['periodic_nodes']}, got {n_x}"
            )
        return OperatorProblem(
            name,
            OPERATOR_PROBLEMS[name],
            x,
            _times(1.0, m),
            periodic(),
            _sample_burgers_periodic,
            "periodic",
            BURGERS,
        )
    return OperatorProblem(
        name,
        OPERATOR_PROBLEMS[name],
        x,
        _times(1.0, m),
        neumann(h),
        _sample_wave,
        "linear",
        WAVE,
        boundary_varies=False,  # homogeneous Neumann data: zeros for every sample
    )


OPERATOR_PROBLEMS = {
    "heat-neumann": "u_t = 0.01 u_xx, u_x(0,t) = 0, u_x(1,t) = 5 sin(pi t), u0 = cos(w pi x), "
    "w ~ U[2.01, 3.99]; u0 -> u(t_1..t_m), t_c = c/m (finite differences, Crank-Nicolson)",
    "stokes": "Stokes' second problem u_t = 0.05 u_xx, u(0,t) = U cos(w t), U ~ U[0.5, 1.5], "
    "w ~ U[pi, 4 pi]; u(0, x) -> u(t_1..t_m) (analytic; Dirichlet at both ends)",
    "burgers-dirichlet": "u_t + u u_x = 0.1 u_xx, end values held fixed, GRF initial data; "
    "a -> u(T = 1) (finite differences, RK4)",
    "burgers-periodic": "u_t + u u_x = 0.1 u_xx, periodic, GRF N(0, 625 (-Lap + 25)^-2) initial "
    "data; a -> u(T = 1) (Fourier pseudo-spectral, IF-RK4)",
    "wave": "u_tt = u_xx, u_x = 0 at both ends, u_t(0) = 0, random cosine series u0; "
    "u0 -> u(t_1..t_m) (finite differences, leapfrog)",
}
