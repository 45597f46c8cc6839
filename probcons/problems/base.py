"""The abstract benchmark problem: a conservation law u_t + F_x = 0 with an exact solution family.

A problem fixes the domain x in x_range, t in t_range, and a one-parameter family of exact
solutions u(t, x; p). It provides what the constraints need: the mass U(t) = int u(t, x) dx
over x_range, the boundary fluxes (F_left, F_right) with U' = F_left - F_right, and the front
(shock) position where there is one. Public methods check their arguments once and call the
subclass hooks (`_solution`, `_mass`, ...) with float64 tensors and a checked float parameter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.validation import as_float64_tensor, check_positive_int, describe


def check_generator(generator: Any) -> torch.Generator | None:
    """A `torch.Generator` or None (None: torch's global random state)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise UsageError(
            f"generator: expected a torch.Generator or None, got {describe(generator)}"
        )
    return generator


def as_float64(value: Any, name: str) -> torch.Tensor:
    """A finite float64 tensor; Python numbers and lists are read as float64 directly.

    (`torch.as_tensor(0.7)` would first round to the float32 default dtype.)
    """
    if not isinstance(value, (torch.Tensor, bool)) and not hasattr(value, "dtype"):
        try:
            value = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            pass  # as_float64_tensor reports it, naming the argument
    return as_float64_tensor(value, name)


def as_times(t: Any) -> torch.Tensor:
    """Times as a finite float64 tensor with t >= 0 (the exact solutions start at t = 0)."""
    times = as_float64(t, "t")
    if bool((times < 0).any()):
        raise UsageError(f"t: expected times >= 0, got minimum {float(times.min())!r}")
    return times


def as_time_scalar(t: Any) -> float:
    """One time t >= 0 as a float (a number or a one-element tensor)."""
    times = as_times(t)
    if times.numel() != 1:
        raise UsageError(f"t: expected a single time, got {describe(times)}")
    return float(times.reshape(-1)[0])


