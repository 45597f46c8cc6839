"""The default job, `probcons run stefan --backbone anp`, phase by phase, against its floors.

    python benchmarks/main_job.py            # the default job (10 functions, 101 x 101,
                                             # 100 latent samples, 100 draws, report) and floors
    python benchmarks/main_job.py --quick    # a small smoke run (seconds)

In one process, with --threads torch threads (default 2, the target machine's cores):

- startup: `probcons --help` and `import probcons.runner` in fresh processes (best of 3);
- job: `probcons.runner.run` on the default settings, its wall time split into phases by timing
  the library's own entry points as the job calls them: decode (`backbone.predict`: the ANP
  encoder and decoder over the latent samples), conditioning (the model's trace and each
  method's posterior), sampling (the draws), metrics (`score_function`), writing (the netCDF
  files, metrics.json and the move into place) and report (its per-function summaries, fed
  during the run, and `write_report`); "other" is the rest;
- floors, side by side in the same run:
  - decode: a bare torch loop of the same ANP network on the same points, latent samples and
    hidden layer (the decoder's MLP, 4 latent samples per chunk, no bookkeeping);
  - sampling: `torch.randn` of as many float64 numbers as the job's draws;
  - low-rank update: ProbConserv with a rank-16 + diagonal prior on a 1000 x 1000 grid
    (conservation rows) through `probcons.conditioning.condition` (mean and variance) against
    a plain Woodbury update in torch (every point at once, no chunks, no refinement), each in
    a fresh process: time and peak memory (growth of the peak resident set, reset through
    /proc/self/clear_refs; the ratio divides by at least the 2 N float64 outputs);
  - sampling at scale: 100 posterior draws of a conditioned diagonal prior at N = 1e6 and
    1e7 (in chunks of draws of at most --chunk-mb) against `torch.randn` of the same sizes.

Prints a table with the machine and the ratios to the floors; writes
benchmarks/results/main_job.json, or --out (--quick writes only to --out).
Targets (issue "The main job fast and safe"): job <= 15 s on 2 cores; sampling <= 1.2x randn;
low-rank update <= 1.2x the plain Woodbury time and <= 1.5x its peak memory; --help <= 2.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "main_job.json"
MB = 2**20
RANK = 16
DECODE_FLOOR_SAMPLES = 4
"""Latent samples per chunk of the bare decode loop (4 x 10,201 points, as the backbone)."""
PHASES = ("decode", "conditioning", "sampling", "metrics", "writing", "report", "other")
TARGETS = {"job_s": 15.0, "sampling": 1.2, "lowrank_time": 1.2, "lowrank_memory": 1.5}
HELP_TARGET_S = 2.5
FULL = {
    "n_functions": 10,
    "grid": (101, 101),
    "draws": 100,
    "lowrank_side": 1000,
    "sampling_sizes": (1_000_000, 10_000_000),
    "repeats": 3,
}
QUICK = {
    "n_functions": 2,
    "grid": (21, 21),
    "draws": 10,
    "lowrank_side": 60,
    "sampling_sizes": (10_000,),
    "repeats": 1,
}


# -- measurement helpers ----------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            match = re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Growth of the peak resident set during a `with` block, in MB (VmHWM reset through
    /proc/self/clear_refs); None where the kernel does not offer that."""

    def __enter__(self) -> PeakMemory:
        self.start_kb = None
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.start_kb = _status_kb("VmRSS")
        except OSError:
            pass
        return self

    def __exit__(self, *exc) -> None:
        self.mb = None
        if self.start_kb is not None:
            peak_kb = max(_status_kb("VmHWM") or 0, _status_kb("VmRSS") or 0)
            self.mb = max(peak_kb - self.start_kb, 0) / 1024


def best_time(function, repeats: int) -> float:
    best = math.inf
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def fresh_process_seconds(command: list[str], repeats: int) -> float:
    """Best wall time of `command` in a fresh process (its output discarded)."""

    def once():
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)

    return best_time(once, repeats)


