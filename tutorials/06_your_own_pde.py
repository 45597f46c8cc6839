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
# # 6. Your own PDE: viscous Burgers, a GP surrogate, `probcons condition`
#
# probcons ships a few problems; yours is not among them. This tutorial takes a PDE the library
# does not ship, end to end:
#
# 1. viscous Burgers `u_t + (u^2 / 2)_x = nu u_xx` on the periodic interval [0, 1), solved by
#    a ten-line finite-volume scheme of our own,
# 2. a surrogate: a GP fitted to a few noisy observations of that solution
#    (`GPBackbone().fit(t, x, u).predict(grid)`),
# 3. the physics as a plain Pyro model: conservation in flux form (no flux through a periodic
#    domain, so the mass stays U(0)) and the periodic boundary condition `u(t, 0) = u(t, 1)`,
#    applied exactly with `ExactConditioning`,
# 4. the surrogate's draws written to a netCDF file with plain xarray, as any other code
#    would, and conditioned by the command line: `probcons condition draws.nc --model
#    model.py --out run/`, whose metrics and report we read back.

# %%
import json
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import xarray as xr

from probcons import ExactConditioning, Grid
from probcons.backbones.gp import GPBackbone
from probcons.cli import main as probcons_command
from probcons.runner import load_model

SMALL = os.environ.get("PROBCONS_TUTORIAL_SMALL", "0") not in ("", "0")
OUT = Path(
    os.environ.get("PROBCONS_TUTORIAL_OUT")
    or ("tutorials/figures" if Path("tutorials").is_dir() else "figures")
)
OUT.mkdir(parents=True, exist_ok=True)

N_T, N_CELLS = (11, 32) if SMALL else (21, 64)
N_OBSERVATIONS = 60 if SMALL else 150
N_DRAWS = 100 if SMALL else 300
GP_ITERATIONS = 60 if SMALL else 150
VISCOSITY, CFL, NOISE = 0.01, 0.4, 0.01
EXACT = 1e-10
torch.manual_seed(0)

# %% [markdown]
# ## Your solver
#
# Finite volumes on n cells of width dx = 1/n: node i holds the cell average of
# `[x_i - dx/2, x_i + dx/2]`, and
#
#     d/dt u_i = -(F_{i+1/2} - F_{i-1/2}) / dx,
#     F_{i+1/2} = (u_i^2 + u_{i+1}^2) / 4 - max(|u_i|, |u_{i+1}|) (u_{i+1} - u_i) / 2
#                 - nu (u_{i+1} - u_i) / dx,
#
# the Rusanov flux plus central diffusion, periodic (`torch.roll`), forward Euler at a CFL
# step. The fluxes telescope, so `dx sum_i u_i` is the same after every step to round-off:
# the discrete conservation law the constraint will state.
#
# The grid stores the repeated end point `x_n = 1` too (`u_n = u_0`), so that the periodic
# boundary condition is a row `u(t, x_0) - u(t, x_n) = 0` and the trapezoid rule over [0, 1]
# (halves at both ends) is exactly `dx sum_{i<n} u_i`.


# %%
def burgers_rhs(u: torch.Tensor, dx: float) -> torch.Tensor:
    right = torch.roll(u, -1)
    speed = torch.maximum(u.abs(), right.abs())
    flux = (u**2 + right**2) / 4 - speed * (right - u) / 2 - VISCOSITY * (right - u) / dx
    return -(flux - torch.roll(flux, 1)) / dx


