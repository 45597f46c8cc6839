"""Probabilistic BOON in 2-D: FNO and BOON ensembles, with and without exact physics rows.

For each problem (lid-driven cavity Re = 100, 2-D wave with Neumann walls) and seed, runs
`probcons.operator_runner.run_operator_problem2d` with the backbones fno-ensemble and
boon-ensemble (the same sizes, epochs and member seeds), each giving two methods:
"unconstrained" (the calibrated ensemble Gaussian) and "probconserv" (the exact posterior on
`probcons.backbones.boon_ensemble2d.physics_constraint`: cavity wall rows, which imply the
circulation identity; wave Neumann rows and the mass balance). Prints per problem and row the
mean over seeds of: relative L2 of the mean (mean over test trajectories and predicted slices),
closed-form Gaussian CRPS, 90 % coverage, boundary error (max |wall rows| of the mean, float64)
and the circulation (cavity) or balance (wave) residual of the mean, each a mean over test
trajectories of the per-trajectory max; then, per ensemble and row group (walls; circulation
or balance), the RMS z-score of the prior's residual and the scores after conditioning on that
group alone, from the ensemble's Gaussian and from its marginal variances only
(`row_diagnostics`: is the spread in a row's direction honest, and do the sample
cross-covariances help or hurt?); then the machine. Writes
benchmarks/results/boon2d_ensemble.json with the settings. One CPU thread.

    python benchmarks/boon2d_ensemble.py                      # 3 seeds, full size
    python benchmarks/boon2d_ensemble.py --seeds 1 --members 3 --n-train 20 --epochs 6 \
        --n-test 8                                            # the reduced run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from probcons.backbones.boon_ensemble import conserve
from probcons.backbones.boon_ensemble2d import (
    CAVITY_SIDE,
    BoonEnsemble2d,
    ensemble_grid2d,
    physics_constraint,
)
from probcons.boon.training2d import config_dict, load_model2d
from probcons.constraints.circulation2d import circulation_constraint2d, lid_circulation
from probcons.constraints.linear import LinearConstraint
from probcons.io import write_json
from probcons.operator_runner import ensemble2d_scores, run_operator_problem2d
from probcons.solvers.cavity import LID_VELOCITY

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boon_common  # noqa: E402
from results_pages import (  # noqa: E402
    BOON2D_ENSEMBLE_PHYSICS,
    boon2d_ensemble_diagnostic_rows,
    boon2d_ensemble_rows,
)

ROOT = Path(__file__).resolve().parents[1]
ROWS = (
    ("fno-ensemble", "unconstrained", "FNO-ensemble"),
    ("fno-ensemble", "probconserv", "FNO-ensemble + conditioning"),
    ("boon-ensemble", "unconstrained", "BOON-ensemble"),
    ("boon-ensemble", "probconserv", "BOON-ensemble + conditioning"),
)
METRICS = ("rel_l2", "crps", "coverage_90", "boundary_error")
PHYSICS = BOON2D_ENSEMBLE_PHYSICS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(PHYSICS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=80, help="training trajectories")
    parser.add_argument("--n-test", type=int, default=16, help="test trajectories")
    parser.add_argument("--n", type=int, default=50, help="nodes per side")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=12)
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--padding", type=int, default=4)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/boon2d_ensemble.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = boon_common.config2d(args)
    machine = boon_common.machine()
    settings = {
        "seeds": list(range(args.seeds)),
        "members": args.members,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "n_validation": max(args.n_test // 2, 2),
        "n": args.n,
        "config": config_dict(config),
        "full_size": args.seeds >= 3 and args.n_train >= 80 and args.epochs >= 10,
    }
    results: dict = {"settings": settings, "machine": machine, "problems": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for problem in args.problems:
            runs: dict = {}
            for backbone in ("fno-ensemble", "boon-ensemble"):
                for seed in settings["seeds"]:
                    result = run_operator_problem2d(
                        problem,
                        backbone,
                        Path(scratch) / f"{problem}-{backbone}-{seed}",
                        seed,
                        n_train=args.n_train,
                        n_test=args.n_test,
                        n=args.n,
                        config=config,
                        members=args.members,
                        draws=2,
                        report=False,
                        figure=False,
                    )
                    run_dir = Path(scratch) / f"{problem}-{backbone}-{seed}"
                    result["diagnostics"] = row_diagnostics(run_dir, result)
                    runs.setdefault(backbone, []).append(result)
                    print(
                        f"{problem} {backbone} seed {seed}: {time.perf_counter() - started:.0f} s"
                    )
            results["problems"][problem] = table_rows(problem, runs)
    results["total_s"] = time.perf_counter() - started
    write_json(args.out, results)
    print_table(results)
    print_diagnostics(results)
    print(json.dumps(machine))


def _rows(constraint: LinearConstraint, keep) -> LinearConstraint:
    """The rows of `constraint` whose names pass `keep`."""
    index = [k for k, name in enumerate(constraint.names) if keep(name)]
    return LinearConstraint(
        constraint.weights[:, index],
        constraint.values[:, index],
        constraint.noise_std[:, index],
        tuple(constraint.names[k] for k in index),
    )


def row_groups(problem, states) -> dict[str, LinearConstraint]:
    """{group: rows}: the walls, and the circulation (cavity) or the balance (wave2d) alone."""
    rows = physics_constraint(problem, states)
    groups = {"walls": _rows(rows, lambda name: name != "balance")}
    if problem.name == "wave2d":
        groups["balance"] = _rows(rows, lambda name: name == "balance")
    else:
        circulation = lid_circulation(LID_VELOCITY, CAVITY_SIDE)
        groups["circulation"] = circulation_constraint2d(ensemble_grid2d(problem), circulation)
    return groups


def row_diagnostics(run_dir: Path, result: dict) -> dict:
    """Per row group, over the test trajectories: the RMS z-score of the prior's residual,
    (G m - b) / sqrt(diag(G Sigma G^T)), and rel. L2 / CRPS / coverage after conditioning on
    that group alone, from the ensemble's Gaussian and ("_diagonal") from its marginals alone
    (`BoonEnsemble2d(covariance="marginal")`: the sample cross-covariances dropped). The members
    are read back from the run folder."""
    members = result["sizes"]["members"]
    loaded = [load_model2d(run_dir / f"member_{e}.pt") for e in range(members)]
    models, kind, problem = [m for m, _, _ in loaded], loaded[0][1], loaded[0][2]
    noise_variance = result["metrics"]["noise_variance"]
    ensemble = BoonEnsemble2d(models, kind, problem, noise_variance)
    marginals = BoonEnsemble2d(models, kind, problem, noise_variance, covariance="marginal")
    test = problem.generate(result["sizes"]["n_test"], result["seed"] + 1000)
    rollouts = ensemble.member_rollouts(test)
    priors = ensemble.predict(test, rollouts)
    diagonals = marginals.predict(test, rollouts)
    out: dict = {}
    for i, (prior, diagonal) in enumerate(zip(priors, diagonals, strict=True)):
        factor = prior.covariance.factor.T.reshape(members, *prior.grid.shape)  # F columns
        for group, rows in row_groups(problem, test.states[i]).items():
            weights = rows.weights
            spread = rows.apply(factor).square().sum(0)  # (m, r): |G F|^2
            variance = ensemble.noise_variance * weights.square().sum(-1) + spread
            z = rows.residual(prior.mean) / variance.sqrt()
            entry = out.setdefault(group, {"z_rms": []})
            entry["z_rms"].append(float(z.square().mean().sqrt()))
            for suffix, start in (("", prior), ("_diagonal", diagonal)):
                scores = ensemble2d_scores(problem, conserve(start, [rows]), test.states[i])
                for key, name in (("rel_l2", "rel_l2"), ("crps", "crps"), ("cov90", "coverage_90")):
                    entry.setdefault(key + suffix, []).append(scores[name])
    return {
        group: {key: sum(values) / len(values) for key, values in entry.items()}
        for group, entry in out.items()
    }


def table_rows(problem: str, runs: dict) -> list[dict]:
    """One row per (backbone, method): per-seed values and their mean."""
    rows = []
    for backbone, method, label in ROWS:
        per_seed = [run[method] for run in runs[backbone]]
        row = {"label": label, "backbone": backbone, "method": method}
        for key in (*METRICS, PHYSICS[problem]):
            values = [summary[key] for summary in per_seed]
            row[key] = sum(values) / len(values)
            row[f"{key}_per_seed"] = values
        row["noise_variance"] = [run["metrics"]["noise_variance"] for run in runs[backbone]]
        if method == "unconstrained":
            row["diagnostics_per_seed"] = [run["diagnostics"] for run in runs[backbone]]
        row["train_s"] = [run["metrics"]["train_s"] for run in runs[backbone]]
        rows.append(row)
    return rows


def print_table(results: dict) -> None:
    print("\n".join(boon2d_ensemble_rows(results)))


def print_diagnostics(results: dict) -> None:
    print()
    print("\n".join(boon2d_ensemble_diagnostic_rows(results)))


if __name__ == "__main__":
    main()