def as_time_space(t: Any, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, x) as finite float64 tensors broadcast to one shape; t >= 0."""
    times = as_times(t)
    positions = as_float64(x, "x")
    try:
        return torch.broadcast_tensors(times, positions)
    except RuntimeError as error:
        raise UsageError(
            f"t, x: expected broadcastable shapes, got {tuple(times.shape)} and "
            f"{tuple(positions.shape)}"
        ) from error


@runtime_checkable
class RegisteredProblem(Protocol):
    """What every problem of the library shares, GPME (`Problem`) and operator
    (`OperatorProblem`, `OperatorProblem2d`) alike: its registry name and a one-line
    description. Nothing more is common: GPME problems are exact solution families on a
    continuous (t, x) domain (any `grid(n_t, n_x)`), operator problems fixed nodes and output
    times with a `condition` (BoundaryCondition) and a data generator."""

    name: str
    description: str


class Problem(ABC):
    """One benchmark: domain, exact solution family u(t, x; p), mass, boundary fluxes, front.

    Class attributes (set by each subclass):
        name: registry key; parameter_name: "k" | "m" | "u_star";
        parameter_domain: open interval (lo, hi) of physical parameter values;
        t_range, x_range: (lo, hi) of the domain; periodic: periodic in x;
        train_range: (lo, hi) of the uniform training distribution; test_values: tuple;
        time_of_interest: the time at which MSE and the front are reported;
        title: a short human description (used by `describe`).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    parameter_name: ClassVar[str]
    parameter_domain: ClassVar[tuple[float, float]]
    t_range: ClassVar[tuple[float, float]]
    x_range: ClassVar[tuple[float, float]]
    periodic: ClassVar[bool] = False
    train_range: ClassVar[tuple[float, float]]
    test_values: ClassVar[tuple[float, ...]]
    time_of_interest: ClassVar[float]

    # -- subclass hooks: inputs already checked (float64 tensors, t >= 0, a physical float) --

    @abstractmethod
    def _solution(self, t: torch.Tensor, x: torch.Tensor, parameter: float) -> torch.Tensor:
        """u(t, x; p) on broadcast (t, x)."""

    @abstractmethod
    def _diffusivity(self, u: torch.Tensor, parameter: float) -> torch.Tensor:
        """k(u; p) elementwise."""

    @abstractmethod
    def _mass(self, t: torch.Tensor, parameter: float) -> torch.Tensor:
        """U(t) = integral of u(t, x) over x_range."""

    @abstractmethod
    def _boundary_flux(
        self, t: torch.Tensor, parameter: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(t, x_left), F(t, x_right)) with F = -k(u) u_x."""

    def _front_position(self, t: float, parameter: float) -> float | None:
        """Position of the front at time t, or None for a problem without one."""
        return None

    def _front_threshold(self, parameter: float) -> float | None:
        """Level at which a profile is taken to have crossed the front, or None."""
        return None

    # -- public boundary --

    def check_parameter(self, value: Any) -> float:
        """The parameter as a float; ValueError unless it is a real number in `parameter_domain`."""
        name = self.parameter_name
        lo, hi = self.parameter_domain
        if isinstance(value, bool) or isinstance(value, str):
            raise UsageError(f"{name}: expected a real number, got {describe(value)}")
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise UsageError(f"{name}: expected a real number, got {describe(value)}") from error
        if not (lo < number < hi):  # also rejects NaN
            raise UsageError(f"{name}: expected a value in ({lo:g}, {hi:g}), got {value!r}")
        return number

    def solution(self, t: Any, x: Any, parameter: Any) -> torch.Tensor:
        """Exact u(t, x; p), float64, on the broadcast shape of `t` (t >= 0) and `x`."""
        p = self.check_parameter(parameter)
        times, positions = as_time_space(t, x)
        return self._solution(times, positions, p)

    def diffusivity(self, u: Any, parameter: Any) -> torch.Tensor:
        """k(u; p) of u_t = (k(u) u_x)_x, float64, same shape as `u`."""
        p = self.check_parameter(parameter)
        return self._diffusivity(as_float64(u, "u"), p)

    def mass(self, t: Any, parameter: Any) -> torch.Tensor:
        """U(t) = integral of u(t, x; p) dx over x_range, float64, same shape as `t`."""
        p = self.check_parameter(parameter)
        return self._mass(as_times(t), p)

    def boundary_flux(self, t: Any, parameter: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(F_left, F_right) at the two ends of x_range, each shaped like `t`.

        F = -k(u) u_x, so dU/dt = F_left - F_right.
        """
        p = self.check_parameter(parameter)
        return self._boundary_flux(as_times(t), p)

    def front_position(self, t: Any, parameter: Any) -> float | None:
        """x of the front (shock) at time t >= 0, or None if the problem has no front."""
        p = self.check_parameter(parameter)
        return self._front_position(as_time_scalar(t), p)

    def front_threshold(self, parameter: Any) -> float | None:
        """Level u_c: a profile's front is the first x where it drops to u_c or below (or None)."""
        return self._front_threshold(self.check_parameter(parameter))

    def grid(self, n_t: int, n_x: int) -> Grid:
        """Uniform `Grid` over t_range x x_range with n_t times and n_x positions (ends included)."""
        check_positive_int(n_t, "n_t")
        check_positive_int(n_x, "n_x")
        return Grid.uniform(self.t_range, self.x_range, n_t, n_x)

    def sample_parameters(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) float64 parameters drawn uniformly from `train_range`."""
        check_positive_int(n, "n")
        generator = check_generator(generator)
        lo, hi = self.train_range
        draws = torch.rand(n, generator=generator, dtype=torch.float64)
        return lo + (hi - lo) * draws

    @property
    def description(self) -> str:
        """Equation, domain and parameter ranges in one line (`RegisteredProblem`)."""
        return self.describe().partition(": ")[2]

    def describe(self) -> str:
        """One line for listings: name, equation, domain, parameter ranges."""
        t_lo, t_hi = self.t_range
        x_lo, x_hi = self.x_range
        lo, hi = self.train_range
        tests = ", ".join(f"{value:g}" for value in self.test_values)
        periodic = " periodic" if self.periodic else ""
        return (
            f"{self.name}: {self.title}; x in [{x_lo:g}, {x_hi:g}]{periodic}, "
            f"t in [{t_lo:g}, {t_hi:g}]; {self.parameter_name} train U[{lo:g}, {hi:g}], "
            f"test {{{tests}}}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
