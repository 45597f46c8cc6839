"""Does the ANP use its contexts and its latent? Short training runs of remedies, side by side.

Each variant trains the shipped ANP sizes on one problem for `--steps` steps (batch 16, the
shipped schedule compressed to that length) and is scored on the trainer's 64 held-out
validation functions with the first k of a random order of their 100 contexts, k in
K_VALUES, and 32 latent draws z ~ p(z | C):

    val MSE      of the mixture mean at 200 random targets per function
    blind MSE    the MSE of the best context-free predictor, the mean of the exact solution over
                 the training parameter range (what a model that ignores its contexts can reach)
    latent share between-sample variance / total predictive variance, summed over targets
    cov90        share of targets inside the central 90 % interval of N(mean, total variance)
    KL           KL(q(z | C u T) || p(z | C)) per function, the mean of the last three
                 validations

A latent that works widens when contexts are few (share falls with k); a collapsed one is flat.

    python benchmarks/anp_latent.py                     # Stefan, 625 steps, ~25 min on 1 core
    python benchmarks/anp_latent.py --variants elbo,beta-nll --steps 200   # quick look
    python benchmarks/anp_latent.py --checkpoints models/checkpoints/stefan-anp.pt \
        checkpoints/stefan-anp/last.pt      # score trained checkpoints instead (no training)

Writes benchmarks/results/anp_latent.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from probcons.backbones.anp import ANPNetwork, load_anp_network
from probcons.checkpoint import load_checkpoint
from probcons.io import write_json
from probcons.problems import get_problem
from probcons.training.data import keep_contexts
from probcons.training.trainer import (
    TrainingOptions,
    ValidationSet,
    predictive_scores,
    train_anp,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpme import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "anp_latent.json"
K_VALUES = (1, 3, 10, 100)
LATENT_SAMPLES = 32
VARIANTS = {
    # name: TrainingOptions overrides (the same as `probcons train` flags)
    "elbo": {},
    "kl-capacity": {"kl_capacity": 5.0},
    "deterministic-dropout": {"deterministic_dropout": 0.5},
    "sparse-contexts": {"min_contexts": 1},
    "beta-nll": {"likelihood_beta": 1.0},
    "marginal-likelihood": {"objective": "marginal-likelihood"},
}


def blind_mse(problem, n_parameters: int = 300, n_points: int = 101) -> float:
    """MSE of the mean over the training range of the exact solution, on an n x n grid."""
    generator = torch.Generator().manual_seed(0)
    parameters = problem.sample_parameters(n_parameters, generator)
    t = torch.linspace(*problem.t_range, n_points, dtype=torch.float64)
    x = torch.linspace(*problem.x_range, n_points, dtype=torch.float64)
    tt, xx = (grid.reshape(-1) for grid in torch.meshgrid(t, x, indexing="ij"))
    solutions = torch.stack([problem.solution(tt, xx, float(p)) for p in parameters])
    return float(((solutions - solutions.mean(0)) ** 2).mean())


def score(network: ANPNetwork, validation: ValidationSet, k: int, generator) -> dict[str, float]:
    """`predictive_scores` with the first k of a random order of each function's contexts."""
    subset = keep_contexts(validation.batch, k, generator)
    return {"k": k, **predictive_scores(network, subset, LATENT_SAMPLES, generator)}


def score_network(problem, network: ANPNetwork) -> list[dict[str, float]]:
    """`score` at every k in K_VALUES, on the validation functions of the default training
    options."""
    network.eval()
    validation = ValidationSet(problem, TrainingOptions())
    generator = torch.Generator().manual_seed(5)
    return [score(network, validation, k, generator) for k in K_VALUES]


def run_variant(problem, name: str, steps: int, folder: Path) -> dict:
    """Train one variant for `steps` steps and score its best checkpoint."""
    options = TrainingOptions(epochs=1, n_functions=16 * steps, **VARIANTS[name])
    started = time.perf_counter()
    result = train_anp(problem, folder / name, options=options, progress=False)
    seconds = time.perf_counter() - started
    history = load_checkpoint(result.last_path)["extra"]["history"]
    return {
        "options": VARIANTS[name],
        "steps": steps,
        "train_s": seconds,
        "kl": sum(h["kl"] for h in history[-3:]) / len(history[-3:]),
        "by_contexts": score_network(problem, load_anp_network(result.best_path)[0]),
    }


def checkpoint_row(problem, path: Path) -> dict:
    """Scores of a trained checkpoint; KL from its last recorded validation step."""
    network, payload = load_anp_network(path)
    history = payload["extra"].get("history") or [{"kl": math.nan}]
    step = payload["extra"].get("step")
    kl = next((h["kl"] for h in history if h.get("step") == step), history[-1]["kl"])
    return {
        "checkpoint": str(path),
        "step": step,
        "train_s": payload["extra"].get("train_seconds", math.nan),
        "kl": kl,
        "by_contexts": score_network(problem, network),
    }


def table(problem_name: str, blind: float, rows: dict[str, dict]) -> str:
    """Markdown table; MSE ratios against the `elbo` row of the same run (else the first row)."""
    base_name = "elbo" if "elbo" in rows else next(iter(rows))
    base = rows[base_name]
    ks = [entry["k"] for entry in next(iter(rows.values()))["by_contexts"]]
    head = ["variant", "KL nats"]
    head += [f"MSE k={k}" for k in ks] + [f"latent share k={k}" for k in ks]
    head += [f"cov90 k={ks[-1]}", f"MSE k={ks[-1]} / {base_name}", "train s"]
    lines = [
        f"{problem_name}: blind (context-free) MSE {blind:.3g}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, row in rows.items():
        scores = row["by_contexts"]
        cells = [name, f"{row['kl']:.1e}"]
        cells += [f"{entry['mse']:.2e}" for entry in scores]
        cells += [f"{entry['latent_share']:.4f}" for entry in scores]
        ratio = scores[-1]["mse"] / base["by_contexts"][-1]["mse"]
        cells += [f"{scores[-1]['coverage_90']:.3f}", f"{ratio:.2f}", f"{row['train_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", default="stefan")
    parser.add_argument("--steps", type=int, default=625)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--checkpoints", nargs="+", type=Path, default=None, help="score these, train nothing"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    missing = [str(path) for path in args.checkpoints or () if not path.is_file()]
    if missing:
        print(f"error: --checkpoints: no such file {missing[0]!r}", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"error: --threads: expected a positive integer, got {args.threads}", file=sys.stderr)
        return 2
    if unknown or args.steps < 1:
        print(
            f"error: --variants: expected names from {list(VARIANTS)}, got {unknown}"
            if unknown
            else f"error: --steps: expected a positive integer, got {args.steps}",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    problem = get_problem(args.problem)
    print(f"machine: {machine()}")
    blind = blind_mse(problem)
    rows = {}
    if args.checkpoints:
        for path in args.checkpoints:
            rows[str(path)] = checkpoint_row(problem, path)
    else:
        with tempfile.TemporaryDirectory() as folder:
            for name in names:
                rows[name] = run_variant(problem, name, args.steps, Path(folder))
                print(f"{name}: done in {rows[name]['train_s']:.0f} s", flush=True)
    print(table(problem.name, blind, rows))
    if not args.no_write:
        stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        section = "checkpoints" if args.checkpoints else "variants"
        entry = stored.setdefault(problem.name, {})
        entry.update({"machine": machine(), "blind_mse": blind})
        entry[section] = rows
        write_json(RESULTS, stored)
        print(f"wrote {RESULTS.relative_to(Path(__file__).resolve().parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
