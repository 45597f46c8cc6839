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
# # 4. Calibration: reading a report
#
# A probabilistic prediction is **calibrated** when its stated uncertainty matches its actual
# errors: the truth falls inside the 90 % interval 90 % of the time, and looks like one more
# draw from the predictive. Here we build synthetic models whose calibration we know, write
# them in the run-directory schema, make a report, and read it.
#
# Four models of the same truth (the diffusion problem's exact solution), each with errors of
# standard deviation `sigma` at every point:
#
# | model | predictive std | bias | expected verdict |
# |---|---|---|---|
# | calibrated | sigma | 0 | calibrated |
# | over-confident | sigma / 2 | 0 | over-confident |
# | under-confident | 2 sigma | 0 | under-confident |
# | biased | sigma | +sigma | over-confident by coverage; sloped PIT |

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from scipy import stats

from probcons import metrics
from probcons.problems import get_problem
from probcons.report import (
    MethodData,
    calibration_flag,
    coverage_from_pit,
    pit_uniformity,
    randomized_pit,
    summarize_method,
    to_inference_data,
    write_inference_data,
    write_report,
)

SMALL = os.environ.get("PROBCONS_TUTORIAL_SMALL", "0") not in ("", "0")
OUT = Path(
    os.environ.get("PROBCONS_TUTORIAL_OUT")
    or ("tutorials/figures" if Path("tutorials").is_dir() else "figures")
)
OUT.mkdir(parents=True, exist_ok=True)

N_T, N_X = (21, 33) if SMALL else (41, 65)
N_FUNCTIONS = 10 if SMALL else 20
N_DRAWS = 100
SIGMA = 0.05  # standard deviation of every model's error
Z90 = stats.norm.ppf(0.95)  # half-width of the central 90 % Gaussian interval, in std units

# %% [markdown]
# ## Synthetic models
#
# For each function f the model's mean is `truth + sigma * eps_f` (a fresh error field per
# function; the biased model adds `+sigma`) and its predictive is `N(mean, (s sigma)^2)` at every
# point. Only s = 1 without bias describes its own errors correctly.

# %%
problem = get_problem("diffusion")
k = 1.0
grid = problem.grid(N_T, N_X)
times, positions = grid.mesh()
truth = problem.solution(times, positions, k).expand(N_FUNCTIONS, *grid.shape)  # (F, n_t, n_x)
generator = torch.Generator().manual_seed(0)

MODELS = {  # name: (std scale s, bias in units of sigma)
    "calibrated": (1.0, 0.0),
    "over-confident": (0.5, 0.0),
    "under-confident": (2.0, 0.0),
    "biased": (1.0, 1.0),
}
predictions = {}
for name, (scale, bias) in MODELS.items():
    errors = SIGMA * torch.randn(truth.shape, generator=generator, dtype=torch.float64)
    mean = truth + errors + bias * SIGMA
    std = torch.full_like(mean, scale * SIGMA)
    noise = torch.randn((N_DRAWS, *truth.shape), generator=generator, dtype=torch.float64)
    predictions[name] = {"mean": mean, "variance": std**2, "draws": mean + std * noise}

# %% [markdown]
# ## Into the run-directory schema, then the report
#
# `to_inference_data` takes draws of shape (n_draws, n_functions, n_t, n_x) (or a dict of Pyro
# samples), the truth, and optional exact moments and mass; each model becomes `<name>.nc` in
# one run directory, and `write_report` compares them.

# %%
run_dir = OUT / "04_calibration_run"
run_dir.mkdir(parents=True, exist_ok=True)
for name, p in predictions.items():
    idata = to_inference_data(
        p["draws"],
        truth,
        grid,
        method=name,
        problem="diffusion",
        backbone="synthetic",
        parameter=k,
        parameter_name=problem.parameter_name,
        mass=problem.mass(grid.t, k).expand(N_FUNCTIONS, -1),  # (F, n_t)
        mean=p["mean"],
        variance=p["variance"],
        time_of_interest=problem.time_of_interest,
    )
    write_inference_data(idata, run_dir)
written = write_report([run_dir], out=OUT / "04_calibration_report.html")
markdown = written["markdown"].read_text()
print(markdown.split("Values are mean")[0])

