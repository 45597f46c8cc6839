"""Stefan problem (GPME with k(u) = 1{u >= u*}): a moving shock at x = alpha sqrt(t).

A plain Pyro model: the backbone's Gaussian prediction is the latent field `u`; conservation of
mass in integral form, sum_i w_i u(t_j, x_i) = U(t_j) + eps_j, is an observed linear-Gaussian site.
`probcons run stefan` conditions `u` on every such site exactly (ProbConserv). Copy this file,
add or change sites, and pass it with `--model`.
"""

import pyro

from probcons.constraints import conservation_constraint, dirichlet_constraint  # noqa: F401
from probcons.inference import GaussianField, observe_constraint


def model(prediction, problem, parameter, noise_std=0.0):
    """prediction: GaussianPrediction on a (t, x) grid; noise_std: the slack sigma_G (0 = exact)."""
    grid = prediction.grid
    u = pyro.sample("u", GaussianField(prediction))
    mass = problem.mass(grid.t, parameter)  # U(t) from the analytic boundary fluxes
    observe_constraint("mass", conservation_constraint(grid, mass, noise_std), u)
    # The exact solution also fixes u(t, 0) = 1. To add that boundary condition as a second
    # exact site, uncomment:
    # observe_constraint("inflow", dirichlet_constraint(grid, left=1.0), u)
    return u
