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
from probcons.constraints.finite_difference import derivative_weights
from probcons.constraints.linear import LinearConstraint, dense_constraint
from probcons.constraints.quadrature import QUADRATURE_RULES, quadrature_weights

__all__ = [
    "QUADRATURE_RULES",
    "BoundaryCondition",
    "LinearConstraint",
    "conservation_constraint",
    "dense_constraint",
    "derivative_weights",
    "dirichlet_constraint",
    "flux_conservation_constraint",
    "flux_increments",
    "neumann_constraint",
    "periodic_constraint",
    "quadrature_weights",
]
