"""The GPME benchmark's ensemble rows: a tiny run of `evaluate` and the JSON record it builds."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

from probcons import metrics, seeds
from probcons.backbones.ensemble import DeepEnsembleBackbone, DeepEnsembleTask, EnsembleConfig
from probcons.inference import ExactConditioning
from probcons.problems import get_problem
from probcons.runner import collect_sites, load_model, score_function

ROOT = Path(__file__).resolve().parents[2]
ENSEMBLE_METHODS = ("ensemble", "hardc-ensemble", "probconserv-ensemble")


@pytest.fixture(scope="module")
def gpme(benchmark_script):
    return benchmark_script("gpme")


@pytest.fixture(scope="module")
def tiny_ensemble():
    """Three untrained members of width 8 on Stefan (their spread is large, as wanted here)."""
    task = DeepEnsembleTask("stefan", EnsembleConfig(hidden=8, layers=1))
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(task.build())
    return DeepEnsembleBackbone(members, task, metadata={"seconds": [1.0, 2.0, 4.0]})


def tiny_arguments() -> Namespace:
    return Namespace(n_t=21, n_x=17, n_functions=3, draws=8, seed=0, sigma_g=0.0)


def test_expand_methods_groups_and_rejects_unknown_names(gpme):
    expected = [
        f"{m}{b}" for b in ("ensemble", "fno-ensemble") for m in ("", "hardc-", "probconserv-")
    ]
    assert gpme.expand_methods("ensembles") == expected
    assert gpme.expand_methods("probconserv-gp, anp") == ["anp", "probconserv-gp"]
    with pytest.raises(SystemExit, match="ensembel"):
        gpme.expand_methods("ensembel")


def test_spread_share_matches_member_outputs(gpme, tiny_ensemble):
    problem = get_problem("stefan")
    grid = problem.grid(21, 17)
    means, variances = (v.numpy() for v in tiny_ensemble.member_outputs(problem, 0.6, grid))
    spread = ((means - means.mean(axis=0)) ** 2).mean(axis=0).sum()  # ddof = 0
    expected = spread / (spread + variances.mean(axis=0).sum())
    prediction = tiny_ensemble.predict(problem, 0.6, None, grid)
    assert gpme.spread_share(prediction) == pytest.approx(expected, rel=1e-10)


def test_ensemble_rows_conserve_and_match_an_uncached_evaluation(gpme, tiny_ensemble):
    """The ensemble's prediction is computed once per parameter value; the rows must equal a
    fresh prediction per function, and the constrained rows must conserve mass exactly."""
    problem = get_problem("stefan")
    model = load_model(ROOT / "models" / "stefan.py")
    args = tiny_arguments()
    results, (floor, _) = gpme.evaluate(
        problem,
        0.6,
        {"ensemble": tiny_ensemble},
        list(ENSEMBLE_METHODS),
        args,
        model,
        {"ensemble": 7.0},
        None,
    )
    grid = problem.grid(args.n_t, args.n_x)
    times, positions = grid.mesh()
    truth = problem.solution(times, positions, 0.6)
    for method in ENSEMBLE_METHODS:
        runner_method = gpme.METHODS[method][1]
        per_function = []
        for function in range(args.n_functions):
            prediction = tiny_ensemble.predict(problem, 0.6, None, grid)
            constraint = collect_sites(ExactConditioning(model), prediction, problem, 0.6, 0.0)
            posterior = constraint.posterior(runner_method)
            samples = posterior.sample(args.draws, seeds.draw_generator(args.seed, function))
            per_function.append(score_function(posterior, samples, truth, constraint, problem, 0.6))
        summary = results[method]
        for key in ("mse", "ce", "ll", "crps", "coverage_90", "shock_position_error"):
            expected = np.mean([scores[key] for scores in per_function])
            assert summary[key] == pytest.approx(expected, rel=1e-12, abs=1e-15), (method, key)
        # the same prediction for every function: deterministic metrics have no spread
        assert summary["mse_se"] == 0.0 and summary["ll_se"] == 0.0
        assert summary["train_s"] == 7.0
    assert results["ensemble"]["ce"] > 1e-6
    assert results["hardc-ensemble"]["ce"] < 1e-10
    assert results["probconserv-ensemble"]["ce"] < 1e-10
    assert floor == pytest.approx(metrics.conservation_error(truth, constraint))


def test_json_record_has_the_documented_shape(gpme, tiny_ensemble):
    problem = get_problem("stefan")
    model = load_model(ROOT / "models" / "stefan.py")
    args = tiny_arguments()
    args.n_functions = 1
    results, (floor, _) = gpme.evaluate(
        problem, 0.6, {"ensemble": tiny_ensemble}, ["probconserv-ensemble"], args, model, {}, None
    )
    protocol = {"n_functions": 1, "grid": [21, 17], "latent_samples": None, "draws": 8}
    record = gpme.json_record(results["probconserv-ensemble"], None, floor, protocol)
    required = {*gpme.JSON_METRICS, "train_s", *(f"{k}_se" for k in gpme.JSON_METRICS)}
    assert required <= set(record)
    assert record["protocol"] == protocol and record["ce_floor_exact_solution"] == floor
    assert record["train_s"] is None  # not given to evaluate
    assert 0 < record["member_spread_share"] < 1
    assert all(record[k] is not None for k in gpme.JSON_METRICS)  # Stefan has a front
    assert json.loads(json.dumps(record)) == record
    assert gpme.ensemble_training_seconds(tiny_ensemble) == 7.0


def test_probcons_run_reproduces_a_benchmark_row(gpme, tmp_path):
    """`probcons run` and benchmarks/gpme.py take their seeds from probcons.seeds: with the same
    settings the command gives the benchmark's ANP, HardC and ProbConserv rows (the full Stefan
    u* = 0.6 row of benchmarks/results/gpme.json is reproduced to 1e-7 relative the same way)."""
    from probcons.backbones.anp import ANPBackbone, default_checkpoint
    from probcons.runner import RunSettings, run

    problem = get_problem("stefan")
    args = Namespace(n_t=21, n_x=17, n_functions=2, draws=8, seed=3, sigma_g=0.0)
    backbone = ANPBackbone.from_checkpoint(default_checkpoint("stefan", "anp"), name="anp")
    methods = ["anp", "hardc-anp", "probconserv-anp"]
    model = load_model(ROOT / "models" / "stefan.py")
    rows, _ = gpme.evaluate(problem, 0.6, {"anp": backbone}, methods, args, model, {}, None)
    settings = RunSettings(
        problem="stefan",
        backbone="anp",
        parameter=0.6,
        n_functions=2,
        grid=(21, 17),
        draws=8,
        seed=3,
        out=tmp_path / "run",
    )
    summary = run(settings, progress=False, report=False)
    for method in methods:
        ours = summary[gpme.METHODS[method][1]]
        for key in ("mse", "mse_t", "ll", "crps", "coverage_90", "shock_position_error"):
            assert ours[key] == pytest.approx(rows[method][key], rel=1e-9, abs=1e-12), (method, key)
