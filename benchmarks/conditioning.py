"""Time and peak memory of the ProbConserv update at scale, against the reference formulation.

    python benchmarks/conditioning.py                    # N = 1e3 ... 1e7 and 201 x 201
    python benchmarks/conditioning.py --sizes 1e3,1e4    # a quick check
    python benchmarks/conditioning.py --sizes 201x201,1e7 --merge   # re-measure some rows

For each grid n_t = n_x = round(sqrt N), each prior covariance (diagonal; low rank 16 + diagonal)
and each constraint set (conservation: one row per time slice; conservation + Dirichlet rows at
both ends: three rows per slice), a fresh process measures

- update: `condition(prior, constraint)` plus the posterior variance (the mean comes with it);
- sample: 100 posterior draws (pathwise), in chunks of at most --sample-chunk-mb each, every
  chunk reduced (mass residual) and dropped: at N = 1e7, 100 float64 draws would be 8 GB;
- bandwidth: a NumPy copy, into preallocated arrays, of every array the update reads (mean,
  diagonal, the (N, 16) factor of the low-rank prior, the constraint weights as stored: one row
  of n_x shared by all slices for conservation alone, (n_t, 3, n_x) once Dirichlet rows are
  stacked): one read and one write of each
  (also recorded: the same copy into new arrays, `np.copy`, which pays for fresh pages as the
  update does for its outputs);

and another fresh process runs the reference code's formulation in NumPy (a dense n_x x n_x prior
and posterior covariance per time slice, all slices batched; it holds three (n_t, n_x, n_x) arrays
at its peak where the reference code holds about four) where its estimated memory is below
--dense-limit-mb. Times are the best of --repeats runs after a first, memory-measured one
(sampling: that one run from N = 1e6 on). Peak memory is the growth of the process's peak resident
set (VmHWM, reset through /proc/self/clear_refs before each measured step) over its resident set
just before it: it sees every allocation, torch's and NumPy's, that was touched. The kernel keeps
these counters per CPU and folds them in batches, so below a few MB a reading is only good to
about 0.3 MB (a fresh 0.3 MB array can read as 0); the memory ratio therefore divides by the
larger of our peak and the size of the update's two outputs (posterior mean and variance, 2 N
float64), which no update can go below. Single-threaded by
default (torch and BLAS). NumPy backs large arrays with transparent huge pages (madvise); PyTorch
does so only with THP_MEM_ALLOC_ENABLE=1, which the workers get by default (--no-torch-thp turns it
off: fresh torch arrays then fault in 4 kB pages, which costs several times the copy itself).
Update / bandwidth is against the copy into preallocated arrays; update / alloc. bandwidth against
`np.copy` (the update, too, writes its results into new arrays).
Prints one table with ratios and the machine; writes benchmarks/results/conditioning.json:
a list of rows, one per case, and beside it conditioning_runs.json, one entry per run (cases,
machine, load, command). With --merge, the rows measured now replace those of the same case
in the existing file, and the run is appended to the runs file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "conditioning.json"
SIZES = "1e3,1e4,201x201,1e5,1e6,1e7"
RANK = 16
DRAWS = 100
COVARIANCES = ("diagonal", "lowrank")
CONSTRAINTS = ("conservation", "conservation+dirichlet")
MB = 2**20
DENSE_ARRAYS = 4
"""The dense formulation holds about this many (n_t, n_x, n_x) float64 arrays at its peak."""
SINGLE_RUN_FROM = 1_000_000
"""From this N on, sampling is timed once (it takes seconds)."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
TORCH_THP = "THP_MEM_ALLOC_ENABLE"
"""PyTorch's switch for transparent huge pages on large CPU allocations (NumPy's default)."""


# -- measurement helpers (used inside the worker processes) -----------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        match = re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.MULTILINE)
    return int(match.group(1))


