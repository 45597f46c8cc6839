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
# # 5. Bring your own data: a non-uniform grid from your own solver
#
# You have a solver of your own, on a grid of your own, and a cheap probabilistic surrogate of
# it. This tutorial shows how to put the physics your solver obeys into the surrogate:
#
# 1. a finite-volume heat solver on a **stretched** x grid (fine near a heated wall),
# 2. its conservation law written as a probcons constraint on that grid,
# 3. a noisy Gaussian prediction (the "surrogate") conditioned on it,
# 4. checks: the constraint holds exactly, and the posterior's error matches its variance.
#
# The problem: `u_t = (k u_x)_x` on [0, 1], heat flowing in at the left wall at the rate
# `q(t) = q0 t`, an insulated right end, `u(0, x) = 1 + 0.5 cos(pi x)`.

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from probcons import metrics
from probcons.constraints import conservation_constraint, neumann_constraint
from probcons.covariance import BlockCovariance
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction

SMALL = os.environ.get("PROBCONS_TUTORIAL_SMALL", "0") not in ("", "0")
OUT = Path(
    os.environ.get("PROBCONS_TUTORIAL_OUT")
    or ("tutorials/figures" if Path("tutorials").is_dir() else "figures")
)
OUT.mkdir(parents=True, exist_ok=True)

N_T, N_X = (21, 41) if SMALL else (51, 81)
N_REALISATIONS = 20 if SMALL else 50  # independent surrogate errors, for the statistics
DIFFUSIVITY, INFLOW_RATE = 0.02, 1.0  # k, q0
TIME_STEP = 1e-3
EXACT = 1e-10

# %% [markdown]
# ## Your grid and your solver
#
# The grid is `x_i = s_i^2`, s uniform on [0, 1]: spacing 1/(n-1)^2 at the heated wall, about
# 2/(n-1) at the far end. A probcons `Grid` takes any strictly increasing t and x.
#
# The solver is vertex-centred finite volumes: node i owns the control volume between the
# midpoints to its neighbours, of width `w_i = (x_{i+1} - x_{i-1}) / 2` (half cells at the
# ends), and
#
#     d/dt (w_i u_i) = F_{i-1/2} - F_{i+1/2},   F_{i+1/2} = -k (u_{i+1} - u_i) / (x_{i+1} - x_i),
#
# with `F_{-1/2} = q(t)` (inflow) and `F_{n-1/2} = 0` (insulated). Summing over i, the interior
# fluxes cancel: `d/dt sum_i w_i u_i = q(t)`. Those control-volume widths are exactly the
# trapezoid weights of the grid, so the solver conserves the trapezoid mass, and
# Crank-Nicolson in time keeps that to round-off.

# %%
s = torch.linspace(0.0, 1.0, N_X, dtype=torch.float64)
x = s**2
t = torch.linspace(0.0, 1.0, N_T, dtype=torch.float64)
grid = Grid(t, x)
weights = grid.trapezoid_weights()

# The control volumes, computed independently from the midpoints, are the trapezoid weights.
midpoints = torch.cat([x[:1], (x[1:] + x[:-1]) / 2, x[-1:]])
assert torch.allclose(midpoints[1:] - midpoints[:-1], weights, rtol=0, atol=1e-15)
print(f"{grid}; spacing from {float(x[1] - x[0]):.1e} to {float(x[-1] - x[-2]):.1e}")


def inflow(time: float) -> float:
    return INFLOW_RATE * time


