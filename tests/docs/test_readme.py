"""The README's Python example runs as written, and what it claims holds.

The example conditions a user's own low-rank Gaussian on the mass U(t) and on u(t, 0) = 1;
here every draw is checked against those rows computed independently of probcons.
"""

import contextlib
import io
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"
TOLERANCE = 1e-10


def run_example() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "the README should hold exactly one Python example"
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(blocks[0], str(README), "exec"), namespace)
    return namespace


def trapezoid_mass(field: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i w_i u(t_j, x_i) with w the trapezoid weights, written out: (..., n_t)."""
    dx = x[1:] - x[:-1]
    return ((field[..., 1:] + field[..., :-1]) * dx / 2).sum(-1)


def test_python_example_runs_and_its_constraints_hold():
    ns = run_example()
    grid, mass, draws = ns["grid"], ns["mass"], ns["draws"]
    posterior, hardc, prediction = ns["posterior"], ns["hardc"], ns["prediction"]

    assert draws.shape == (100, *grid.shape)
    # every ProbConserv draw conserves the mass and keeps the inflow value
    assert (trapezoid_mass(draws, grid.x) - mass).abs().max() < TOLERANCE
    assert (draws[..., 0] - 1.0).abs().max() < TOLERANCE
    # the draws are not all the same: the posterior keeps uncertainty away from the constraints
    assert draws[..., grid.n_x // 2].std(0).min() > 1e-4
    # HardC's mean satisfies both constraints; its variance is the prior's
    assert (trapezoid_mass(hardc.mean, grid.x) - mass).abs().max() < TOLERANCE
    assert (hardc.mean[:, 0] - 1.0).abs().max() < TOLERANCE
    assert torch.allclose(hardc.variance, prediction.variance)
    # the pinned end is known exactly: posterior variance ~0 there, positive inside
    assert posterior.variance[:, 0].abs().max() < 1e-12
    assert posterior.variance[:, 0].abs().max() < 1e-8 * prediction.variance[:, 0].min()
    assert (posterior.variance[:, 1:] > 0).all()
    # the update moves the mean towards the profile whose mass it was told
    profile = ns["profile"]
    assert (posterior.mean - profile).pow(2).mean() < (prediction.mean - profile).pow(2).mean()


def test_predictive_call_and_hand_written_sites():
    ns = run_example()
    grid, mass, samples = ns["grid"], ns["mass"], ns["samples"]

    assert samples["u"].shape == (100, *grid.shape)
    assert (samples["mass"][..., 0] - mass).abs().max() < TOLERANCE
    assert (trapezoid_mass(samples["u"], grid.x) - mass).abs().max() < TOLERANCE
    assert (samples["u"][..., 0] - 1.0).abs().max() < TOLERANCE
    # .constraint() is the stack of both sites' rows, and the draws satisfy all of them
    stacked = ns["stacked"]
    assert (stacked.n_t, stacked.rows_per_slice, stacked.n_x) == (grid.n_t, 2, grid.n_x)
    assert stacked.residual(ns["draws"]).abs().max() < TOLERANCE
    # a Normal(u @ w, 1e-6) site and a Delta site give the same posterior as the helpers
    by_hand, posterior = ns["by_hand"], ns["posterior"]
    assert (by_hand.mean - posterior.mean).abs().max() < 1e-6
    assert (trapezoid_mass(by_hand.mean, grid.x) - mass).abs().max() < 1e-5
    assert (by_hand.mean[:, 0] - 1.0).abs().max() < TOLERANCE
