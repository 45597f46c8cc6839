"""Pyro integration: constraint sites in plain Pyro models and their exact posteriors."""

from probcons.inference.distributions import ConstraintObservation, GaussianField
from probcons.inference.exact import (
    ConstrainedPredictive,
    ConstraintCollector,
    ConstraintSites,
    ExactConditioning,
    exact_posterior,
    observe_constraint,
)

__all__ = [
    "ConstrainedPredictive",
    "ConstraintCollector",
    "ConstraintObservation",
    "ConstraintSites",
    "ExactConditioning",
    "GaussianField",
    "exact_posterior",
    "observe_constraint",
]
