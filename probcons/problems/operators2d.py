"""2-D operator problems with their own data: autoregressive time steps on a node grid.

Map (both problems): one autoregressive step of length dt = t_end / n_steps,

    [u(t_k), ..., u(t_{k - history + 1})] -> u(t_{k + 1}),

u with C channels on n x n nodes of [0, 1]^2 (walls included), fields indexed [channel, ix, iy].
A test trajectory is rolled out from its first `history` states to t_end (25 steps to t = 2 by
default). The cavity state is the velocity (u, v) (history 1: the incompressible flow is fixed
by its velocity); the wave state is the displacement u (history 2: a second-order equation needs
two time levels, as in leapfrog). The boundary data of each step are part of a trajectory:
Dirichlet values of the target (cavity: lid u = 1 on the top row, zero elsewhere) or zero
Neumann data (wave).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from probcons.constraints.boundary_condition2d import BoundaryCondition2d, dirichlet2d, neumann2d
from probcons.errors import UsageError
from probcons.validation import check_positive_int


@dataclass(frozen=True)
class Trajectories2d:
    """states (n, n_steps + 1, C, n1, n2) float64 from one seeded generator call."""

    states: torch.Tensor

    def __len__(self) -> int:
        return self.states.shape[0]

    @property
    def n_steps(self) -> int:
        return self.states.shape[1] - 1

    def subset(self, index) -> Trajectories2d:
        return Trajectories2d(self.states[index])


@dataclass(frozen=True)
class OperatorProblem2d:
    """A registered autoregressive 2-D map: grid, step, condition, history and data generator."""

    name: str
    description: str
    n: int
    n_steps: int
    t_end: float
    channels: int
    history: int
    condition: BoundaryCondition2d
    sampler: Callable[[int, int, OperatorProblem2d], torch.Tensor] = field(repr=False)
    dirichlet_data: bool = False  # boundary data read from the target (else zero data)
    parameters: dict = field(default_factory=dict)

    @property
    def nodes(self) -> torch.Tensor:
        return torch.linspace(0.0, 1.0, self.n, dtype=torch.float64)

    @property
    def step(self) -> float:
        return 1.0 / (self.n - 1)

    @property
    def times(self) -> torch.Tensor:
        return self.t_end * torch.arange(self.n_steps + 1, dtype=torch.float64) / self.n_steps

    def generate(self, n_samples: int, seed: int = 0) -> Trajectories2d:
        """n_samples trajectories (seeded => reproducible)."""
        check_positive_int(n_samples, "n_samples")
        states = self.sampler(n_samples, int(seed), self)
        return Trajectories2d(states.to(torch.float64).contiguous())

    def boundary_data(self, states: torch.Tensor):
        """Data (g_x, g_y) of the condition for target states (..., C, n, n) flattened to a batch."""
        if not self.dirichlet_data:
            return None
        return self.condition.functionals(states.reshape(-1, *states.shape[-3:]))

    def step_pairs(self, data: Trajectories2d) -> tuple[torch.Tensor, torch.Tensor]:
        """All teacher-forced pairs: inputs (N, history C, n, n) newest first, targets (N, C, n, n)."""
        states = data.states
        inputs, targets = [], []
        for k in range(self.history - 1, self.n_steps):
            window = [states[:, k - lag] for lag in range(self.history)]
            inputs.append(torch.cat(window, dim=1))
            targets.append(states[:, k + 1])
        return torch.cat(inputs), torch.cat(targets)


# -- lid-driven cavity -------------------------------------------------------------------------
CAVITY = {"reynolds": 100.0, "resolution": None}  # None: solve on the output grid (n - 1 cells)


def _sample_cavity(n_samples: int, seed: int, problem: OperatorProblem2d) -> torch.Tensor:
    from probcons.solvers.cavity import cavity_trajectories

    return cavity_trajectories(
        n_samples,
        reynolds=problem.parameters["reynolds"],
        n_steps=problem.n_steps,
        t_end=problem.t_end,
        n_out=problem.n,
        resolution=problem.parameters["resolution"],
        seed=seed,
    )


# -- wave equation with Neumann walls ----------------------------------------------------------
WAVE2D = {"speed": 1.0}  # finite-difference leapfrog data: the stencil rows hold to round-off


def _sample_wave2d(n_samples: int, seed: int, problem: OperatorProblem2d) -> torch.Tensor:
    from probcons.solvers.wave2d import wave2d_trajectories

    states = wave2d_trajectories(
        n_samples,
        n_steps=problem.n_steps,
        t_end=problem.t_end,
        n_out=problem.n,
        c=problem.parameters["speed"],
        seed=seed,
    )
    return states[:, :, None]  # (n, n_steps + 1, 1, n, n)


OPERATOR_PROBLEMS_2D = {
    "cavity": "lid-driven cavity, Navier-Stokes Re = 100 on [0, 1]^2, velocity (u, v) on n x n "
    "nodes with walls, random smooth initial flows; one step u(t_k) -> u(t_k+1), dt = 0.08, "
    "rolled out 25 steps to t = 2 (Dirichlet: lid u = 1 on top, zero elsewhere)",
    "wave2d": "u_tt = u_xx + u_yy on [0, 1]^2 with Neumann walls (one-sided 2nd-order du/dn = 0, "
    "exact in the data), random cosine-series initial states at rest; one step [u(t_k), "
    "u(t_k-1)] -> u(t_k+1), dt = 0.08, rolled out from t_0, t_1 to t = 2",
}


def make_problem2d(
    name: str,
    n: int = 50,
    n_steps: int = 25,
    t_end: float = 2.0,
    resolution: int | None = None,
    reynolds: float | None = None,
) -> OperatorProblem2d:
    """The problem `name` on n x n nodes with n_steps steps to t_end.

    reynolds: the cavity's Reynolds number (default 100); resolution: the cavity solver's cells per side (default n - 1: the output grid itself, so the
    velocity's central-difference divergence is round-off at any n).
    """
    if name not in OPERATOR_PROBLEMS_2D:
        raise UsageError(f"name: expected one of {sorted(OPERATOR_PROBLEMS_2D)}, got {name!r}")
    n = check_positive_int(n, "n")
    if n < 8:
        raise UsageError(f"n: expected at least 8 nodes per side, got {n}")
    check_positive_int(n_steps, "n_steps")
    if not (isinstance(t_end, (int, float)) and t_end > 0):
        raise UsageError(f"t_end: expected a positive number, got {t_end!r}")
    h = 1.0 / (n - 1)
    if name == "cavity":
        parameters = dict(CAVITY)
        if resolution is not None:
            parameters["resolution"] = check_positive_int(resolution, "resolution")
        if reynolds is not None:
            if isinstance(reynolds, bool) or not (
                isinstance(reynolds, (int, float)) and math.isfinite(reynolds) and reynolds > 0
            ):
                raise UsageError(f"reynolds: expected a positive number, got {reynolds!r}")
            parameters["reynolds"] = float(reynolds)
        return OperatorProblem2d(
            name,
            OPERATOR_PROBLEMS_2D[name],
            n,
            n_steps,
            float(t_end),
            channels=2,
            history=1,
            condition=dirichlet2d(),
            sampler=_sample_cavity,
            dirichlet_data=True,
            parameters=parameters,
        )
    return OperatorProblem2d(
        name,
        OPERATOR_PROBLEMS_2D[name],
        n,
        n_steps,
        float(t_end),
        channels=1,
        history=2,
        condition=neumann2d(h, h),
        sampler=_sample_wave2d,
        dirichlet_data=False,
        parameters=dict(WAVE2D),
    )
