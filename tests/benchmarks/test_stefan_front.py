"""benchmarks/stefan_front.py: the split of the Stefan front error, and its agreement with the
shock figure of benchmarks/gpme.py."""

from __future__ import annotations

import math
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

from probcons.backbones.anp import ANPBackbone
from probcons.covariance import DiagonalCovariance
from probcons.grid import Grid
from probcons.mixture import GaussianMixture
from probcons.prediction import GaussianPrediction
from probcons.problems import get_problem
from probcons.runner import load_model

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "checkpoints" / "stefan-anp.pt"


@pytest.fixture(scope="module")
def front(benchmark_script):
    return benchmark_script("stefan_front")


def test_two_sharp_components_give_their_fronts(front):
    """Two components, steps 0.6 -> 0 between grid points, tiny variance, threshold 0.2: each
    draw crosses 2/3 of the way into its component's step; the mixture mean (0.6, 0.3, 0) first
    drops below 0.2 a third of the way into the second step."""
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    grid = Grid(torch.linspace(0, 1, 3, dtype=torch.float64), x)
    steps = (0.30, 0.40)  # the last point at height 0.6
    fronts = [position + 0.01 * 2 / 3 for position in steps]
    components = [
        GaussianPrediction(
            torch.where(x <= position + 1e-9, 0.6, 0.0).expand(grid.shape).clone(),
            DiagonalCovariance(torch.full(grid.shape, 1e-14, dtype=torch.float64)),
            grid,
        )
        for position in steps
    ]
    truth = 0.35
    # the mass of the first component's step: the mixture holds 0.3 x 0.1 more, a shift of 0.05
    weights = grid.trapezoid_weights()
    mass_row = (weights, float(weights @ components[0].mean[1]), 0.6)
    scores = front.front_decomposition(
        GaussianMixture(components), grid, 1, 0.2, truth, 0.36, mass_row
    )
    assert scores["mass_shift"] == pytest.approx(0.05, abs=1e-8)
    assert scores["latent_sd"] == pytest.approx(np.std(fronts, ddof=1), rel=1e-6)
    assert scores["mean_front_error"] == pytest.approx(0.40 + 0.01 / 3 - truth, abs=1e-9)
    # 1,000 draws pick a component each: their mean front is the fronts' mean up to binomial
    # noise (sd 0.05 / sqrt(1000) = 0.0016)
    assert scores["draw_front_error"] == pytest.approx(np.mean(fronts) - truth, abs=0.005)
    assert scores["draw_front_error_grid"] == pytest.approx(scores["draw_front_error"] - 0.01)
    assert scores["draw_minus_mean"] == pytest.approx(
        scores["draw_front_error"] - scores["mean_front_error"]
    )
    assert scores["draw_sd"] == pytest.approx(0.05, rel=0.05)
    assert scores["covered"] == 1.0


def test_summary_shares_and_correlation(front):
    errors = np.array([0.01, -0.004, 0.006, -0.002])

    def row(error: float, mass_shift: float = 0.0) -> dict:
        return {
            "mean_front_error": 0.0,
            "draw_front_error": 0.0,
            "draw_front_error_grid": 0.0,
            "draw_minus_mean": 0.0,
            "latent_sd": 0.0,
            "draw_sd": 0.0,
            "covered": 1.0,
            "mass_shift": mass_shift,
        } | {"mean_front_error": error}

    functions = [
        # the ANP's mass accounts for 3/4 of its front error, ProbConserv keeps the rest
        {"anp": row(e, 0.75 * e), "hardc-anp": row(e), "probconserv-anp": row(0.25 * e)}
        for e in errors
    ]
    summary = front.summarize(functions)
    assert summary["anp"]["removed_share"] == 0.0
    assert summary["hardc-anp"]["removed_share"] == 0.0
    assert summary["probconserv-anp"]["removed_share"] == pytest.approx(0.75)
    assert summary["correlation_anp_probconserv"] == pytest.approx(1.0)
    assert summary["correlation_probconserv_unseen_by_mass"] == pytest.approx(1.0)
    assert summary["anp"]["abs_unseen_by_mass"] == pytest.approx(0.25 * np.abs(errors).mean())
    assert summary["anp"]["abs_mass_shift"] == pytest.approx(0.75 * np.abs(errors).mean())
    assert summary["anp"]["abs_mean_front_error"] == pytest.approx(np.abs(errors).mean())
    expected_se = np.abs(errors).std(ddof=1) / math.sqrt(len(errors))
    assert summary["anp"]["abs_mean_front_error_se"] == pytest.approx(expected_se)


def test_function_zero_is_the_shock_figure_of_gpme(front, benchmark_script):
    """Same contexts, latent draws and draw seed: the draw fronts of function 0 must be those
    gpme.py stores for its shock figure."""
    gpme = benchmark_script("gpme")
    problem = get_problem("stefan")
    arguments = Namespace(
        param=0.6, checkpoint=CHECKPOINT, n_functions=1, latent_samples=3, n_t=21, n_x=33
    )
    result = front.evaluate(arguments)
    shock_store: dict = {}
    gpme.evaluate(
        problem,
        0.6,
        {"anp": ANPBackbone.from_checkpoint(CHECKPOINT, n_samples=3)},
        ["anp", "hardc-anp", "probconserv-anp"],
        Namespace(n_t=21, n_x=33, n_functions=1, draws=4, seed=0, sigma_g=0.0),
        load_model(ROOT / "models" / "stefan.py"),
        {},
        shock_store,
    )
    truth = result["protocol"]["truth"]
    assert truth == pytest.approx(shock_store["truth"])
    assert result["protocol"]["truth_grid"] == pytest.approx(shock_store["truth_grid"])
    assert abs(result["functions"][0]["anp"]["mass_shift"]) > 1e-4
    assert abs(result["functions"][0]["probconserv-anp"]["mass_shift"]) < 1e-12
    for method in ("anp", "hardc-anp", "probconserv-anp"):
        stored = np.mean(shock_store[method])
        assert result["functions"][0][method]["draw_front_error"] + truth == pytest.approx(
            stored, abs=1e-12
        )
    assert "function 0" in front.table(result)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--n-functions", "0"], "--n-functions: expected at least 1"),
        (["--checkpoint", "nofile.pt"], "--checkpoint: 'nofile.pt' is not a file"),
        (["--param", "1.5", "--n-functions", "1"], "u_star: expected a value in (0, 1)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(front, arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        front.main([*arguments, "--no-write"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1]
