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
# # 2. The Stefan problem: conservation moves the shock
#
# The Stefan problem is the "hard" member of the generalized porous-medium family,
# `u_t = d/dx (k(u) u_x)` with `k(u) = 1` if `u >= u*` else 0: the solution has a **moving
# shock** where u drops from u* to 0, at `x = alpha sqrt(t)`. We compare three methods on the
# same backbone prediction:
#
# * **unconstrained**: the backbone as it is;
# * **HardC**: the mean projected onto the conservation constraint (identity covariance),
#   variance unchanged;
# * **ProbConserv**: the exact Gaussian update on conservation of mass,
#   `mu~ = mu + Sigma G^T (G Sigma G^T)^-1 (b - G mu)`.
#
# The backbone is the shipped attentive neural process (ANP) checkpoint when it loads, else a
# per-function Gaussian process; the choice is made at run time and printed.
# `PROBCONS_TUTORIAL_BACKBONE=gp` forces the GP.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from probcons import metrics
from probcons.backbones import get_backbone
from probcons.constraints import conservation_constraint
from probcons.problems import get_problem, sample_contexts

SMALL = os.environ.get("PROBCONS_TUTORIAL_SMALL", "0") not in ("", "0")
OUT = Path(
    os.environ.get("PROBCONS_TUTORIAL_OUT")
    or ("tutorials/figures" if Path("tutorials").is_dir() else "figures")
)
OUT.mkdir(parents=True, exist_ok=True)

N_GRID = 51 if SMALL else 101  # n_t = n_x
N_FUNCTIONS = 3 if SMALL else 10  # independent context sets
N_LATENT = 20 if SMALL else 100  # ANP latent samples per function
N_DRAWS = 200 if SMALL else 500  # posterior draws per function and method
EXACT = 1e-10
METHODS = ("unconstrained", "hardc", "probconserv")

# %% [markdown]
# ## The problem, its exact solution and the constraint
#
# `problem.mass(t, u*)` is `U(t) = integral u(t, x) dx`, known exactly from the boundary flux.
# The constraint has one row per time slice: `sum_i w_i u(t_j, x_i) = U(t_j)`, w the trapezoid
# weights of the grid.

# %%
problem = get_problem("stefan")
u_star = 0.6
grid = problem.grid(N_GRID, N_GRID)
times, positions = grid.mesh()
truth = problem.solution(times, positions, u_star)
constraint = conservation_constraint(grid, problem.mass(grid.t, u_star))
j = grid.time_index(problem.time_of_interest)  # t = 0.05
threshold = problem.front_threshold(u_star)  # a profile has crossed the front where u <= u*/2
true_front = problem.front_position(float(grid.t[j]), u_star)

print(problem.describe())
print(f"grid {grid}; time of interest t = {float(grid.t[j]):.3f}; true front x = {true_front:.4f}")
print(
    "conservation residual of the exact solution on this grid (the shock is not resolved by "
    f"point values): {metrics.conservation_error(truth, constraint):.1e}"
)

# %% [markdown]
# ## The backbone: shipped ANP, else GP
#
# Contexts are 100 exact values (10 time strata x 10 random positions), as in the paper.
# `get_backbone("anp")` loads `models/checkpoints/stefan-anp.pt` on first use; if that fails we
# fall back to the GP. An ANP returns a `GaussianMixture` (one diagonal Gaussian per latent
# sample), the GP a single `GaussianPrediction`; both have `.condition`, `.project`, `.mean`,
# `.variance` and `.sample`.

# %%
contexts = [
    sample_contexts(problem, u_star, torch.Generator().manual_seed(f)) for f in range(N_FUNCTIONS)
]


def gp_backbone():
    return get_backbone("gp", iterations=60 if SMALL else 150)


backbone, backbone_note = None, ""
if os.environ.get("PROBCONS_TUTORIAL_BACKBONE", "anp") == "gp":
    backbone, backbone_note = gp_backbone(), "GP (forced by PROBCONS_TUTORIAL_BACKBONE=gp)"
