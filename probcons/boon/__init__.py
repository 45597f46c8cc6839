"""BOON: boundary-corrected Fourier neural operators (Saad et al., ICLR 2023).

Kernel corrections of each Fourier layer for Dirichlet, Neumann and periodic conditions, the
exact output solve, operator-learning problems with their own data, training and a runner.
"""

from probcons.boon.conditions import BoundaryCondition, dirichlet, neumann, periodic
from probcons.boon.correction import (
    BoonFNO1d,
    BoundaryCorrectionError,
    CorrectedFourierLayer,
    boundary_blocks,
    boundary_columns,
)
from probcons.boon.ensemble import BoonEnsemble, conserve, heat_constraints

__all__ = [
    "BoonEnsemble",
    "BoonFNO1d",
    "BoundaryCondition",
    "BoundaryCorrectionError",
    "CorrectedFourierLayer",
    "boundary_blocks",
    "boundary_columns",
    "conserve",
    "heat_constraints",
    "dirichlet",
    "neumann",
    "periodic",
]
