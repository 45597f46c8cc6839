"""Porous-medium equation with ProbConserv and non-negative u.

The model of models/pme.py plus one bound site u >= 0 at every grid point: the exact posterior
of the conservation site, truncated to u >= 0. `probcons run pme --model pme-bounded` draws from
it by exact Hamiltonian Monte Carlo (probcons.inference.bounds): every draw is non-negative and
conserves mass exactly; its mean and variance are Monte Carlo estimates.
"""

import pyro

from probcons.constraints import conservation_constraint
from probcons.inference import GaussianField, observe_bounds, observe_constraint


def model(prediction, problem, parameter, noise_std=0.0):
    """prediction: GaussianPrediction on a (t, x) grid; noise_std: the slack sigma_G (0 = exact)."""
    grid = prediction.grid
    u = pyro.sample("u", GaussianField(prediction))
    mass = problem.mass(grid.t, parameter)  # U(t) from the analytic boundary fluxes
    observe_constraint("mass", conservation_constraint(grid, mass, noise_std), u)
    observe_bounds("non_negative", u, lower=0.0)
    return u