else:
    try:
        backbone = get_backbone("anp", n_samples=N_LATENT)
        backbone.predict(problem, u_star, contexts[0], grid, torch.Generator().manual_seed(0))
        backbone_note = f"ANP (shipped checkpoint, {N_LATENT} latent samples per function)"
    except (ValueError, OSError, RuntimeError, KeyError) as error:
        backbone = gp_backbone()
        backbone_note = f"GP (the shipped ANP did not load: {error})"
print("backbone:", backbone_note)

# %% [markdown]
# ## Three methods on every function
#
# For each context set: predict, apply the three methods, draw posterior samples, score against
# the exact solution. The scores come from `probcons.metrics`.

# %%
scores = {method: [] for method in METHODS}
fronts = {method: [] for method in METHODS}
example = {}  # function 0's predictions, for the figures

for f, context in enumerate(contexts):
    prediction = backbone.predict(problem, u_star, context, grid, torch.Generator().manual_seed(f))
    predictions = {
        "unconstrained": prediction,
        "hardc": prediction.project(constraint),
        "probconserv": prediction.condition(constraint),
    }
    if f == 0:
        example = predictions
    for offset, (method, posterior) in enumerate(predictions.items()):
        draws = posterior.sample(N_DRAWS, torch.Generator().manual_seed(1000 * f + offset))
        mean, variance = posterior.mean, posterior.variance
        scores[method].append(
            {
                "mse": metrics.mse(mean, truth),
                "mse_t": metrics.mse(mean[j], truth[j]),
                "ce": metrics.conservation_error(mean, constraint),
                "ce_draws": float(constraint.residual(draws).abs().max()),
                "ll": float(metrics.gaussian_log_likelihood(mean, variance, truth).mean()),
                "crps": float(metrics.crps_ensemble(draws, truth).mean()),
                "coverage_90": float(
                    metrics.central_interval_coverage(draws, truth, 0.9).double().mean()
                ),
            }
        )
        fronts[method].append(metrics.front_positions(draws[:, j], grid.x, threshold))

print(f"{'method':14s}" + "".join(f"{k:>22s}" for k in ("MSE", "MSE(t=0.05)", "CE", "CRPS")))
for method in METHODS:
    cells = []
    for key in ("mse", "mse_t", "ce", "crps"):
        mean, error = metrics.mean_and_standard_error([s[key] for s in scores[method]])
        cells.append(f"{mean:.2e} ({error:.1e})")
    print(f"{method:14s}" + "".join(f"{cell:>22s}" for cell in cells))

# %% [markdown]
# What the constraint guarantees, checked on every function:
#
# * ProbConserv: the mean **and every posterior draw** conserve mass exactly;
# * HardC: only the mean does; its draws keep the backbone's (unconstrained) spread.

# %%
for s in scores["probconserv"]:
    assert s["ce"] < EXACT and s["ce_draws"] < EXACT
for s in scores["hardc"]:
    assert s["ce"] < EXACT
hardc_draw_error = max(s["ce_draws"] for s in scores["hardc"])
print(f"largest |G u - b| of a HardC draw: {hardc_draw_error:.1e} (not constrained)")
probconserv_draw_error = max(s["ce_draws"] for s in scores["probconserv"])
print(f"largest |G u - b| of a ProbConserv draw: {probconserv_draw_error:.1e}")

# %% [markdown]
# ## The shock-position posterior
#
# For each posterior draw we take the profile at t = 0.05 and find the first x where it drops
# to u*/2 (`probcons.metrics.front_positions`, linear interpolation between nodes). Pooled over
# functions, this is the posterior of the shock position.

# %%
figure, axis = plt.subplots(figsize=(7, 4), layout="constrained")
edges = torch.linspace(true_front - 0.06, true_front + 0.04, 41)
for method in METHODS:
    pooled = torch.cat(fronts[method])
    lower, upper = torch.quantile(pooled, torch.tensor([0.05, 0.95], dtype=pooled.dtype))
    print(
        f"{method:14s} front {float(pooled.mean()):.4f}, 90 % interval "
        f"[{float(lower):.4f}, {float(upper):.4f}], truth {true_front:.4f}"
    )
    axis.hist(pooled.numpy(), bins=edges.numpy(), alpha=0.5, label=method)