class PhaseTimer:
    """Accumulates wall time per phase; `wrap(name, function)` times every call, outermost
    calls only (a phase inside another one counts once, for the outer one)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.depth = 0

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            if self.depth:
                return function(*args, **kwargs)
            self.depth += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.depth -= 1

        return timed


@contextlib.contextmanager
def patched(target, name: str, value):
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


# -- the job and its floors -------------------------------------------------------------------


def run_job(settings: dict, out: Path) -> dict:
    """`probcons.runner.run` on Stefan with the ANP, timed by phase."""
    import probcons.runner as runner
    from probcons.backbones import get_backbone
    from probcons.inference.exact import ConstraintSites
    from probcons.mixture import GaussianMixture
    from probcons.prediction import GaussianPrediction

    timer = PhaseTimer()
    backbones = []

    def timed_backbone(*args, **kwargs):
        backbone = get_backbone(*args, **kwargs)
        backbone.predict = timer.wrap("decode", backbone.predict)
        backbones.append(backbone)
        return backbone

    run_settings = runner.RunSettings(
        problem="stefan",
        backbone="anp",
        n_functions=settings["n_functions"],
        grid=settings["grid"],
        draws=settings["draws"],
        out=out,
        overwrite=True,
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(runner, "get_backbone", timed_backbone))
        for name, phase in (
            ("collect_sites", "conditioning"),
            ("score_function", "metrics"),
            ("_append_chunk", "writing"),
            ("write_json", "writing"),
            ("_move_into_place", "writing"),
            ("_summarize_stored", "report"),
            ("write_report", "report"),
        ):
            stack.enter_context(patched(runner, name, timer.wrap(phase, getattr(runner, name))))
        stack.enter_context(
            patched(
                ConstraintSites,
                "posterior",
                timer.wrap("conditioning", ConstraintSites.posterior),
            )
        )
        for kind in (GaussianMixture, GaussianPrediction):
            stack.enter_context(patched(kind, "sample", timer.wrap("sampling", kind.sample)))
        started = time.perf_counter()
        summary = runner.run(run_settings, progress=False, report=True)
        total = time.perf_counter() - started
    phases = dict(timer.seconds)
    phases["other"] = max(total - sum(phases.values()), 0.0)
    return {
        "wall_s": total,
        "phases_s": phases,
        "table": runner.format_table(summary),
        "backbone": backbones[0],
        "settings": run_settings,
    }


def decode_floor(backbone, settings: dict, n_functions: int, repeats: int) -> float:
    """A bare torch loop of the backbone's decoder MLP on the job's points, n_functions times."""
    import torch

    from probcons.problems import get_problem, sample_contexts

    problem = get_problem("stefan")
    net = backbone.network
    grid = problem.grid(*settings["grid"])
    parameter = problem.test_values[-1]
    generator = torch.Generator().manual_seed(0)
    contexts = sample_contexts(problem, parameter, generator)
    dtype = net.input_center.dtype
    with torch.inference_mode():
        context_tx = torch.stack([contexts.t, contexts.x], dim=-1).to(dtype)[None]
        context_u = torch.as_tensor(contexts.u).to(dtype)[None]
        target_tx = grid.points().to(dtype)[None]
        loc, scale = net.encode_latent(context_tx, context_u)
        z = loc + scale * torch.randn(backbone.n_samples, loc.shape[-1], dtype=dtype)
        representation, queries = net.encode_deterministic(context_tx, context_u, target_tx)
        hidden = net.decode_hidden(representation, queries)[0]
        h, d = net.config.hidden, net.config.latent_dim
        z_part = z @ net.decoder_input.weight[:, h : h + d].T
        layers = [module for module in net.decoder if isinstance(module, torch.nn.Linear)]

        def loop():
            for _ in range(n_functions):
                for start in range(0, z.shape[0], DECODE_FLOOR_SAMPLES):
                    x = torch.relu(hidden + z_part[start : start + DECODE_FLOOR_SAMPLES, None])
                    for index, layer in enumerate(layers):
                        x = torch.nn.functional.linear(x, layer.weight, layer.bias)
                        if index < len(layers) - 1:
                            x = torch.relu(x)

        return best_time(loop, repeats)


def randn_seconds(shape: tuple[int, ...], repeats: int) -> float:
    import torch

    generator = torch.Generator().manual_seed(0)
    return best_time(lambda: torch.randn(shape, generator=generator, dtype=torch.float64), repeats)


def diagonal_posterior(side: int):
    """ProbConserv of a random diagonal prior on a side x side grid (conservation rows)."""
    import torch

    from probcons.conditioning import condition
    from probcons.constraints import conservation_constraint
    from probcons.covariance import DiagonalCovariance
    from probcons.grid import Grid
    from probcons.prediction import GaussianPrediction

    generator = torch.Generator().manual_seed(0)
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), side, side)
    mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    variance = 0.1 + torch.rand(grid.size, generator=generator, dtype=torch.float64)
    mass = torch.rand(side, generator=generator, dtype=torch.float64)
    prior = GaussianPrediction(mean, DiagonalCovariance(variance), grid)
    return condition(prior, conservation_constraint(grid, mass))


def sampling_at_scale(size: int, draws: int, chunk_mb: float, repeats: int) -> dict:
    """100 posterior draws at N = size (chunks of draws) against randn of the same numbers."""
    import torch

    side = round(math.sqrt(size))
    posterior = diagonal_posterior(side)
    posterior.sample(2, torch.Generator().manual_seed(1))  # the lazy parts, not measured
    n = side * side
    per_chunk = max(1, min(draws, int(chunk_mb * MB // (8 * n))))
    chunks = [min(per_chunk, draws - start) for start in range(0, draws, per_chunk)]
    generator = torch.Generator().manual_seed(2)

    def ours():
        for count in chunks:
            posterior.sample(count, generator)

    def bound():
        for count in chunks:
            torch.randn((count, n), generator=generator, dtype=torch.float64)

    ours_s, bound_s = best_time(ours, repeats), best_time(bound, repeats)
    return {
        "n": n,
        "draws": draws,
        "draws_per_chunk": per_chunk,
        "ours_s": ours_s,
        "randn_s": bound_s,
        "ratio": ours_s / bound_s,
    }


def lowrank_case(side: int):
    """(prior, constraint): random mean, variance in [0.1, 1.1], factor 0.3 N(0, 1) of rank 16."""
    import torch

    from probcons.constraints import conservation_constraint
    from probcons.covariance import LowRankCovariance
    from probcons.grid import Grid
    from probcons.prediction import GaussianPrediction

    generator = torch.Generator().manual_seed(0)
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), side, side)
    mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    variance = 0.1 + torch.rand(grid.size, generator=generator, dtype=torch.float64)
    factor = 0.3 * torch.randn(grid.size, RANK, generator=generator, dtype=torch.float64)
    mass = torch.rand(side, generator=generator, dtype=torch.float64)
    prior = GaussianPrediction(mean, LowRankCovariance(variance, factor), grid)
    return prior, conservation_constraint(grid, mass)


def plain_woodbury(mean, diagonal, factor, weights, values):
    """Posterior mean and variance of N(mean, D + F F^T) given G u = b, one row per slice
    (weights (n_t, n_x) the row of each slice), by Woodbury on every point at once.

    S = B + M M^T with B = diag(G D G^T), M = G F; A = Sigma G^T has rows A_i = a_i e_j(i) +
    M F_i (a_i = D_i w_i); diag(A S^-1 A^T)_i = a_i^2 / B_j + 2 a_i (M_j . F_i) / B_j +
    F_i^T (M^T B^-1 M) F_i - |L^-1 (a_i M_j / B_j + M^T B^-1 M F_i)|^2, L L^T = I + M^T B^-1 M.
    """
    import torch

    n_t, n_x = weights.shape
    rank = factor.shape[1]
    local = diagonal.reshape(n_t, n_x) * weights  # a, (n_t, n_x)
    b_diag = (local * weights).sum(dim=1)  # B, (n_t,)
    projected = torch.einsum("jx,jxk->jk", weights, factor.reshape(n_t, n_x, rank))  # M
    scaled = projected / b_diag[:, None]  # B^-1 M
    inner = projected.T @ scaled
    lower = torch.linalg.cholesky(torch.eye(rank, dtype=torch.float64) + inner)
    residual = values - (weights * mean).sum(dim=1)  # b - G mu
    local_solved = residual / b_diag
    weights_k = torch.cholesky_solve((projected.T @ local_solved)[:, None], lower)[:, 0]
    solved = local_solved - scaled @ weights_k  # S^-1 (b - G mu)
    gain = local * solved[:, None] + (factor @ (projected.T @ solved)).reshape(n_t, n_x)
    posterior_mean = mean + gain
    a = local.reshape(-1, 1)
    rows = scaled.repeat_interleave(n_x, dim=0)  # M_j / B_j per point, (N, k)
    total = a * rows + factor @ inner
    mixed = (a[:, 0] ** 2) / b_diag.repeat_interleave(n_x)
    mixed += 2 * a[:, 0] * (rows * factor).sum(dim=1)
    mixed += ((factor @ inner) * factor).sum(dim=1)
    correction = torch.linalg.solve_triangular(lower, total.T, upper=False).square().sum(dim=0)
    variance = diagonal + (factor * factor).sum(dim=1) - (mixed - correction)
    return posterior_mean, variance.clamp_min(0).reshape(n_t, n_x)


def lowrank_worker(kind: str, side: int, repeats: int) -> dict:
    """In a fresh process: one update ("ours" or "plain") measured for peak memory, then timed;
    the posterior mean and variance's entries at every 997th point for the agreement check."""
    from probcons.conditioning import condition

    prior, constraint = lowrank_case(side)
    small_prior, small_constraint = lowrank_case(8)
    _ = condition(small_prior, small_constraint).variance  # initialisation, not measured
    weights = constraint.weights[:, 0, :].contiguous()
    values = constraint.values[:, 0]

    def ours():
        posterior = condition(prior, constraint)
        return posterior.mean, posterior.variance

    def plain():
        covariance = prior.covariance
        return plain_woodbury(
            prior.mean, covariance.diagonal_part, covariance.factor, weights, values
        )

    update = ours if kind == "ours" else plain
    with PeakMemory() as memory:
        mean, variance = update()
    entries = {
        "mean": mean.reshape(-1)[::997].tolist(),
        "variance": variance.reshape(-1)[::997].tolist(),
    }
    del mean, variance
    return {"seconds": best_time(update, repeats), "peak_mb": memory.mb, **entries}