class PeakMemory:
    """Growth of peak RSS during a `with` block, in MB (VmHWM reset via clear_refs)."""

    def __enter__(self) -> PeakMemory:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        self.start_kb = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        peak_kb = max(_status_kb("VmHWM"), _status_kb("VmRSS"))  # RSS too, if the reset is ignored
        self.mb = max(peak_kb - self.start_kb, 0) / 1024


def best_time(function, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def grid_side(text: str) -> tuple[int, int]:
    """'1e6' -> (1000, 1000) (n_t = n_x = round(sqrt N)); '201x201' -> (201, 201)."""
    if "x" in text.lower():
        n_t, n_x = (int(part) for part in text.lower().split("x"))
        return n_t, n_x
    side = round(math.sqrt(float(text)))
    return side, side


def build_case(n_t: int, n_x: int, covariance: str, constraints: str, rank: int, seed: int):
    """(prior GaussianPrediction, LinearConstraint) with random mean, variance and factor."""
    import torch

    from probcons.constraints import conservation_constraint, dirichlet_constraint
    from probcons.covariance import DiagonalCovariance, LowRankCovariance
    from probcons.grid import Grid
    from probcons.prediction import GaussianPrediction

    generator = torch.Generator().manual_seed(seed)
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t, n_x)
    mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    variance = 0.1 + torch.rand(grid.size, generator=generator, dtype=torch.float64)
    if covariance == "diagonal":
        prior_covariance = DiagonalCovariance(variance)
    else:
        factor = torch.randn(grid.size, rank, generator=generator, dtype=torch.float64)
        prior_covariance = LowRankCovariance(variance, factor.mul_(0.3))
    mass = torch.rand(n_t, generator=generator, dtype=torch.float64)
    constraint = conservation_constraint(grid, mass)
    if constraints == "conservation+dirichlet":
        left = torch.rand(n_t, generator=generator, dtype=torch.float64)
        right = torch.rand(n_t, generator=generator, dtype=torch.float64)
        constraint = constraint.stack(dirichlet_constraint(grid, left=left, right=right))
    return GaussianPrediction(mean, prior_covariance, grid), constraint


