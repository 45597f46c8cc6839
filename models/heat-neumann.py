"""Heat equation with Neumann ends (BOON's heat-neumann): conserved heat and the flux rows.

A plain Pyro model: the BOON ensemble's Gaussian prediction for one input is the latent field
`u` on the grid (output times, x). Two observed linear sites:
- conservation of heat in integral form, sum_i w_i u(t_j, x_i) = U(t_j) + eps_j, with U from the
  exact boundary fluxes (dU/dt = k u_x(1, t)); eps_j ~ N(0, noise_std^2), 0 = exact;
- the one-sided Neumann rows u_x(t_j, 0) = g_L(t_j), u_x(t_j, 1) = g_R(t_j), exact.
`probcons run heat-neumann --backbone boon-ensemble` conditions `u` on both exactly
(ProbConserv). Copy this file to models/ in your working directory to add or change sites.
"""

import pyro

from probcons.constraints import conservation_constraint, neumann_constraint
from probcons.inference import GaussianField, observe_constraint
from probcons.problems.operators import heat_mass


def model(prediction, problem, parameter, boundary, noise_std=0.0):
    """prediction: Posterior on (problem.times, problem.x); parameter: the sample's w (1,);
    boundary (n_t, 2): [u_x(0, t_j), u_x(1, t_j)]; noise_std: slack of the mass rows."""
    grid = prediction.grid
    u = pyro.sample("u", GaussianField(prediction))
    mass = heat_mass(problem, parameter)[0]  # U(t_j) from the exact boundary fluxes
    observe_constraint("mass", conservation_constraint(grid, mass, noise_std), u)
    order = problem.condition.order  # the stencil BOON solves its boundary nodes with
    flux = neumann_constraint(grid, left=boundary[:, 0], right=boundary[:, 1], order=order)
    observe_constraint("neumann", flux, u)
    return u
