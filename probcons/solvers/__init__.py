"""Data generators for the operator-learning problems: heat, Burgers, wave, Stokes'
second problem, the 2-D lid-driven cavity and the 2-D wave.

Every solver works in float64 on a batch of initial conditions, (batch, n_x) -> (batch, m, n_x)
at the requested output times, and has a convergence test (tests/solvers/test_solvers.py).
"""

from probcons.solvers.burgers import solve_burgers_dirichlet, solve_burgers_periodic
from probcons.solvers.cavity import (
    cavity_trajectories,
    cavity_vorticity,
    solve_cavity,
    steady_cavity,
)
from probcons.solvers.grf import gaussian_random_field
from probcons.solvers.heat import solve_heat_neumann
from probcons.solvers.neumann import neumann_elimination
from probcons.solvers.stokes import stokes_second_problem
from probcons.solvers.wave import solve_wave_neumann
from probcons.solvers.wave2d import (
    solve_wave2d_neumann,
    wave2d_cosine_series,
    wave2d_trajectories,
)

__all__ = [
    "cavity_trajectories",
    "cavity_vorticity",
    "gaussian_random_field",
    "neumann_elimination",
    "solve_burgers_dirichlet",
    "solve_burgers_periodic",
    "solve_cavity",
    "solve_heat_neumann",
    "solve_wave2d_neumann",
    "solve_wave_neumann",
    "steady_cavity",
    "stokes_second_problem",
    "wave2d_cosine_series",
    "wave2d_trajectories",
]
