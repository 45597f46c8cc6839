"""probcons: exact physics constraints on calibrated probabilistic predictions of PDE solutions.

The user API, importable from the top level (loaded on first use, so `import probcons` and
`probcons --help` stay fast):

- data types: `Grid`, `Grid2d` (t, x, y), `Posterior` (the abstract prediction),
  `GaussianPrediction`, `GaussianMixture`, and the covariance structures `DiagonalCovariance`,
  `LowRankCovariance`, `BlockCovariance`, `DenseCovariance`;
- your own surrogate: `from_samples`, `from_moments`, `from_dataarray` (and
  `probcons.backbones.gp.GPBackbone().fit(t, x, u)`);
- constraints: `LinearConstraint`, `conservation_constraint` (with `quadrature`),
  `flux_conservation_constraint`, `dirichlet_constraint`, `neumann_constraint`,
  `periodic_constraint`, `dense_constraint`, `BoundaryCondition` (one type for BOON and the
  update); on (t, x, y): `mass_constraint2d`, `dirichlet_constraint2d`, `neumann_constraint2d`,
  `periodic_constraint2d`, `boundary_condition2d_constraint`;
- the update: `condition` (ProbConserv), `project` (HardC);
- Pyro: `GaussianField`, `observe_constraint`, `ExactConditioning`, `exact_posterior`,
  `ConstrainedPredictive`; beyond linear rows: `observe_bounds`, `TruncatedPosterior`,
  `NonlinearSite`, `condition_nonlinear`, `NonlinearPosterior`;
- errors: `ProbconsError`, `UsageError`, `SingularConstraintError`, `ConvergenceError`,
  `ModelError`, `OutputError`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Grid": "probcons.grid",
    "Grid2d": "probcons.grid2d",
    "Posterior": "probcons.posterior",
    "GaussianPrediction": "probcons.prediction",
    "GaussianMixture": "probcons.mixture",
    "Covariance": "probcons.covariance",
    "DiagonalCovariance": "probcons.covariance",
    "LowRankCovariance": "probcons.covariance",
    "BlockCovariance": "probcons.covariance",
    "DenseCovariance": "probcons.covariance",
    "LinearConstraint": "probcons.constraints",
    "BoundaryCondition": "probcons.constraints",
    "conservation_constraint": "probcons.constraints",
    "dirichlet_constraint": "probcons.constraints",
    "neumann_constraint": "probcons.constraints",
    "periodic_constraint": "probcons.constraints",
    "dense_constraint": "probcons.constraints",
    "flux_conservation_constraint": "probcons.constraints",
    "quadrature_weights": "probcons.constraints",
    "mass_constraint2d": "probcons.constraints",
    "dirichlet_constraint2d": "probcons.constraints",
    "neumann_constraint2d": "probcons.constraints",
    "periodic_constraint2d": "probcons.constraints",
    "boundary_condition2d_constraint": "probcons.constraints",
    "from_samples": "probcons.backbones.samples",
    "from_moments": "probcons.backbones.samples",
    "from_dataarray": "probcons.backbones.samples",
    "condition": "probcons.conditioning",
    "project": "probcons.conditioning",
    "GaussianField": "probcons.inference",
    "observe_constraint": "probcons.inference",
    "ExactConditioning": "probcons.inference",
    "exact_posterior": "probcons.inference",
    "ConstrainedPredictive": "probcons.inference",
    "observe_bounds": "probcons.inference",
    "TruncatedPosterior": "probcons.inference",
    "NonlinearSite": "probcons.inference",
    "condition_nonlinear": "probcons.inference",
    "NonlinearPosterior": "probcons.inference",
    "ProbconsError": "probcons.errors",
    "UsageError": "probcons.errors",
    "SingularConstraintError": "probcons.errors",
    "ConvergenceError": "probcons.errors",
    "ModelError": "probcons.errors",
    "OutputError": "probcons.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import the public names lazily (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'probcons' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
