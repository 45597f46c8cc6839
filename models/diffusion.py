"""Diffusion (GPME with constant k) on a periodic domain: the mass stays zero.

A plain Pyro model: the backbone's Gaussian prediction is the latent field `u`; conservation of
mass in integral form, sum_i w_i u(t_j, x_i) = U(t_j) + eps_j, is an observed linear-Gaussian site.
`probcons run diffusion` conditions `u` on every such site exactly (ProbConserv). Copy this file,
add or change sites, and pass it with `--model`.
"""

import pyro

from probcons.constraints import conservation_constraint
from probcons.inference import GaussianField, observe_constraint


def model(prediction, problem, parameter, noise_std=0.0):
    """prediction: GaussianPrediction on a (t, x) grid; noise_std: the slack sigma_G (0 = exact)."""
    grid = prediction.grid
    u = pyro.sample("u", GaussianField(prediction))
    mass = problem.mass(grid.t, parameter)  # U(t) from the analytic boundary fluxes
    observe_constraint("mass", conservation_constraint(grid, mass, noise_std), u)
    return u
