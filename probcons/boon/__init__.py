"""BOON: boundary-corrected Fourier neural operators (Saad et al., ICLR 2023).

The method only: kernel corrections of each Fourier layer for Dirichlet, Neumann and periodic
conditions and the exact output solve (correction, correction2d: all four sides in 2-D), their
training tasks on the one engine (training, training2d). The runner of operator problems is
`probcons.operator_runner` (reached through `probcons.runner.run_problem`); the boundary
conditions live in `probcons.constraints` (shared with the exact update), the operator problems
in `probcons.problems` (operators, operators2d) and the Gaussian BOON ensemble in
`probcons.backbones.boon_ensemble`.
"""

from probcons.boon.correction import (
    BoonFNO1d,
    BoundaryCorrectionError,
    CorrectedFourierLayer,
    boundary_blocks,
    boundary_columns,
)
from probcons.boon.correction2d import BoonFNO2d, CorrectedFourierLayer2d
from probcons.constraints.boundary_condition import BoundaryCondition, dirichlet, neumann, periodic
from probcons.constraints.boundary_condition2d import BoundaryCondition2d, dirichlet2d, neumann2d

__all__ = [
    "BoonFNO1d",
    "BoonFNO2d",
    "BoundaryCondition",
    "BoundaryCondition2d",
    "BoundaryCorrectionError",
    "CorrectedFourierLayer",
    "CorrectedFourierLayer2d",
    "boundary_blocks",
    "boundary_columns",
    "dirichlet",
    "dirichlet2d",
    "neumann",
    "neumann2d",
    "periodic",
]
