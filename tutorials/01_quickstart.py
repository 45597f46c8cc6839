# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Quickstart: physics as observed sites of your own Pyro model
#
# A concentration profile u(x) on [0, 1] is measured by a handful of noisy sensors. We also
# know two physical facts exactly:
#
# * the **total mass** `integral_0^1 u(x) dx = M` (conservation), and
# * the **wall value** `u(0) = 1` (a Dirichlet condition).
#
# We write a plain Pyro model: a Gaussian-process prior over the field on a grid, a sensor
# site, and one observed site per physical fact. probcons reads the observed sites, finds that
# each one is linear in the field, and returns the **exact** Gaussian posterior. Samples of it
# satisfy both facts to machine precision.
#
# Settings: `PROBCONS_TUTORIAL_SMALL=1` shrinks the sizes; figures and the report go to
# `PROBCONS_TUTORIAL_OUT` (default `tutorials/figures/`).

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch

from probcons.constraints import conservation_constraint, dirichlet_constraint
from probcons.grid import Grid
from probcons.inference import ConstrainedPredictive, exact_posterior, observe_constraint
from probcons.report import to_inference_data, write_inference_data, write_report

SMALL = os.environ.get("PROBCONS_TUTORIAL_SMALL", "0") not in ("", "0")
OUT = Path(
    os.environ.get("PROBCONS_TUTORIAL_OUT")
    or ("tutorials/figures" if Path("tutorials").is_dir() else "figures")
)
OUT.mkdir(parents=True, exist_ok=True)

N_X = 41 if SMALL else 101  # grid points
N_DRAWS = 200 if SMALL else 1000  # posterior samples
EXACT = 1e-10  # what "holds exactly" means below (float64 round-off is ~1e-15)

# %% [markdown]
# ## The truth, the grid and the physical facts
#
# The (here known) true profile is `u(x) = exp(-2 x) + 0.3 sin(3 pi x)`; its mass is
# `M = (1 - exp(-2)) / 2 + 0.2 / pi`, and `u(0) = 1`. A probcons `Grid` is a (t, x) grid;
# a purely spatial field is a grid with a single time.

# %%
x = torch.linspace(0.0, 1.0, N_X, dtype=torch.float64)
grid = Grid(torch.zeros(1, dtype=torch.float64), x)  # one time slice, N_X points


def true_profile(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-2 * x) + 0.3 * torch.sin(3 * math.pi * x)


truth = true_profile(x)
mass = torch.tensor([(1 - math.exp(-2)) / 2 + 0.2 / math.pi], dtype=torch.float64)  # (n_t,)
wall = 1.0

# Trapezoid weights of the grid: sum_i w_i u_i approximates the integral.
weights = grid.trapezoid_weights()
print(f"grid: {grid}")
print(
    f"exact mass M = {float(mass):.6f}; trapezoid mass of the truth = {float(weights @ truth):.6f}"
)
print("(the difference is the quadrature error of the grid; the constraint uses the exact M)")

# %% [markdown]
# ## Sensors and the GP prior
#
# Six sensors at grid nodes, with Gaussian noise of standard deviation 0.05. The prior is a
# zero-mean GP with a hand-built squared-exponential kernel evaluated on the grid.

# %%
SENSOR_NOISE = 0.05
LENGTHSCALE, AMPLITUDE, JITTER = 0.15, 1.0, 1e-8

generator = torch.Generator().manual_seed(0)
sensor_index = torch.linspace(0.15, 0.95, 6, dtype=torch.float64).mul(N_X - 1).round().long()
readings = truth[sensor_index] + SENSOR_NOISE * torch.randn(
    len(sensor_index), generator=generator, dtype=torch.float64
)