def solve_burgers(u0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """u at `times` (n_t, n) from u0 (n,) on the periodic cells of width 1/n."""
    dx = 1.0 / len(u0)
    u, now, out = u0.clone(), float(times[0]), [u0.clone()]
    for target in times[1:].tolist():
        while now < target - 1e-12:
            dt = min(CFL / (float(u.abs().max()) / dx + 2 * VISCOSITY / dx**2), target - now)
            u, now = u + dt * burgers_rhs(u, dx), now + dt
        out.append(u.clone())
    return torch.stack(out)


cells = torch.arange(N_CELLS, dtype=torch.float64) / N_CELLS
t = torch.linspace(0.0, 1.0, N_T, dtype=torch.float64)
x = torch.cat([cells, torch.ones(1, dtype=torch.float64)])  # x_0 ... x_n = 1
grid = Grid(t, x)
u0 = 0.5 + 0.4 * torch.sin(2 * math.pi * cells)
periodic_solution = solve_burgers(u0, t)  # (n_t, n)
solution = torch.cat([periodic_solution, periodic_solution[:, :1]], dim=1)  # (n_t, n + 1)
MASS = float(u0.sum()) / N_CELLS  # U(0) = dx sum_i u0_i (0.5 up to round-off)

solver_mass = torch.trapezoid(solution, x, dim=1)  # numpy/torch's own rule, not probcons'
print(grid)
print(f"solver: max |mass(t) - U(0)| = {float((solver_mass - MASS).abs().max()):.1e}")
assert float((solver_mass - MASS).abs().max()) < EXACT

# %% [markdown]
# ## The physics as a Pyro model file
#
# The model is a plain Pyro function of the prediction. Conservation in flux form:
# `flux_conservation_constraint(grid, U0, flux_in, flux_out)` states
# `w . u(t_j) = U0 + int_0^{t_j} (F_in - F_out) dt`; on a periodic domain nothing flows in or
# out, so both fluxes are 0. The boundary condition is `periodic_constraint(grid)`. We write
# it to a file, because the command line reads the model from one; the same file serves the
# Python API (`probcons.runner.load_model`). The signature `model(prediction)` is the one
# `probcons condition` calls.

# %%
MODEL_SOURCE = f"""
import pyro

from probcons import (
    GaussianField,
    flux_conservation_constraint,
    observe_constraint,
    periodic_constraint,
)

INITIAL_MASS = {MASS!r}  # dx sum_i u0_i of the solver's initial condition


def model(prediction):
    grid = prediction.grid
    u = pyro.sample("u", GaussianField(prediction))
    rows = flux_conservation_constraint(grid, INITIAL_MASS, flux_in=0.0, flux_out=0.0)
    observe_constraint("mass", rows, u)
    observe_constraint("periodic", periodic_constraint(grid), u)
    return u
"""
model_path = OUT / "06_burgers_model.py"
model_path.write_text(MODEL_SOURCE)
model = load_model(model_path)

# %% [markdown]
# ## A surrogate: a GP on a few noisy observations
#
# The GP sees `N_OBSERVATIONS` noisy values of the solution at random grid points. Its kernel
# knows neither that mass is conserved nor that the domain is periodic.

# %%
generator = torch.Generator().manual_seed(1)
time_index = torch.randint(0, N_T, (N_OBSERVATIONS,), generator=generator)
space_index = torch.randint(0, N_CELLS, (N_OBSERVATIONS,), generator=generator)
observed = solution[time_index, space_index]
observed = observed + NOISE * torch.randn(N_OBSERVATIONS, generator=generator, dtype=torch.float64)
backbone = GPBackbone(iterations=GP_ITERATIONS).fit(
    t[time_index], x[space_index], observed, t_range=(0.0, 1.0), x_range=(0.0, 1.0)
)
prior = backbone.predict(grid)  # a GaussianPrediction on the grid
print(prior)

# %% [markdown]
# ## Exact conditioning in Python
#
# `ExactConditioning(model)` traces the model once, reads the rows of its two sites and
# returns the exact posterior (ProbConserv); `method="hardc"` projects the mean instead.
# Every posterior draw satisfies both sites to round-off.

# %%
conditioning = ExactConditioning(model)
posterior = conditioning.posterior(prior)
hardc = ExactConditioning(model, method="hardc").posterior(prior)
rows = conditioning.constraint(prior)  # the stacked LinearConstraint the model asked for
draws = posterior.rsample(torch.Size([N_DRAWS]))


def mse(field: torch.Tensor) -> float:
    return float((field - solution).square().mean())


prior_residual = float(rows.residual(prior.mean).abs().max())
draw_residual = float(rows.residual(draws).abs().max())
print(f"rows: {rows}")
print(
    f"MSE: GP {mse(prior.mean):.3e}, HardC {mse(hardc.mean):.3e}, ProbConserv {mse(posterior.mean):.3e}"
)
print(
    f"max |G u - b|: GP mean {prior_residual:.1e}, {N_DRAWS} ProbConserv draws {draw_residual:.1e}"
)
assert draw_residual < EXACT
assert mse(posterior.mean) < mse(prior.mean)

# %% [markdown]
# ## The same with the command line, from a file any code can write
#
# Often the surrogate lives in another program that only hands over draws. Here we write the
# GP's (unconstrained) draws and the truth with plain xarray, in ArviZ's layout: a group
# `posterior_predictive` with `u (chain, draw, t, x)` on coordinates t and x, and
# `observed_data` with the truth. `probcons condition` turns the draws into a Gaussian
# (sample mean, low-rank sample covariance), applies the model's sites for each method and
# writes the `probcons run` folder: one `<method>.nc` per method, `metrics.json` and the
# report. `--sample-dtype float64` keeps the draws exact in the file.

# %%
prior_draws = prior.sample(N_DRAWS, torch.Generator().manual_seed(2)).numpy()
coords = {"chain": [0], "draw": np.arange(N_DRAWS), "t": t.numpy(), "x": x.numpy()}
draws_path = OUT / "06_burgers_draws.nc"
xr.Dataset({"u": (("chain", "draw", "t", "x"), prior_draws[None])}, coords=coords).to_netcdf(
    draws_path, group="posterior_predictive", engine="h5netcdf"
)
xr.Dataset(
    {"u": (("t", "x"), solution.numpy())}, coords={"t": t.numpy(), "x": x.numpy()}
).to_netcdf(draws_path, group="observed_data", mode="a", engine="h5netcdf")

run_dir = OUT / "06_burgers_run"
status = probcons_command(
    [
        "condition",
        str(draws_path),
        "--model",
        str(model_path),
        "--out",
        str(run_dir),
        "--sample-dtype",
        "float64",
        "--draws",
        str(N_DRAWS),
        "--overwrite",
    ]
)
assert status == 0
print(sorted(path.name for path in run_dir.iterdir()))

# %% [markdown]
# ## Reading the run back
#
# `metrics.json` holds the mean (and standard error) over functions of each metric per method;
# `ce` is the constraint error of the posterior mean, `ce_draws_max` the largest residual of
# the stored draws. We also check the stored ProbConserv draws with numpy alone: the trapezoid
# mass and `u(t, 0) - u(t, 1)`.

# %%
metrics = json.loads((run_dir / "metrics.json").read_text())
for method, values in metrics.items():
    print(
        f"{method:>13}: MSE {values['mse']:.3e}  CRPS {values['crps']:.3e}  "
        f"cov90 {values['coverage_90']:.2f}  CE {values['ce']:.1e}  "
        f"max draw residual {values['ce_draws_max']:.1e}"
    )
with xr.open_dataset(run_dir / "probconserv.nc", group="posterior_predictive") as stored:
    stored_draws = stored["u"].values[0, :, 0]  # (draw, t, x), function 0
mass_error = np.abs(np.trapezoid(stored_draws, x.numpy(), axis=-1) - MASS).max()
periodic_error = np.abs(stored_draws[..., 0] - stored_draws[..., -1]).max()
print(f"stored ProbConserv draws: mass error {mass_error:.1e}, periodic error {periodic_error:.1e}")
print(f"report: {run_dir / 'report.html'}")
assert max(mass_error, periodic_error) < EXACT
assert metrics["probconserv"]["mse"] < metrics["unconstrained"]["mse"]

# %%
j = N_T - 1
figure, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
axes[0].plot(x, solution[j], "k--", label="solver")
for label, p, color in (("GP", prior, "C0"), ("ProbConserv", posterior, "C2")):
    mean, std = p.mean[j], p.stddev[j]
    axes[0].plot(x, mean, color=color, label=label)
    axes[0].fill_between(x, mean - 1.645 * std, mean + 1.645 * std, color=color, alpha=0.2)
axes[0].set(xlabel="x", ylabel="u", title=f"viscous Burgers at t = {float(t[j]):.2f}")
axes[0].legend()
for label, field in (("GP mean", prior.mean), ("ProbConserv mean", posterior.mean)):
    axes[1].plot(t, torch.trapezoid(field, x, dim=1) - MASS, label=label)
axes[1].set(xlabel="t", ylabel="mass(t) - U(0)", title="mass error")
axes[1].legend()
figure.savefig(OUT / "06_your_own_pde.png", dpi=100)