def solve_heat(u0: torch.Tensor, x: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Vertex-centred finite volumes + Crank-Nicolson; returns u at `times`, (n_t, n_x)."""
    widths = Grid(times[:1], x).trapezoid_weights()
    conductance = DIFFUSIVITY / (x[1:] - x[:-1])  # k / dx_{i+1/2}
    stiffness = torch.zeros(len(x), len(x), dtype=torch.float64)  # A with W du/dt = A u + q e_0
    index = torch.arange(len(x) - 1)
    stiffness[index, index] -= conductance
    stiffness[index + 1, index + 1] -= conductance
    stiffness[index, index + 1] += conductance
    stiffness[index + 1, index] += conductance
    mass_matrix = torch.diag(widths)
    inflow_vector = torch.zeros(len(x), dtype=torch.float64)
    inflow_vector[0] = 1.0
    out = torch.empty(len(times), len(x), dtype=torch.float64)
    u, now = u0.clone(), float(times[0])
    out[0] = u
    for j in range(1, len(times)):
        steps = max(1, math.ceil((float(times[j]) - now) / TIME_STEP - 1e-9))
        dt = (float(times[j]) - now) / steps
        implicit = mass_matrix - 0.5 * dt * stiffness
        explicit = mass_matrix + 0.5 * dt * stiffness
        for _ in range(steps):
            forcing = 0.5 * dt * (inflow(now) + inflow(now + dt)) * inflow_vector
            u = torch.linalg.solve(implicit, explicit @ u + forcing)
            now += dt
        out[j] = u
    return out


u0 = 1 + 0.5 * torch.cos(math.pi * x)
solution = solve_heat(u0, x, t)  # (n_t, n_x): "your solver's output"

# %% [markdown]
# ## The constraint on your grid
#
# The mass budget is the solver's: initial trapezoid mass plus the heat that came in,
# `U(t) = sum_i w_i u0_i + q0 t^2 / 2`. `conservation_constraint(grid, U)` uses the grid's
# trapezoid weights, so it is the law the solver obeys. Uniform weights would not be.

# %%
budget = weights @ u0 + INFLOW_RATE * t**2 / 2  # (n_t,)
conservation = conservation_constraint(grid, budget)
solver_error = float(conservation.residual(solution).abs().max())
naive = solution.mean(dim=1) * (x[-1] - x[0])  # "mean times length": wrong on this grid
print(f"solver: max |sum_i w_i u_i - U(t)| = {solver_error:.1e}")
print(f"uniform weights instead: max error {float((naive - budget).abs().max()):.2e}")
print(
    f"torch.trapezoid agrees with the grid's weights: "
    f"{float((torch.trapezoid(solution, x, dim=1) - solution @ weights).abs().max()):.1e}"
)
assert solver_error < EXACT
assert float((torch.trapezoid(solution, x, dim=1) - solution @ weights).abs().max()) < EXACT

# %% [markdown]
# The insulated end is a second, weaker fact: the one-sided second-order stencil on the last
# three (non-uniform) nodes, `neumann_constraint(grid, right=0.0)`, sees u_x(1) = 0 only up to
# the solver's discretisation error, so we give it a slack `sigma_G` of that size instead of
# making it exact.

# %%
insulated_exact = neumann_constraint(grid, right=0.0)
solver_slope = insulated_exact.residual(solution).abs().max()
NEUMANN_SLACK = max(float(solver_slope), 1e-3)
insulated = neumann_constraint(grid, right=0.0, noise_std=NEUMANN_SLACK)
print(f"solver's one-sided u_x at x = 1: up to {float(solver_slope):.1e}")
print(f"slack of the insulated-end row: sigma_G = {NEUMANN_SLACK:.1e}")

# %% [markdown]
# ## A noisy Gaussian prediction
#
# A surrogate of the solver returns, per time slice, a mean and a covariance over x. We mimic
# one whose error is a smooth Gaussian process in physical x (lengthscale 0.15, std 0.05, a
# small independent part), and whose covariance says exactly that: a calibrated surrogate.
# Each time slice is independent, so the covariance is a `BlockCovariance` (n_t blocks of
# n_x x n_x).

# %%
ERROR_STD, LENGTHSCALE, NUGGET = 0.05, 0.15, 1e-3
kernel = ERROR_STD**2 * (
    torch.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / LENGTHSCALE**2)
    + NUGGET * torch.eye(N_X, dtype=torch.float64)
)
covariance = BlockCovariance(kernel.expand(N_T, N_X, N_X).clone())
error_model = GaussianPrediction(torch.zeros(grid.shape, dtype=torch.float64), covariance, grid)
generator = torch.Generator().manual_seed(0)
errors = error_model.sample(N_REALISATIONS, generator)  # (R, n_t, n_x)

predictions = [GaussianPrediction(solution + e, covariance, grid) for e in errors]
print(predictions[0])

# %% [markdown]
# ## Conditioning
#
# `condition` (ProbConserv) takes one constraint or a list; rows with `noise_std = 0` are
# enforced exactly, the others as Gaussian observations. Block covariances are solved per time
# slice, never as one N x N matrix.

# %%
posteriors = [p.condition([conservation, insulated]) for p in predictions]
posterior = posteriors[0]
draws = posterior.sample(200, torch.Generator().manual_seed(1))

mean_residual = metrics.conservation_error(posterior.mean, conservation)
draw_residual = float(conservation.residual(draws).abs().max())
print(f"mass residual: posterior mean {mean_residual:.1e}, 200 draws (max) {draw_residual:.1e}")
prior_slope = float(insulated.residual(predictions[0].mean).abs().max())
posterior_slope = float(insulated.residual(posterior.mean).abs().max())
print(f"u_x(1): prior mean {prior_slope:.2e}, posterior mean {posterior_slope:.2e} (a soft row)")
for p in posteriors:
    assert float(conservation.residual(p.mean).abs().max()) < EXACT
assert draw_residual < EXACT

# %% [markdown]
# ## Does the posterior know its own error?
#
# The solver's field satisfies the conservation rows exactly and the prior is calibrated, so
# conditioning is an exact Bayesian update: the posterior mean's squared error should, on
# average over surrogate realisations, equal the posterior variance, and be smaller than the
# prior's.

# %%
prior_mse = torch.tensor([metrics.mse(p.mean, solution) for p in predictions])
posterior_mse = torch.tensor([metrics.mse(p.mean, solution) for p in posteriors])
prior_variance = float(predictions[0].variance.mean())
posterior_variance = float(posterior.variance.mean())  # the same for every realisation
print(f"prior:     MSE {float(prior_mse.mean()):.3e}   mean variance {prior_variance:.3e}")
print(f"posterior: MSE {float(posterior_mse.mean()):.3e}   mean variance {posterior_variance:.3e}")
ratio = float(posterior_mse.mean()) / posterior_variance
print(f"posterior MSE / posterior variance = {ratio:.2f} (1 for a calibrated posterior)")
assert float(posterior_mse.mean()) < float(prior_mse.mean())
assert 0.75 < ratio < 1.33

# %%
j = N_T - 1
figure, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
axes[0].plot(x, solution[j], "k--", label="solver")
for label, p, color in (("surrogate", predictions[0], "C0"), ("ProbConserv", posterior, "C2")):
    mean, std = p.mean[j], p.stddev[j]
    axes[0].plot(x, mean, color=color, label=label)
    axes[0].fill_between(x, mean - 1.645 * std, mean + 1.645 * std, color=color, alpha=0.2)
axes[0].plot(x, torch.full_like(x, float(axes[0].get_ylim()[0])), "|", color="gray", ms=8)
axes[0].set(xlabel="x (ticks: grid nodes)", ylabel="u", title=f"t = {float(t[j]):.2f}")
axes[0].legend()
axes[1].plot(t, predictions[0].mean @ weights - budget, label="surrogate mean")
axes[1].plot(t, posterior.mean @ weights - budget, label="ProbConserv mean")
axes[1].set(xlabel="t", ylabel="sum_i w_i u_i - U(t)", title="mass error")
axes[1].legend()
figure.savefig(OUT / "05_your_own_grid.png", dpi=100)
