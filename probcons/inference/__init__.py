"""Pyro integration: constraint sites in plain Pyro models and their exact posteriors."""

from probcons.inference.distributions import ConstraintObservation, GaussianField
from probcons.inference.exact import ConstrainedPredictive, exact_posterior, observe_constraint

__all__ = [
    "ConstrainedPredictive",
    "ConstraintObservation",
    "GaussianField",
    "exact_posterior",
    "observe_constraint",
]