def squared_exponential(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(a, b) = s^2 exp(-(a - b)^2 / (2 l^2)), (len(a), len(b))."""
    return AMPLITUDE**2 * torch.exp(-0.5 * (a[:, None] - b[None, :]) ** 2 / LENGTHSCALE**2)


prior_mean = torch.zeros(N_X, dtype=torch.float64)
prior_covariance = squared_exponential(x, x) + JITTER * torch.eye(N_X, dtype=torch.float64)

# %% [markdown]
# ## The Pyro model
#
# Nothing in it is specific to probcons except `observe_constraint`, which is
# `pyro.sample(name, G u + eps, obs=b)` for a `LinearConstraint` (G, b). The sensor site is an
# ordinary `Normal` whose mean is linear in `u`: probcons finds its G by autograd and checks the
# linearity. probcons fields are (n_t, n_x) arrays, so the model views `u` as one: `field`.

# %%
conservation = conservation_constraint(grid, mass)  # sum_i w_i u_i = M, exactly (sigma_G = 0)
dirichlet = dirichlet_constraint(grid, left=wall)  # u_0 = 1, exactly


def model(readings: torch.Tensor, physics: bool = True) -> torch.Tensor:
    u = pyro.sample("u", dist.MultivariateNormal(prior_mean, covariance_matrix=prior_covariance))
    field = u.reshape(grid.shape)  # (1, N_X)
    sensed = field[0, sensor_index]
    pyro.sample("sensors", dist.Normal(sensed, SENSOR_NOISE).to_event(1), obs=readings)
    if physics:
        observe_constraint("mass", conservation, field)
        observe_constraint("wall", dirichlet, field)
    return u


# %% [markdown]
# ## Exact posteriors
#
# `exact_posterior(model, *args)` traces the model and returns a `GaussianPrediction`: the
# posterior of the latent site `u` given every observed site after it. Without the physics
# sites this is ordinary GP regression.

# %%
gp_only = exact_posterior(model, readings, physics=False)
with_physics = exact_posterior(model, readings, physics=True)

for name, posterior in (("GP regression", gp_only), ("GP + physics", with_physics)):
    mean = posterior.mean[0]
    error = float(((mean - truth) ** 2).mean())
    print(
        f"{name:14s} MSE {error:.2e}   mass residual {float(weights @ mean - mass):+.2e}"
        f"   u(0) - 1 = {float(mean[0] - wall):+.2e}"
    )

# Conditioning on more information never increases a marginal variance.
assert bool((with_physics.variance <= gp_only.variance + EXACT).all())
# The posterior mean meets both facts exactly.
assert float(conservation.residual(with_physics.mean).abs().max()) < EXACT
assert float(dirichlet.residual(with_physics.mean).abs().max()) < EXACT

# %% [markdown]
# ## Sampling: `ConstrainedPredictive`
#
# Like `pyro.infer.Predictive`, but it draws from the exact posterior. Draws are pathwise
# (`u~ = u + Sigma G^T S^-1 (b - G u - eps)`), so the singular posterior of an exact constraint
# needs no Cholesky factor. It also returns `G u` of every draw for each `observe_constraint`
# site, which makes the check one line.

# %%
draws = ConstrainedPredictive(model, num_samples=N_DRAWS)(
    readings, generator=torch.Generator().manual_seed(1)
)
print({name: tuple(value.shape) for name, value in draws.items()})

mass_error = float((draws["mass"] - mass).abs().max())
wall_error = float((draws["wall"] - wall).abs().max())
print(f"max |mass - M| over draws: {mass_error:.1e};  max |u(0) - 1|: {wall_error:.1e}")
assert mass_error < EXACT and wall_error < EXACT
# Independent check, with our own quadrature rather than the site values.
assert float((draws["u"] @ weights - mass).abs().max()) < EXACT

gp_draws = ConstrainedPredictive(model, num_samples=N_DRAWS)(
    readings, physics=False, generator=torch.Generator().manual_seed(2)
)
print(f"GP-regression draws: mass spread (std) {float((gp_draws['u'] @ weights).std()):.3f}")

# %%
figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
for axis, samples, posterior, title in (
    (axes[0], gp_draws["u"], gp_only, "GP regression"),
    (axes[1], draws["u"], with_physics, "GP + mass + wall value (exact)"),
):
    lower, upper = torch.quantile(samples, torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
    axis.fill_between(x, lower, upper, alpha=0.25, label="90 % band")
    axis.plot(x, samples[:5].T, color="C0", lw=0.6, alpha=0.6)
    axis.plot(x, posterior.mean[0], color="C0", label="posterior mean")
    axis.plot(x, truth, "k--", label="truth")
    axis.plot(x[sensor_index], readings, "o", color="C3", label="sensors")
    axis.set(title=title, xlabel="x", ylabel="u")
axes[0].legend()
figure.savefig(OUT / "01_quickstart_posteriors.png", dpi=100)

# %% [markdown]
# ## The calibration report
#
# `to_inference_data` turns Pyro samples (a dict of draws, or an `az.from_pyro` object) plus the
# truth into the same ArviZ schema that `probcons run` writes; `write_inference_data` stores it
# as `<run_dir>/<method>.nc`; `write_report` compares the methods of a run directory.

# %%
run_dir = OUT / "01_quickstart_run"
run_dir.mkdir(parents=True, exist_ok=True)
for method, samples, posterior in (
    ("unconstrained", gp_draws, gp_only),
    ("probconserv", draws, with_physics),
):
    idata = to_inference_data(
        samples,
        truth[None],  # (n_t, n_x)
        grid,
        variable="u",
        method=method,
        problem="quickstart",
        backbone="gp-sensors",
        mass=mass,
        mean=posterior.mean,
        variance=posterior.variance,
        sigma_G=0.0,
    )
    write_inference_data(idata, run_dir)

written = write_report([run_dir], out=OUT / "01_quickstart_report.html")
print("report:", written["html"])
print(written["markdown"].read_text().split("## Reliability")[0])
assert written["html"].is_file() and written["markdown"].is_file()