def ours(n_t, n_x, covariance, constraints, rank, draws, repeats, chunk_mb, seed) -> dict:
    """This library's update, sampling and the bandwidth bound; one case."""
    import numpy as np
    import torch

    from probcons.conditioning import condition

    prior, constraint = build_case(n_t, n_x, covariance, constraints, rank, seed)
    warm_prior, warm_constraint = build_case(8, 8, covariance, constraints, rank, seed)
    condition(warm_prior, warm_constraint).sample(2)  # library initialisation, not measured
    size = n_t * n_x

    def update():
        posterior = condition(prior, constraint)
        return posterior, posterior.variance

    with PeakMemory() as memory:
        posterior, variance = update()
    peak_mb = memory.mb
    residual = float(constraint.residual(posterior.mean).abs().max())
    del posterior, variance
    update_s = best_time(update, repeats)
    posterior, _ = update()

    per_chunk = max(1, min(draws, int(chunk_mb * MB // (8 * size))))
    generator = torch.Generator().manual_seed(seed + 1)

    def sample():
        worst = 0.0
        for start in range(0, draws, per_chunk):
            chunk = posterior.sample(min(per_chunk, draws - start), generator)
            worst = max(worst, float(constraint.residual(chunk).abs().max()))
        return worst

    with PeakMemory() as memory:
        started = time.perf_counter()
        sample_residual = sample()
        sample_s = time.perf_counter() - started
    sample_peak_mb = memory.mb
    if size < SINGLE_RUN_FROM and repeats > 1:
        sample_s = min(sample_s, best_time(sample, repeats - 1))

    if covariance == "lowrank":
        arrays = [prior.covariance.diagonal_part.numpy(), prior.covariance.factor.numpy()]
    else:
        arrays = [prior.covariance.variance.numpy()]
    arrays.insert(0, prior.mean.numpy())
    weights = constraint.weights  # stored once per slice unless the rows were stacked
    arrays.append((weights[0] if weights.stride(0) == 0 else weights).numpy())
    targets = [np.empty_like(array) for array in arrays]
    for target in targets:
        target.fill(0.0)  # touch the pages before timing

    def copy():
        for source, target in zip(arrays, targets, strict=True):
            np.copyto(target, source)

    bandwidth_s = best_time(copy, max(repeats, 3))
    allocating_s = best_time(lambda: [np.copy(array) for array in arrays], max(repeats, 3))
    return {
        "update_s": update_s,
        "sample_s": sample_s,
        "peak_mb": peak_mb,
        "output_mb": 2 * size * 8 / MB,
        "sample_peak_mb": sample_peak_mb,
        "sample_chunk": per_chunk,
        "bandwidth_s": bandwidth_s,
        "bandwidth_allocating_s": allocating_s,
        "bandwidth_mb": sum(a.nbytes for a in arrays) / MB,
        "max_residual": max(residual, sample_residual),
    }


def dense_reference(mean, variance, factor, weights, values, noise_variance):
    """The reference code's formulation: dense per-slice covariances, all slices batched.

    mean, variance: (n_t, n_x); factor: (n_t, n_x, k) or None (slice blocks D_j + F_j F_j^T);
    weights: (n_t, r, n_x); values: (n_t, r); noise_variance: (n_t, r). Returns the posterior
    mean (n_t, n_x), the posterior covariances (n_t, n_x, n_x) and their diagonals (n_t, n_x).
    """
    import numpy as np

    n_t, n_x = mean.shape
    prior = np.zeros((n_t, n_x, n_x))
    index = np.arange(n_x)
    prior[:, index, index] = variance
    if factor is not None:
        prior += factor @ factor.transpose(0, 2, 1)
    cross = prior @ weights.transpose(0, 2, 1)  # Sigma_j G_j^T, (n_t, n_x, r)
    system = weights @ cross + noise_variance[:, :, None] * np.eye(weights.shape[1])
    gain = np.linalg.solve(system, cross.transpose(0, 2, 1)).transpose(0, 2, 1)  # (n_t, n_x, r)
    residual = values - np.einsum("jri,ji->jr", weights, mean)
    posterior_mean = mean + np.einsum("jir,jr->ji", gain, residual)
    posterior = prior - gain @ cross.transpose(0, 2, 1)
    return posterior_mean, posterior, np.diagonal(posterior, axis1=1, axis2=2).copy()


def dense(n_t, n_x, covariance, constraints, rank, draws, repeats, seed) -> dict:
    """The reference formulation on the same case; sampling through a per-slice eigen-root."""
    import numpy as np

    prior, constraint = build_case(n_t, n_x, covariance, constraints, rank, seed)
    mean = prior.mean.numpy()
    if covariance == "lowrank":
        variance = prior.covariance.diagonal_part.numpy().reshape(n_t, n_x)
        factor = prior.covariance.factor.numpy().reshape(n_t, n_x, rank)
    else:
        variance = prior.covariance.variance.numpy().reshape(n_t, n_x)
        factor = None
    weights = np.ascontiguousarray(constraint.weights.numpy())
    values = constraint.values.numpy()
    noise = constraint.noise_std.numpy() ** 2
    small = build_case(8, 8, covariance, constraints, rank, seed)  # warm-up, not measured
    dense_reference(
        small[0].mean.numpy(),
        np.ones((8, 8)),
        None,
        np.ascontiguousarray(small[1].weights.numpy()),
        small[1].values.numpy(),
        small[1].noise_std.numpy() ** 2,
    )

    def update():
        return dense_reference(mean, variance, factor, weights, values, noise)

    with PeakMemory() as memory:
        posterior_mean, posterior, _ = update()
    peak_mb = memory.mb
    del posterior
    update_s = best_time(update, repeats)
    _, posterior, _ = update()
    rng = np.random.default_rng(seed)

    def sample():
        values_, vectors = np.linalg.eigh(posterior)
        root = vectors * np.sqrt(np.clip(values_, 0, None))[:, None, :]
        noise_ = rng.standard_normal((n_t, n_x, draws))
        return posterior_mean[None] + np.einsum("jab,jbn->nja", root, noise_)

    started = time.perf_counter()
    sample()
    sample_s = time.perf_counter() - started
    return {"dense_update_s": update_s, "dense_peak_mb": peak_mb, "dense_sample_s": sample_s}


# -- driver --------------------------------------------------------------------------------


def machine() -> dict:
    import numpy as np
    import torch

    from probcons.machine import cpu_name

    cpu = cpu_name()
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def run_worker(args: argparse.Namespace, mode: str, case: tuple) -> dict:
    """One measurement in a fresh process; returns its JSON result (or an error)."""
    environment = dict(os.environ)
    for name in THREAD_VARIABLES:
        environment[name] = str(args.threads)
    environment[TORCH_THP] = "1" if args.torch_thp else "0"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        json.dumps({"mode": mode, "case": case, **_worker_options(args)}),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"{mode} worker failed (exit {done.returncode}): {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker_options(args) -> dict:
    return {
        "rank": args.rank,
        "draws": args.draws,
        "repeats": args.repeats,
        "chunk_mb": args.sample_chunk_mb,
        "seed": args.seed,
        "threads": args.threads,
    }


def worker(payload: str) -> None:
    options = json.loads(payload)
    import torch

    torch.set_num_threads(options["threads"])
    case = (*options["case"], options["rank"], options["draws"], options["repeats"])
    if options["mode"] == "ours":
        result = ours(*case, options["chunk_mb"], options["seed"])
    else:
        result = dense(*case, options["seed"])
    result["load_average"] = os.getloadavg()[0]
    print(json.dumps(result))


def dense_estimate_mb(n_t: int, n_x: int) -> float:
    return DENSE_ARRAYS * n_t * n_x * n_x * 8 / MB


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _ratio(numerator, denominator) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def table(rows: list[dict]) -> str:
    """results_pages.conditioning_rows, the table of docs/results/conditioning-at-scale.md
    (imported here, not at the top: the --worker processes measure their peak memory)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_pages import conditioning_rows

    return "\n".join(conditioning_rows(rows))


def _case(row: dict) -> tuple:
    return row["n_t"], row["n_x"], row["cov"], row["constraints"]


def merged(previous, rows: list[dict]) -> list[dict]:
    """The previous rows with those of the same case replaced."""
    fresh = {_case(row): row for row in rows}
    kept = [row for row in previous if _case(row) not in fresh]
    return sorted(kept + rows, key=lambda row: (row["n"], row["cov"], row["rows_per_slice"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=SIZES, help=f"grid sizes N or NTxNX (default {SIZES})")
    parser.add_argument("--covariances", default=",".join(COVARIANCES))
    parser.add_argument("--constraints", default=",".join(CONSTRAINTS))
    parser.add_argument("--rank", type=int, default=RANK, help="rank of the low-rank prior")
    parser.add_argument("--draws", type=int, default=DRAWS, help="posterior draws timed")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (best kept)")
    parser.add_argument("--sample-chunk-mb", type=float, default=512, help="draws per chunk")
    parser.add_argument("--dense-limit-mb", type=float, default=4096, help="dense memory cap")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--torch-thp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"set {TORCH_THP}=1 for the workers, as NumPy uses huge pages (default on)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON rows (default results/)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the measured cases in --out, keep the others (recorded in its meta)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return 0
    if not Path("/proc/self/clear_refs").exists():
        parser.error("peak memory needs Linux /proc/self/clear_refs and VmHWM")
    import torch

    torch.set_num_threads(args.threads)
    info = machine()
    info["threads"] = args.threads
    sizes = [grid_side(text) for text in args.sizes.split(",") if text.strip()]
    covariances = [c for c in args.covariances.split(",") if c]
    constraint_sets = [c for c in args.constraints.split(",") if c]
    rows = []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    for n_t, n_x in sizes:
        for covariance in covariances:
            for constraints in constraint_sets:
                case = (n_t, n_x, covariance, constraints)
                result = run_worker(args, "ours", case)
                fits = dense_estimate_mb(n_t, n_x) <= args.dense_limit_mb
                reference = run_worker(args, "dense", case) if fits else {}
                row = {
                    "n": n_t * n_x,
                    "cov": covariance,
                    "update_s": result.get("update_s"),
                    "sample_s": result.get("sample_s"),
                    "peak_mb": result.get("peak_mb"),
                    "dense_update_s": reference.get("dense_update_s"),
                    "dense_peak_mb": reference.get("dense_peak_mb"),
                    "bandwidth_s": result.get("bandwidth_s"),
                    "n_t": n_t,
                    "n_x": n_x,
                    "constraints": constraints,
                    "rows_per_slice": 1 if constraints == "conservation" else 3,
                    "rank": args.rank if covariance == "lowrank" else 0,
                    "draws": args.draws,
                    "sample_chunk": result.get("sample_chunk"),
                    "sample_peak_mb": result.get("sample_peak_mb"),
                    "dense_sample_s": reference.get("dense_sample_s"),
                    "bandwidth_allocating_s": result.get("bandwidth_allocating_s"),
                    "bandwidth_mb": result.get("bandwidth_mb"),
                    "max_residual": result.get("max_residual"),
                    "load_average": result.get("load_average"),
                    "output_mb": result.get("output_mb"),
                    "bandwidth_allocating_ratio": _ratio(
                        result.get("update_s"), result.get("bandwidth_allocating_s")
                    ),
                    "measured_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                    "threads": args.threads,
                    "torch_thp": args.torch_thp,
                    "machine": f"{info['cpu']}, {info['cores']} cores, {info['platform']}",
                    "error": result.get("error") or reference.get("error"),
                }
                rows.append(row)
                print(
                    f"  done {row['n']:>10,} {covariance:8s} {constraints:24s} "
                    f"update {_fmt(row['update_s'])} s, load {_fmt(row['load_average'])}",
                    file=sys.stderr,
                    flush=True,
                )
    load_after = os.getloadavg()
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, "
        f"{info['platform']}; Python {info['python']}, torch {info['torch']}, NumPy "
        f"{info['numpy']}; {args.threads} thread(s) for torch and BLAS; torch huge pages "
        f"{'on' if args.torch_thp else 'off'} ({TORCH_THP}); load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after."
    )
    print(
        f"Prior: random mean, variance in [0.1, 1.1], low rank {args.rank}; exact constraints "
        f"(sigma_G = 0); {args.draws} draws in chunks of <= {args.sample_chunk_mb:g} MB; dense "
        f"reference where <= {args.dense_limit_mb:g} MB. Peak MB: growth of peak RSS (VmHWM)."
    )
    print(table(rows))
    errors = [row["error"] for row in rows if row["error"]]
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    from probcons.io import write_json

    run = {
        "started_utc": started,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "cases": [list(_case(row)) for row in rows],
        "machine": info,
        "load_average_before_after": [load_before[0], load_after[0]],
        "command": " ".join(["python", "benchmarks/conditioning.py", *(argv or sys.argv[1:])]),
    }
    runs_path = args.out.with_name(args.out.stem + "_runs.json")
    runs = [run]
    if args.merge and args.out.exists():
        rows = merged(json.loads(args.out.read_text()), rows)
        if runs_path.exists():
            runs = [*json.loads(runs_path.read_text()), run]
    write_json(args.out, rows)
    write_json(runs_path, runs)
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
