"""Porous-medium equation with ProbConserv and the inflow flux as a nonlinear site.

The model of models/pme.py plus the flux through x = 0, F = -u^m u_x = (m t)^(1/m) (from the
PME's exact solution u = (m (t - x)_+)^(1/m)), written with the second-order one-sided
difference u_x(t, 0) ~ (-3 u_0 + 4 u_1 - u_2) / (2 h). The site is nonlinear in u, so
`probcons run pme --model pme-flux` conditions on it by iterated linearisation (Gauss-Newton to
the constrained mode, Laplace posterior there, each draw projected onto the site:
probcons.inference.nonlinear). At t = 0 both sides are 0 (no information; the root u_0 = 0
is where the linearisation degenerates), so the site reads t > 0 only.
"""

import pyro
import pyro.distributions as dist

from probcons.constraints import conservation_constraint
from probcons.inference import GaussianField, observe_constraint


def inflow_flux(u, x, m):
    """-u^m u_x at x = 0 per time slice, (n_t,), from u (n_t, n_x) on a uniform x grid."""
    h = float(x[1] - x[0])
    slope = (-3.0 * u[..., 0] + 4.0 * u[..., 1] - u[..., 2]) / (2.0 * h)
    return -(u[..., 0] ** m) * slope


def model(prediction, problem, parameter, noise_std=0.0):
    """prediction: GaussianPrediction on a (t, x) grid; noise_std: the slack sigma_G (0 = exact)."""
    grid = prediction.grid
    u = pyro.sample("u", GaussianField(prediction))
    mass = problem.mass(grid.t, parameter)  # U(t) from the analytic boundary fluxes
    observe_constraint("mass", conservation_constraint(grid, mass, noise_std), u)
    observed = (parameter * grid.t[1:]) ** (1.0 / parameter)  # (m t)^(1/m), t > 0
    flux = inflow_flux(u[..., 1:, :], grid.x, parameter)
    pyro.sample("inflow_flux", dist.Delta(flux, event_dim=1), obs=observed)
    return u
