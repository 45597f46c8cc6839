"""BOON: boundary-corrected Fourier neural operators (Saad et al., ICLR 2023).

Kernel corrections of each Fourier layer for Dirichlet, Neumann and periodic conditions, the
exact output solve, operator-learning problems with their own data, training, a Gaussian
ensemble whose constraints come from a Pyro model file (models/heat-neumann.py, through
ExactConditioning) and a runner writing the common run folder (`<method>.nc`, metrics.json,
report); in 2-D (correction2d, problems2d, training2d) Dirichlet and Neumann conditions on all
four sides.
"""

from probcons.boon.correction import (
    BoonFNO1d,
    BoundaryCorrectionError,
    CorrectedFourierLayer,
    boundary_blocks,
    boundary_columns,
)
from probcons.boon.correction2d import (
    BoonFNO2d,
    BoundaryCondition2d,
    CorrectedFourierLayer2d,
    dirichlet2d,
    neumann2d,
)
from probcons.boon.ensemble import (
    BoonEnsemble,
    conserve,
    heat_constraints,
    model_arguments,
    problem_model,
)
from probcons.constraints.boundary_condition import BoundaryCondition, dirichlet, neumann, periodic

__all__ = [
    "BoonEnsemble",
    "BoonFNO1d",
    "BoonFNO2d",
    "BoundaryCondition2d",
    "CorrectedFourierLayer2d",
    "BoundaryCondition",
    "BoundaryCorrectionError",
    "CorrectedFourierLayer",
    "boundary_blocks",
    "boundary_columns",
    "conserve",
    "heat_constraints",
    "model_arguments",
    "problem_model",
    "dirichlet",
    "dirichlet2d",
    "neumann",
    "neumann2d",
    "periodic",
]
