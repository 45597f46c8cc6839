"""BOON's kernel-correction warm-up: test error against the warm-up length, over seeds.

For each problem, seed and warm-up fraction f (TrainingConfig.correction_warmup: the layers'
correction strength rises linearly from 0 to 1 over the first f of the training steps), BOON is
trained with the settings of `benchmarks/boon.py` (120 epochs, learning rate halved every 30,
gradient clip 1, 200 train / 100 test samples, 65 nodes, the same data and seeds) and scored by
its relative L2 test error against the fair FNO control of the same seed, trained in the same
run: FNO given the boundary data (fno-bc) where the data vary by sample, else FNO.

    python benchmarks/boon_warmup.py        # stokes and heat-neumann, f = 0, 0.25, 0.5, 5 seeds

Runs every (problem, seed, model) job in its own worker process (1 torch thread each); the JSON
(benchmarks/results/boon_warmup.json) is rewritten after every job and a rerun skips the jobs
it already holds for the same settings.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import torch

from probcons.boon.training import (
    TrainingConfig,
    config_dict,
    evaluate,
    sees_boundary_data,
    train_model,
)
from probcons.io import write_json
from probcons.problems.operators import OPERATOR_PROBLEMS, make_problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpme import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "boon_warmup.json"
EPOCHS, N_TRAIN, N_TEST, N_X = 120, 200, 100, 65  # benchmarks/boon.py's defaults


def reference_kind(problem) -> str:
    """fno-bc where it sees boundary data (they vary by sample: information FNO lacks)."""
    return "fno-bc" if sees_boundary_data("fno-bc", problem) else "fno"


def run_job(name: str, seed: int, kind: str, fraction: float | None) -> dict:
    """Train one model on the seed's data (as benchmarks/boon.py draws them) and score it."""
    torch.set_num_threads(1)
    problem = make_problem(name, n_x=N_X)
    generator = torch.Generator().manual_seed(seed)
    train, test = problem.generate(N_TRAIN, generator), problem.generate(N_TEST, generator)
    config = replace(TrainingConfig(), epochs=EPOCHS, decay_every=EPOCHS // 4)
    if fraction is not None:
        config = replace(config, correction_warmup=fraction)
    model, seconds = train_model(kind, problem, train, config, seed)
    metrics = evaluate(model, kind, problem, test)
    return {
        "rel_l2": metrics["rel_l2"],
        "boundary_error": metrics["boundary_error"],
        "train_s": seconds,
    }


def job_key(name: str, seed: int, kind: str, fraction: float | None) -> str:
    return f"{name}/{seed}/{kind}" + ("" if fraction is None else f"/{fraction:g}")


def print_table(results: dict, problems, seeds, fractions) -> None:
    jobs = results["jobs"]
    print(f"\nmachine: {results['_meta']['machine']}")
    print(
        "BOON relative L2 / the reference's (same seed, same run), per seed, and geometric mean\n"
    )
    print(
        "| problem | reference | warm-up fraction | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | geo. mean |"
    )
    print("|---|---|---|" + "---|" * (len(seeds) + 1))
    for name in problems:
        reference = reference_kind(make_problem(name, n_x=N_X))
        for fraction in fractions:
            ratios = []
            for seed in seeds:
                boon = jobs.get(job_key(name, seed, "boon", fraction))
                base = jobs.get(job_key(name, seed, reference, None))
                ratios.append(boon["rel_l2"] / base["rel_l2"] if boon and base else math.nan)
            mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            cells = " | ".join(f"{r:.2f}" for r in ratios)
            print(f"| {name} | {reference} | {fraction:g} | {cells} | {mean:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=["stokes", "heat-neumann"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.0, 0.25, 0.5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    unknown = [name for name in args.problems if name not in OPERATOR_PROBLEMS]
    if unknown:
        print(
            f"error: --problems: expected names from {list(OPERATOR_PROBLEMS)}, got {unknown}",
            file=sys.stderr,
        )
        return 2
    checks = [
        (
            "--fractions",
            "numbers in [0, 1)",
            args.fractions,
            all(0 <= f < 1 for f in args.fractions),
        ),
        ("--workers", "an integer >= 1", args.workers, args.workers >= 1),
        ("--seeds", "integers >= 0", args.seeds, all(seed >= 0 for seed in args.seeds)),
    ]
    for flag, allowed, given, ok in checks:
        if not ok:
            print(f"error: {flag}: expected {allowed}, got {given}", file=sys.stderr)
            return 2
    torch.set_num_threads(1)  # what every worker runs with
    config = config_dict(replace(TrainingConfig(), epochs=EPOCHS, decay_every=EPOCHS // 4))
    meta = {"machine": machine(), "config": config, "sizes": [N_TRAIN, N_TEST, N_X]}
    results = {"jobs": {}, "_meta": meta}
    if args.out.is_file():
        saved = json.loads(args.out.read_text())
        if saved.get("_meta", {}).get("config") == config:
            results["jobs"] = saved["jobs"]
    jobs = []
    for name in args.problems:
        reference = reference_kind(make_problem(name, n_x=N_X))
        for seed in args.seeds:
            jobs.append((name, seed, reference, None))
            jobs += [(name, seed, "boon", fraction) for fraction in args.fractions]
    todo = [job for job in jobs if job_key(*job) not in results["jobs"]]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already in {args.out}; running {len(todo)}")
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {pool.submit(run_job, *job): job for job in todo}
        for done, future in enumerate(as_completed(futures), 1):
            job = futures[future]
            results["jobs"][job_key(*job)] = future.result()
            write_json(args.out, results)
            print(
                f"[{done}/{len(todo)}] {job_key(*job)}: rel_l2 {results['jobs'][job_key(*job)]['rel_l2']:.3e}",
                flush=True,
            )
    print_table(results, args.problems, args.seeds, args.fractions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
