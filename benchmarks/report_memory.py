"""Peak memory and time of `write_report` on a large run directory.

Writes a synthetic Stefan run in the `probcons run` schema through the runner's own writer
(`probcons.posterior_files`: gzip-compressed, chunked netCDF), then reports on it in a fresh
process and prints that process's peak resident memory and wall time.

    python benchmarks/report_memory.py                      # 50 functions, 201 x 201, 100 draws
    python benchmarks/report_memory.py --functions 5 --grid 101 --draws 50   # quick check

Each model: mean m = u + s z, draws m + s eps (z, eps standard normal), s = 0.05.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("unconstrained", "hardc", "probconserv")
SPREAD = 0.05
MEMORY_LIMIT_GB = 2.0


def generate(directory: Path, n_functions: int, n: int, n_draws: int, seed: int) -> None:
    """One `<method>.nc` per method, written with the runner's writer."""
    import numpy as np

    from probcons.posterior_files import posterior_inference_data, write_inference_data
    from probcons.problems import get_problem

    problem = get_problem("stefan")
    parameter = 0.6
    grid = problem.grid(n, n)
    tt, xx = grid.mesh()
    truth = problem.solution(tt, xx, parameter).numpy()
    mass = problem.mass(grid.t, parameter).numpy()
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for method in METHODS:
        samples = np.empty((n_functions, n_draws, n, n), dtype=np.float32)
        means = np.empty((n_functions, n, n))
        for f in range(n_functions):
            means[f] = truth + SPREAD * rng.standard_normal((n, n))
            noise = rng.standard_normal((n_draws, n, n), dtype=np.float32)
            samples[f] = means[f].astype(np.float32) + np.float32(SPREAD) * noise
        data = posterior_inference_data(
            samples=samples,
            truth=np.broadcast_to(truth, (n_functions, n, n)),
            mean=means,
            variance=np.full((n_functions, n, n), SPREAD**2),
            parameter=np.full(n_functions, parameter),
            mass=np.broadcast_to(mass, (n_functions, n)),
            grid=grid,
            attrs={
                "problem": "stefan",
                "backbone": "synthetic",
                "method": method,
                "sigma_G": 0.0,
                "parameter_name": problem.parameter_name,
                "time_of_interest": problem.time_of_interest,
            },
        )
        del samples
        write_inference_data(directory / f"{method}.nc", data)
        del data


def report(directory: Path) -> None:
    """Write the report and print {"seconds", "peak_rss_gb"} of this process as JSON."""
    import torch

    from probcons.report import write_report

    torch.set_num_threads(1)
    started = time.perf_counter()
    write_report([directory])
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_gb": peak_kb / 2**20}))


def _child(*arguments: str) -> str:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, __file__, *arguments],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
    )
    return completed.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=50)
    parser.add_argument("--grid", type=int, default=201, help="n_t = n_x")
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.generate:
        generate(options.generate, options.functions, options.grid, options.draws, options.seed)
        return
    if options.report:
        report(options.report)
        return

    root = options.keep or Path(tempfile.mkdtemp(prefix="probcons-report-memory-"))
    run = root / "stefan-synthetic"
    try:
        started = time.perf_counter()
        _child(
            "--generate",
            str(run),
            "--functions",
            str(options.functions),
            "--grid",
            str(options.grid),
            "--draws",
            str(options.draws),
            "--seed",
            str(options.seed),
        )
        generated = time.perf_counter() - started
        measured = json.loads(_child("--report", str(run)).strip().splitlines()[-1])
        size = sum(path.stat().st_size for path in run.glob("*.nc")) / 2**30
        ok = measured["peak_rss_gb"] <= MEMORY_LIMIT_GB
        print(
            f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, 1 thread"
        )
        print(
            "| functions | grid | draws | methods | .nc on disk | write run | report | peak RSS |"
        )
        print("|---|---|---|---|---|---|---|---|")
        print(
            f"| {options.functions} | {options.grid} x {options.grid} | {options.draws} | "
            f"{len(METHODS)} | {size:.2f} GB | {generated:.0f} s | {measured['seconds']:.0f} s | "
            f"{measured['peak_rss_gb']:.2f} GB |"
        )
        print(f"peak RSS within {MEMORY_LIMIT_GB:g} GB: {'yes' if ok else 'NO'}")
    finally:
        if options.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
