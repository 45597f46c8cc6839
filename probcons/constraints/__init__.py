"""Linear constraints G u = b + eps on space-time grids, kept structured per time slice."""

from probcons.constraints.boundary import (
    dirichlet_constraint,
    neumann_constraint,
    periodic_constraint,
)
from probcons.constraints.boundary_condition import BoundaryCondition
from probcons.constraints.conservation import (
    conservation_constraint,
    flux_conservation_constraint,
    flux_increments,
)
from probcons.constraints.conservation2d import mass_constraint2d, space_quadrature_weights
from probcons.constraints.finite_difference import derivative_weights
from probcons.constraints.linear import LinearConstraint, dense_constraint
from probcons.constraints.quadrature import QUADRATURE_RULES, quadrature_weights
from probcons.constraints.walls2d import (
    boundary_condition2d_constraint,
    dirichlet_constraint2d,
    neumann_constraint2d,
    periodic_constraint2d,
)

__all__ = [
    "QUADRATURE_RULES",
    "BoundaryCondition",
    "LinearConstraint",
    "boundary_condition2d_constraint",
    "conservation_constraint",
    "dense_constraint",
    "derivative_weights",
    "dirichlet_constraint",
    "dirichlet_constraint2d",
    "flux_conservation_constraint",
    "flux_increments",
    "mass_constraint2d",
    "neumann_constraint",
    "neumann_constraint2d",
    "periodic_constraint",
    "periodic_constraint2d",
    "quadrature_weights",
    "space_quadrature_weights",
]
