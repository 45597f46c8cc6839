"""Generalized porous-medium equation benchmarks: u_t = (k(u) u_x)_x, flux F = -k(u) u_x.

Three members of the family, easy to hard (REFERENCE section 3):

- `Diffusion` ("diffusion"): constant k; u = exp(-k t) sin(x) on the periodic [0, 2 pi].
- `PorousMedium` ("pme"): k(u) = u^m; u = (m (t - x)_+)^(1/m), a front at x = t.
- `Stefan` ("stefan"): k(u) = 1{u >= u*}; a similarity solution whose front alpha sqrt(t)
  carries a jump of u from u* to 0.

The PME and Stefan solutions are half-line solutions restricted to the domain; mass and
boundary fluxes are those of the restriction, so U(t) - U(0) = int_0^t (F_left - F_right) ds
holds for every t >= 0, also once the front has left the domain (never, in t_range, for the
train and test parameters).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch
from scipy.optimize import brentq

from probcons.problems.base import Problem

# Level at which a PME profile counts as having reached its front. The exact profile crosses
# it at x = t - PME_FRONT_THRESHOLD**m / m: 0.01 behind the front for m = 1 (two cells of a
# 201-point grid), under 1e-6 for m >= 3.
PME_FRONT_THRESHOLD = 0.01

# Absolute tolerance of the Stefan root z1 (brentq's relative tolerance stays at its default,
# 4 machine epsilons); small so that z1 -> 0 (u* -> 1) keeps its relative accuracy.
STEFAN_ROOT_XTOL = 1e-15


class Diffusion(Problem):
    """Heat equation u_t = k u_xx on x in [0, 2 pi] (periodic), t in [0, 1].

    u = exp(-k t) sin(x); U(t) = 0; F = -k u_x, so F_left = F_right = -k exp(-k t). No front.
    """

    name = "diffusion"
    title = "u_t = k u_xx, u = exp(-k t) sin(x)"
    parameter_name = "k"
    parameter_domain = (0.0, math.inf)
    t_range = (0.0, 1.0)
    x_range = (0.0, 2 * math.pi)
    periodic = True
    train_range = (1.0, 5.0)
    test_values = (1.0, 5.0)
    time_of_interest = 0.5

    def _solution(self, t: torch.Tensor, x: torch.Tensor, parameter: float) -> torch.Tensor:
        return torch.exp(-parameter * t) * torch.sin(x)

    def _diffusivity(self, u: torch.Tensor, parameter: float) -> torch.Tensor:
        return torch.full_like(u, parameter)

    def _mass(self, t: torch.Tensor, parameter: float) -> torch.Tensor:
        return torch.zeros_like(t)

    def _boundary_flux(
        self, t: torch.Tensor, parameter: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # -k u_x = -k exp(-k t) cos(x), equal at x = 0 and x = 2 pi.
        flux = -parameter * torch.exp(-parameter * t)
        return flux, flux.clone()


class PorousMedium(Problem):
    """Porous-medium equation u_t = (u^m u_x)_x on x, t in [0, 1].

    u = (m (t - x)_+)^(1/m): a front at x = t. With s_R = (t - 1)_+ (positive once the front
    has left through x = 1):
        U(t) = m^(1 + 1/m) / (m + 1) * (t^(1 + 1/m) - s_R^(1 + 1/m))
        F_left = (m t)^(1/m),  F_right = (m s_R)^(1/m)  (0 for t <= 1).
    """

    name = "pme"
    title = "u_t = (u^m u_x)_x, u = (m (t - x)_+)^(1/m)"
    parameter_name = "m"
    parameter_domain = (0.0, math.inf)
    t_range = (0.0, 1.0)
    x_range = (0.0, 1.0)
    train_range = (1.0, 6.0)
    test_values = (1.0, 3.0, 6.0)
    time_of_interest = 0.5

    def _solution(self, t: torch.Tensor, x: torch.Tensor, parameter: float) -> torch.Tensor:
        m = parameter
        return (m * torch.clamp(t - x, min=0.0)) ** (1.0 / m)

    def _diffusivity(self, u: torch.Tensor, parameter: float) -> torch.Tensor:
        # u^m, taken on u_+ so that a negative prediction gives 0 rather than NaN.
        return torch.clamp(u, min=0.0) ** parameter

    def _mass(self, t: torch.Tensor, parameter: float) -> torch.Tensor:
        m = parameter
        power = 1.0 + 1.0 / m
        x_right = self.x_range[1]
        outflow = torch.clamp(t - x_right, min=0.0)
        return m**power / (m + 1.0) * (t**power - outflow**power)

    def _boundary_flux(
        self, t: torch.Tensor, parameter: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # F = -u^m u_x = (m (t - x)_+)^(1/m).
        m = parameter
        x_left, x_right = self.x_range
        left = (m * torch.clamp(t - x_left, min=0.0)) ** (1.0 / m)
        right = (m * torch.clamp(t - x_right, min=0.0)) ** (1.0 / m)
        return left, right

    def _front_position(self, t: float, parameter: float) -> float:
        return t

    def _front_threshold(self, parameter: float) -> float:
        return PME_FRONT_THRESHOLD


class StefanConstants(NamedTuple):
    """Constants of the Stefan similarity solution for one u*: front x = alpha sqrt(t)."""

    z1: float
    alpha: float
    c1: float


@functools.lru_cache(maxsize=1024)
def stefan_constants(u_star: float) -> StefanConstants:
    """z1, alpha = 2 z1, c1 = (1 - u*) / erf(z1), where z1 > 0 solves
    f(z) = u* z erf(z) exp(z^2) - (1 - u*) / sqrt(pi) = 0.

    Bracket: f(0) < 0 and f increases strictly on z > 0. For z >= 1, z erf(z) >= erf(1), so
    f(z) >= u* erf(1) exp(z^2) - (1 - u*)/sqrt(pi) >= 0 once
    z^2 >= log((1 - u*) / (sqrt(pi) erf(1) u*)); z_hi = max(1, sqrt of that) closes the bracket
    without overflow of exp(z^2). `u_star` must lie in (0, 1) (checked by `Stefan`).
    """
    rhs = (1.0 - u_star) / math.sqrt(math.pi)

    def residual(z: float) -> float:
        return u_star * z * math.erf(z) * math.exp(z * z) - rhs

    z_hi = math.sqrt(max(1.0, math.log(rhs / (math.erf(1.0) * u_star))))
    z1 = brentq(residual, 0.0, z_hi, xtol=STEFAN_ROOT_XTOL)
    return StefanConstants(z1=z1, alpha=2.0 * z1, c1=(1.0 - u_star) / math.erf(z1))


class Stefan(Problem):
    """One-phase Stefan problem u_t = (k(u) u_x)_x, k(u) = 1 if u >= u* else 0.

    x in [0, 1], t in [0, 0.1]; u(t, 0) = 1. Behind the front s(t) = alpha sqrt(t),
    u = 1 - c1 erf(x / (2 sqrt t)) (heat equation, u >= u*); ahead of it u = 0 (k = 0). At the
    front u jumps from u* to 0 and the Stefan condition -u_x(s^-) = u* s'(t) holds. t = 0:
    s = 0, u(0, x) = 1 for x <= 0 and 0 for x > 0. While s(t) <= 1:
        U(t) = 2 c1 sqrt(t / pi),  F_left = c1 / sqrt(pi t) (inf at t = 0; integrable),
        F_right = 0.
    After the front leaves through x = 1 (t > 1 / alpha^2; about 0.9 for u* = 0.6), U(t) is the
    integral of the erf profile over [0, 1] and F_right = c1 exp(-1 / (4 t)) / sqrt(pi t).
    """

    name = "stefan"
    title = "u_t = (k(u) u_x)_x, k = 1{u >= u*}, front alpha sqrt(t)"
    parameter_name = "u_star"
    parameter_domain = (0.0, 1.0)
    t_range = (0.0, 0.1)
    x_range = (0.0, 1.0)
    train_range = (0.55, 0.7)
    test_values = (0.5, 0.6)
    time_of_interest = 0.05

    def constants(self, u_star: Any) -> StefanConstants:
        """(z1, alpha, c1) for this u*: front alpha sqrt(t), profile 1 - c1 erf(x / (2 sqrt t))."""
        return stefan_constants(self.check_parameter(u_star))

    def _solution(self, t: torch.Tensor, x: torch.Tensor, parameter: float) -> torch.Tensor:
        _, alpha, c1 = stefan_constants(parameter)
        started = t > 0
        root_t = torch.sqrt(torch.where(started, t, torch.ones_like(t)))
        front = torch.where(started, alpha * root_t, torch.zeros_like(t))
        behind = torch.where(
            started, 1.0 - c1 * torch.special.erf(x / (2.0 * root_t)), torch.ones_like(t)
        )
        return torch.where(x <= front, behind, torch.zeros_like(behind))

    def _diffusivity(self, u: torch.Tensor, parameter: float) -> torch.Tensor:
        return (u >= parameter).to(torch.float64)

    def _mass(self, t: torch.Tensor, parameter: float) -> torch.Tensor:
        _, alpha, c1 = stefan_constants(parameter)
        x_right = self.x_range[1]
        started = t > 0
        safe_t = torch.where(started, t, torch.ones_like(t))
        inside = 2.0 * c1 * torch.sqrt(t / math.pi)
        # Front past x_right: int_0^L (1 - c1 erf(x / a)) dx with a = 2 sqrt(t), L = x_right,
        # = L - c1 (L erf(L / a) + a / sqrt(pi) (exp(-L^2 / a^2) - 1)).
        width = 2.0 * torch.sqrt(safe_t)
        ratio = x_right / width
        beyond = x_right - c1 * (
            x_right * torch.special.erf(ratio)
            + width / math.sqrt(math.pi) * (torch.exp(-(ratio**2)) - 1.0)
        )
        front_inside = alpha * torch.sqrt(t) <= x_right
        return torch.where(front_inside, inside, beyond)

    def _boundary_flux(
        self, t: torch.Tensor, parameter: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Behind the front F = -u_x = c1 exp(-x^2 / (4 t)) / sqrt(pi t).
        _, alpha, c1 = stefan_constants(parameter)
        x_right = self.x_range[1]
        left = c1 / torch.sqrt(math.pi * t)  # t = 0 -> inf
        started = t > 0
        safe_t = torch.where(started, t, torch.ones_like(t))
        outflow = c1 * torch.exp(-(x_right**2) / (4.0 * safe_t)) / torch.sqrt(math.pi * safe_t)
        front_inside = alpha * torch.sqrt(t) <= x_right
        right = torch.where(front_inside, torch.zeros_like(t), outflow)
        return left, right

    def _front_position(self, t: float, parameter: float) -> float:
        return stefan_constants(parameter).alpha * math.sqrt(t)

    def _front_threshold(self, parameter: float) -> float:
        # Midpoint of the jump u* -> 0 at the front.
        return parameter / 2.0