def lowrank_update(side: int, repeats: int, threads: int) -> dict:
    """probcons' low-rank update against the plain Woodbury one, each in a fresh process (so
    that neither inherits the other's freed memory): time, peak memory, agreement."""
    results = {}
    for kind in ("ours", "plain"):
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--lowrank-worker",
            kind,
            "--side",
            str(side),
            "--repeats",
            str(repeats),
            "--threads",
            str(threads),
        ]
        finished = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        results[kind] = json.loads(finished.stdout.strip().splitlines()[-1])
    ours, plain = results["ours"], results["plain"]
    agreement = 0.0
    for name in ("mean", "variance"):
        scale = max(abs(value) for value in plain[name])
        worst = max(abs(a - b) for a, b in zip(ours[name], plain[name], strict=True))
        agreement = max(agreement, worst / scale)
    outputs_mb = 2 * side * side * 8 / MB  # posterior mean and variance: no update holds less
    memory_ratio = None
    if ours["peak_mb"] is not None and plain["peak_mb"] is not None:
        memory_ratio = max(ours["peak_mb"], outputs_mb) / max(plain["peak_mb"], outputs_mb)
    return {
        "grid": [side, side],
        "rank": RANK,
        "ours_s": ours["seconds"],
        "plain_s": plain["seconds"],
        "time_ratio": ours["seconds"] / plain["seconds"],
        "ours_peak_mb": ours["peak_mb"],
        "plain_peak_mb": plain["peak_mb"],
        "outputs_mb": outputs_mb,
        "memory_ratio": memory_ratio,
        "relative_difference": agreement,
    }


