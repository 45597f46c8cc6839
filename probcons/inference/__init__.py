"""Pyro integration: constraint sites in plain Pyro models and their exact posteriors."""

from probcons.inference.bounds import (
    BoundObservation,
    Bounds,
    TruncatedPosterior,
    observe_bounds,
    truncated_draws,
)
from probcons.inference.distributions import ConstraintObservation, GaussianField
from probcons.inference.exact import (
    ConstrainedPredictive,
    ConstraintCollector,
    ConstraintSites,
    ExactConditioning,
    exact_posterior,
    observe_constraint,
)
from probcons.inference.nonlinear import (
    NonlinearPosterior,
    NonlinearSite,
    condition_nonlinear,
    nonlinear_site,
)

__all__ = [
    "BoundObservation",
    "Bounds",
    "ConstrainedPredictive",
    "ConstraintCollector",
    "ConstraintObservation",
    "ConstraintSites",
    "ExactConditioning",
    "GaussianField",
    "NonlinearPosterior",
    "NonlinearSite",
    "TruncatedPosterior",
    "condition_nonlinear",
    "exact_posterior",
    "nonlinear_site",
    "observe_bounds",
    "observe_constraint",
    "truncated_draws",
]