axis.axvline(true_front, color="k", ls="--", label="true front")
axis.set(xlabel="shock position at t = 0.05", ylabel="draws", title=backbone_note.split(" (")[0])
axis.legend()
figure.savefig(OUT / "02_stefan_shock_positions.png", dpi=100)

# %% [markdown]
# ## Why the correction lands at the shock
#
# With `u ~ N(mu, Sigma)` and the rows `G`, ProbConserv moves the mean by
# `Sigma G^T alpha`, `alpha = (G Sigma G^T)^-1 (b - G mu)`: a combination of the columns of
# `Sigma G^T`, the covariance of each grid value with each time slice's mass. For a backbone with
# independent points (each ANP component has a diagonal covariance) the shift at slice j is
# `alpha_j w_i sigma^2(t_j, x_i)`: **proportional to the prior variance**. The backbone is most
# uncertain at the shock, so that is where the mass deficit is put back. HardC uses the
# identity instead of Sigma and spreads the same correction evenly over x. (A GP with a
# stationary kernel has no such peak at the shock: its variance depends on the distance to the
# contexts only, so with the GP fallback the correction has little to steer by.)

# %%
prior, hardc, posterior = (example[m] for m in METHODS)
prior_std = prior.variance[j].sqrt()
shift = posterior.mean[j] - prior.mean[j]
hardc_shift = hardc.mean[j] - prior.mean[j]

figure, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
axes[0].plot(grid.x, truth[j], "k--", label="truth")
for method, color in zip(METHODS, ("C0", "C1", "C2"), strict=True):
    mean, std = example[method].mean[j], example[method].variance[j].sqrt()
    axes[0].plot(grid.x, mean, color=color, label=method)
    if method != "hardc":
        axes[0].fill_between(grid.x, mean - 1.645 * std, mean + 1.645 * std, color=color, alpha=0.2)
axes[0].set(
    xlim=(0, 0.5), xlabel="x", ylabel="u(0.05, x)", title="profiles at t = 0.05 (90 % bands)"
)
axes[0].legend()
axes[1].plot(grid.x, prior_std, color="C0", label="prior std (backbone)")
axes[1].plot(grid.x, shift, color="C2", label="ProbConserv mean shift")
axes[1].plot(grid.x, hardc_shift, color="C1", label="HardC mean shift")
axes[1].axvline(true_front, color="k", ls="--", lw=0.8)
axes[1].set(xlim=(0, 0.5), xlabel="x", title="where the correction goes (t = 0.05)")
axes[1].legend()
figure.savefig(OUT / "02_stefan_correction.png", dpi=100)

print(
    f"largest prior std at x = {float(grid.x[prior_std.argmax()]):.3f}, largest ProbConserv "
    f"shift at x = {float(grid.x[shift.abs().argmax()]):.3f}, true front x = {true_front:.3f}"
)

# %% [markdown]
# The statement above is exact, and we can check it: for every Gaussian the backbone produced
# (each latent component of the ANP, or the GP itself), the mean shift lies in the span of the
# columns of `Sigma G^T`, one column per time slice.

# %%
rows = constraint.to_dense()  # G, (n_t, N)
prior_components = getattr(prior, "components", [prior])
posterior_components = getattr(posterior, "components", [posterior])
worst = 0.0
for before, after in list(zip(prior_components, posterior_components, strict=True))[:5]:
    columns = before.covariance.matmul(rows.T)  # Sigma G^T, (N, n_t)
    component_shift = (after.mean - before.mean).reshape(-1, 1)
    alpha = torch.linalg.lstsq(columns, component_shift).solution
    residual = (columns @ alpha - component_shift).norm() / component_shift.norm()
    worst = max(worst, float(residual))
print(f"relative distance of the shift from span(Sigma G^T): {worst:.1e}")
assert worst < 1e-8