# -- report -----------------------------------------------------------------------------------


def machine(threads: int) -> dict:
    import numpy as np
    import torch

    from probcons.machine import cpu_name

    return {
        "cpu": cpu_name(),
        "cores_visible": os.cpu_count(),
        "torch_threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "load_average": list(os.getloadavg()),
    }


def table(result: dict) -> str:
    """results_pages.main_job_table, the table of docs/results/main-job.md (imported here, not
    at the top: a --lowrank-worker process measures its peak memory and needs none of it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_pages import main_job_table

    return main_job_table(result)


def measure(arguments) -> dict:
    import torch

    torch.set_num_threads(arguments.threads)
    settings = QUICK if arguments.quick else FULL
    repeats = settings["repeats"]
    python = sys.executable
    script = Path(python).parent / "probcons"  # the installed command, else the module
    probcons_command = [str(script)] if script.is_file() else [python, "-m", "probcons.cli"]
    probcons_command.append("--help")
    startup = {
        "help_s": fresh_process_seconds(probcons_command, repeats),
        "import_s": fresh_process_seconds([python, "-c", "import probcons.runner"], repeats),
    }
    with tempfile.TemporaryDirectory(prefix="main_job_") as directory:
        job = run_job(settings, Path(directory) / "run")
    backbone = job.pop("backbone")
    if hasattr(backbone, "backbone_for"):  # the shipped checkpoints, one per problem
        from probcons.problems import get_problem

        backbone = backbone.backbone_for(get_problem("stefan"))
    run_settings = job.pop("settings")
    job["settings"] = (
        f"{run_settings.n_functions} functions, {run_settings.grid[0]} x {run_settings.grid[1]}, "
        f"{backbone.n_samples} latent samples, {run_settings.draws} draws, report"
    )
    n_methods = len(run_settings.methods)
    points = run_settings.grid[0] * run_settings.grid[1]
    floors = {
        "decode_s": decode_floor(backbone, settings, run_settings.n_functions, repeats),
        "sampling_s": run_settings.n_functions
        * n_methods
        * randn_seconds((run_settings.draws, points), repeats),
    }
    sampling = [
        sampling_at_scale(size, 100 if not arguments.quick else 10, arguments.chunk_mb, repeats)
        for size in settings["sampling_sizes"]
    ]
    lowrank = lowrank_update(settings["lowrank_side"], repeats, arguments.threads)
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "quick": arguments.quick,
        "machine": machine(arguments.threads),
        "targets": {**TARGETS, "help_s": HELP_TARGET_S},
        "startup": startup,
        "job": job,
        "floors": floors,
        "sampling": sampling,
        "lowrank": lowrank,
    }


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--chunk-mb", type=float, default=2048, help="most MB of draws sampled at once"
    )
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--lowrank-worker", choices=("ours", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, default=FULL["lowrank_side"], help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=FULL["repeats"], help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.threads < 1:
        parser.error("--threads: expected a positive integer")
    if arguments.chunk_mb <= 0:
        parser.error("--chunk-mb: expected a positive number")
    return arguments


def main(argv=None) -> dict:
    arguments = parse_arguments(argv)
    if arguments.lowrank_worker:
        import torch

        torch.set_num_threads(arguments.threads)
        result = lowrank_worker(arguments.lowrank_worker, arguments.side, arguments.repeats)
        print(json.dumps(result))
        return result
    result = measure(arguments)
    print(table(result))
    path = arguments.out or (None if arguments.quick else RESULTS)
    if path is not None and not arguments.no_write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
