"""Peak memory of `probcons run` as the test set grows: chunked (streamed) against one-shot.

Each measurement is a fresh process (its peak resident set size is its own) that runs the
runner on F functions with the shipped Stefan ensemble (a cheap backbone: no fitting per
function), three methods, D draws on an n x n grid, and writes the run directory (no report:
`benchmarks/report_memory.py` measures that). F is 1x, 2x and 10x the paper's test set (50
functions per parameter value). "chunked" appends `--chunk` functions at a time to the files;
"one-shot" holds every function before writing (chunk = F), which is what the runner did before
chunking, and is measured at the sizes that fit in memory, as the baseline of the same run.

    python benchmarks/evaluation_memory.py                    # 51 x 51, 100 draws, ~15 min
    python benchmarks/evaluation_memory.py --scales 1 --grid 21 --draws 20   # quick check

Rows are appended to benchmarks/results/evaluation_memory.json as they finish; a rerun with the
same settings skips the rows already there (pass --fresh to measure all again).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

PAPER_TEST_FUNCTIONS = 50
"""Test functions per test parameter value in the paper's protocol."""
RESULTS = Path(__file__).resolve().parent / "results" / "evaluation_memory.json"
METHODS = ("unconstrained", "hardc", "probconserv")


def measure(functions: int, chunk: int, grid: int, draws: int, out: Path) -> None:
    """Run the job in this process; print {"seconds", "cpu_seconds", "peak_rss_gb", "disk_gb"}."""
    import torch

    from probcons.runner import RunSettings, run

    torch.set_num_threads(1)
    settings = RunSettings(
        problem="stefan",
        backbone="ensemble",
        n_functions=functions,
        grid=(grid, grid),
        draws=draws,
        seed=0,
        out=out,
        overwrite=True,
        chunk_functions=chunk,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    run(settings, progress=False, report=False)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    on_disk = sum(path.stat().st_size for path in out.glob("*.nc")) / 2**30
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_rss_gb": peak_kb / 2**20,
                "disk_gb": on_disk,
            }
        )
    )


def _child(*arguments: str) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, __file__, *arguments],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def held_samples_gb(functions: int, grid: int, draws: int) -> float:
    """float32 draws of every function and method: what one-shot evaluation holds at once."""
    return len(METHODS) * functions * draws * grid * grid * 4 / 2**30


def main() -> None:
    from probcons.machine import cpu_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,2,10", help="multiples of the paper's test set")
    parser.add_argument(
        "--baseline-scales", default="1,2", help="scales also run one-shot (the baseline)"
    )
    parser.add_argument("--grid", type=int, default=51, help="n_t = n_x")
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=10, help="functions per chunk")
    parser.add_argument("--fresh", action="store_true", help="ignore rows already measured")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure-chunk", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.measure:
        measure(options.measure, options.measure_chunk, options.grid, options.draws, options.out)
        return

    scales = [int(value) for value in options.scales.split(",")]
    baseline = {int(value) for value in options.baseline_scales.split(",")}
    settings = {"grid": options.grid, "draws": options.draws, "chunk": options.chunk}
    jobs = [("chunked", scale) for scale in scales]
    jobs += [("one-shot", scale) for scale in scales if scale in baseline]
    rows = [] if options.fresh or not RESULTS.exists() else json.loads(RESULTS.read_text())
    rows = [row for row in rows if all(row.get(key) == value for key, value in settings.items())]
    done = {(row["mode"], row["scale"]) for row in rows}
    root = Path(tempfile.mkdtemp(prefix="probcons-evaluation-memory-"))
    try:
        for mode, scale in tqdm([job for job in jobs if job not in done], desc="runs"):
            functions = scale * PAPER_TEST_FUNCTIONS
            chunk = options.chunk if mode == "chunked" else functions
            measured = _child(
                "--measure",
                str(functions),
                "--measure-chunk",
                str(chunk),
                "--grid",
                str(options.grid),
                "--draws",
                str(options.draws),
                "--out",
                str(root / f"{mode}-{scale}"),
            )
            shutil.rmtree(root / f"{mode}-{scale}", ignore_errors=True)
            rows.append(
                {
                    "mode": mode,
                    "scale": scale,
                    "functions": functions,
                    **settings,
                    "methods": len(METHODS),
                    "backbone": "stefan ensemble (shipped)",
                    "held_samples_gb": held_samples_gb(functions, options.grid, options.draws),
                    **measured,
                    "load_average": os.getloadavg()[0],
                    "machine": f"{cpu_name()}, {os.cpu_count()} cores, 1 thread",
                }
            )
            rows.sort(key=lambda row: (row["mode"], row["scale"]))
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    one_shot = {row["scale"]: row for row in rows if row["mode"] == "one-shot"}
    print(f"machine: {rows[0]['machine'] if rows else cpu_name()}")
    print(
        f"stefan, shipped ensemble, {options.grid} x {options.grid} grid, {options.draws} draws, "
        f"{len(METHODS)} methods, chunks of {options.chunk} functions"
    )
    print("| test set | functions | mode | peak RSS | / one-shot | draws held one-shot | time |")
    print("|---|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda row: (row["scale"], row["mode"])):
        reference = one_shot.get(row["scale"])
        ratio = f"{row['peak_rss_gb'] / reference['peak_rss_gb']:.2f}" if reference else "-"
        print(
            f"| {row['scale']}x | {row['functions']} | {row['mode']} | "
            f"{row['peak_rss_gb']:.2f} GiB | {ratio} | {row['held_samples_gb']:.2f} GiB | "
            f"{row['seconds']:.0f} s |"
        )


if __name__ == "__main__":
    main()