# %% [markdown]
# ## How to read it
#
# * **MSE, MSE(t\*)**: error of the predictive mean; blind to the uncertainty (the first three
#   models have the same kind of error).
# * **CE**: conservation error of the mean, `mean_t |sum_i w_i m(t, x_i) - U(t)|`.
# * **LL** (Gaussian log density of the truth) and **CRPS** are *proper* scores: they reward a
#   predictive that is both calibrated and sharp. The calibrated model wins on both.
# * **Cov 50% / Cov 90%**: how often the truth falls inside the central interval between sample
#   quantiles. With D draws this interval covers only about `L (D - 1) / (D + 1)` of a calibrated
#   truth (0.882 for L = 0.9, D = 100), so do not expect exactly 0.9 here.
# * **Width 90%**: the interval's mean width (sharpness). Narrow is good only if coverage holds.
# * **PIT 90%** and **Calibration**: the coverage read off the randomized PIT (exact for any D)
#   and the verdict: over-confident if below 0.9 by more than 3 standard errors, under-confident
#   if above.
# * **PIT uniform**: whether the ECDF of PIT values stays inside a 95 % simultaneous band.
#
# The verdict reads coverage only: the biased model is flagged over-confident because the truth
# leaves its intervals too often. Its PIT histogram tells bias from over-confidence: sloped,
# not U-shaped.
#
# The report's figures: a reliability diagram (coverage against nominal level, one line per
# model), PIT histograms (flat = calibrated, U-shaped = over-confident, hump = under-confident,
# sloped = biased), error over time, mass over time and profiles with bands.

# %%
figures = {name: path for name, path in written.items() if name not in ("html", "markdown")}
print("figures:", ", ".join(sorted(figures)))
for name in MODELS:
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
    print(row.split("|")[-3].strip(), "<-", name)

# %% [markdown]
# ## The same numbers from the library's functions
#
# `summarize_method` is what the report runs per model file; `calibration()` is its verdict.

# %%
verdicts = {}
for name in MODELS:
    with MethodData(run_dir / f"{name}.nc") as data:
        summary = summarize_method(data, run="04", label=name)
    verdicts[name] = summary.calibration()
    levels, coverage, errors = summary.reliability_curve()
    print(
        f"{name:16s} PIT coverage at 90 %: {coverage[-1]:.3f} (SE {errors[-1]:.3f})",
        f"-> {verdicts[name]}",
    )

assert verdicts["calibrated"] == "calibrated"
assert verdicts["over-confident"] == "over-confident"
assert verdicts["under-confident"] == "under-confident"

# %% [markdown]
# And by hand, from tensors: the randomized PIT of the truth under the draws, the coverage of
# central intervals read off it, and the flag.

# %%
figure, axes = plt.subplots(
    1, len(MODELS), figsize=(4 * len(MODELS), 3), sharey=True, layout="constrained"
)
for axis, (name, p) in zip(axes, predictions.items(), strict=True):
    pit = randomized_pit(p["draws"], truth, torch.Generator().manual_seed(1))  # (F, n_t, n_x)
    coverage = coverage_from_pit(pit, levels=(0.5, 0.9))
    standard_error = math.sqrt(0.9 * 0.1 / pit.numel())
    flag = calibration_flag(float(coverage[1]), 0.9, standard_error)
    uniform = pit_uniformity(pit.reshape(-1)[:: max(1, pit.numel() // 1000)])
    print(
        f"{name:16s} coverage 50 % {float(coverage[0]):.3f}, 90 % {float(coverage[1]):.3f} -> "
        f"{flag}; PIT inside the uniform band: {uniform.inside}"
    )
    axis.hist(pit.reshape(-1).numpy(), bins=20, range=(0, 1), density=True)
    axis.axhline(1.0, color="k", lw=0.8)
    axis.set(title=name, xlabel="PIT")
axes[0].set_ylabel("density")
figure.savefig(OUT / "04_calibration_pit.png", dpi=100)

# %% [markdown]
# ## Checks against theory
#
# For a Gaussian predictive `N(m, (s sigma)^2)` and errors of std sigma, the central 90 %
# interval `m +- z sigma s` covers the truth with probability `2 Phi(s z) - 1`; the sample
# interval of D calibrated draws covers about `0.9 (D - 1) / (D + 1)`; and the expected log
# density is largest at s = 1.

# %%
TOLERANCE = 0.015  # several binomial standard errors at these sizes
for name, (scale, bias) in MODELS.items():
    p = predictions[name]
    covered = metrics.gaussian_interval_coverage(p["mean"], p["variance"], truth, 0.9)
    if bias == 0:
        expected = 2 * stats.norm.cdf(scale * Z90) - 1
        observed = float(covered.double().mean())
        print(f"{name:16s} Gaussian 90 % coverage {observed:.3f}, theory {expected:.3f}")
        assert abs(observed - expected) < TOLERANCE

covered = metrics.central_interval_coverage(predictions["calibrated"]["draws"], truth, 0.9)
observed, expected = float(covered.double().mean()), 0.9 * (N_DRAWS - 1) / (N_DRAWS + 1)
print(f"sample-quantile 90 % coverage {observed:.3f}, theory {expected:.3f}")
assert abs(observed - expected) < TOLERANCE

log_density = {
    name: float(metrics.gaussian_log_likelihood(p["mean"], p["variance"], truth).mean())
    for name, p in predictions.items()
}
print("mean log density:", {name: round(value, 3) for name, value in log_density.items()})
assert max(log_density, key=log_density.get) == "calibrated"
