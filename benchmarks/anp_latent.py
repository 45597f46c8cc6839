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
How wide it should be: the Bayes posterior over the problem's one parameter given the same k
contexts (uniform prior on the training range, on a grid of ORACLE_GRID values; the contexts
are exact, read with a Gaussian noise of ORACLE_NOISE so that the grid resolves the posterior)
gives the oracle spread, E_targets Var_posterior u(t, x; p): the between-function variance an
ideal latent would carry. `--oracle` prints it beside the networks' between-sample variance.

    python benchmarks/anp_latent.py --latent-aggregation mean   # Stefan, 625 steps, ~25 min
    python benchmarks/anp_latent.py --variants elbo,beta-nll --steps 200   # quick look
    python benchmarks/anp_latent.py --checkpoints models/checkpoints/stefan-anp.pt \
        checkpoints/stefan-anp/last.pt      # score trained checkpoints instead (no training)
    python benchmarks/anp_latent.py --oracle --checkpoints models/checkpoints/stefan-anp.pt

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

from probcons.backbones.anp import LATENT_AGGREGATIONS, ANPConfig, ANPNetwork, load_anp_network
from probcons.checkpoint import load_checkpoint
from probcons.io import write_json
from probcons.problems import get_problem
from probcons.training.data import keep_contexts
from probcons.training.fit import train_anp
from probcons.training.trainer import (
    TrainingOptions,
    ValidationSet,
    mixture_scores,
    predictive_draws,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpme import machine  # noqa: E402
from results_pages import latent_rows  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "anp_latent.json"
K_VALUES = (1, 3, 10, 100)
LATENT_SAMPLES = 32
ORACLE_GRID = 401
ORACLE_NOISE = 1e-3
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


def score(network: ANPNetwork, subset, generator) -> dict[str, float]:
    """`mixture_scores` of LATENT_SAMPLES draws z ~ p(z | C) on a batch, with the mean
    between-sample variance (`between`) and total predictive variance (`total`) at its targets."""
    means, stds = predictive_draws(network, subset, LATENT_SAMPLES, generator)
    between = means.var(0, unbiased=False)
    return {
        **mixture_scores(means, stds, subset.target_u),
        "between": float(between.mean()),
        "total": float((between + (stds**2).mean(0)).mean()),
    }


def score_network(problem, network: ANPNetwork, oracle: bool = False) -> list[dict]:
    """`score` at every k in K_VALUES on the validation functions of the default training
    options, with the first k of a random order of each function's contexts (one generator for
    the orders and the draws: networks of one latent size see the same subsets); with oracle,
    also `oracle_spread` on the same subsets."""
    network.eval()
    validation = ValidationSet(problem, TrainingOptions())
    generator = torch.Generator().manual_seed(5)
    rows = []
    for k in K_VALUES:
        subset = keep_contexts(validation.batch, k, generator)
        rows.append({"k": k, **score(network, subset, generator)})
        if oracle:
            rows[-1]["oracle"] = oracle_spread(problem, subset)
    return rows


def oracle_spread(problem, batch) -> dict[str, float]:
    """Bayes posterior over the parameter p given each function's contexts (uniform prior on
    train_range, ORACLE_GRID values, contexts read with N(0, ORACLE_NOISE^2) noise):
    `between` = mean over functions and targets of Var_post u(t, x; p), `mse` of the
    posterior mean u at the targets."""
    grid = torch.linspace(*problem.train_range, ORACLE_GRID, dtype=torch.float64)
    spread, error = [], []
    for b in range(batch.context_u.shape[0]):
        tx = torch.cat([batch.context_tx[b], batch.target_tx[b]]).to(torch.float64)
        values = torch.stack([problem.solution(tx[:, 0], tx[:, 1], float(p)) for p in grid])
        k = batch.context_u.shape[1]
        misfit = ((values[:, :k] - batch.context_u[b].to(torch.float64)) ** 2).sum(-1)
        weights = torch.softmax(-0.5 * misfit / ORACLE_NOISE**2, dim=0)
        mean = weights @ values[:, k:]
        spread.append(weights @ (values[:, k:] - mean) ** 2)
        error.append((mean - batch.target_u[b].to(torch.float64)) ** 2)
    return {"between": float(torch.stack(spread).mean()), "mse": float(torch.stack(error).mean())}


def spread_table(rows: dict[str, dict]) -> str:
    """Markdown: the oracle's between-function variance and MSE (on the first row's context
    subsets), and each network's between-sample and total predictive variance and MSE, per k."""
    oracle = [entry["oracle"] for entry in next(iter(rows.values()))["by_contexts"]]
    ks = [entry["k"] for entry in next(iter(rows.values()))["by_contexts"]]
    head = ["row"] + [f"between var k={k}" for k in ks] + [f"total var k={k}" for k in ks]
    head += [f"MSE k={k}" for k in ks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells = ["oracle (Bayes posterior over p)"] + [f"{e['between']:.2e}" for e in oracle]
    cells += ["n/a"] * len(ks) + [f"{e['mse']:.2e}" for e in oracle]
    lines.append("| " + " | ".join(cells) + " |")
    for name, row in rows.items():
        scores = row["by_contexts"]
        cells = [name] + [f"{e['between']:.2e}" for e in scores]
        cells += [f"{e['total']:.2e}" for e in scores] + [f"{e['mse']:.2e}" for e in scores]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_variant(
    problem,
    name: str,
    steps: int,
    folder: Path,
    oracle: bool = False,
    aggregation: str = ANPConfig.latent_aggregation,
) -> dict:
    """Train one variant for `steps` steps with the given latent aggregation and score its best
    checkpoint."""
    options = TrainingOptions(epochs=1, n_functions=16 * steps, **VARIANTS[name])
    config = ANPConfig(
        t_range=problem.t_range, x_range=problem.x_range, latent_aggregation=aggregation
    )
    started = time.perf_counter()
    result = train_anp(problem, folder / name, config, options, progress=False)
    seconds = time.perf_counter() - started
    history = load_checkpoint(result.last_path)["extra"]["history"]
    return {
        "options": VARIANTS[name],
        "latent_aggregation": aggregation,
        "steps": steps,
        "train_s": seconds,
        "kl": sum(h["kl"] for h in history[-3:]) / len(history[-3:]),
        "by_contexts": score_network(problem, load_anp_network(result.best_path)[0], oracle),
    }


def checkpoint_row(problem, path: Path, oracle: bool = False) -> dict:
    """Scores of a trained checkpoint; KL from its last recorded validation step."""
    network, payload = load_anp_network(path)
    history = payload["extra"].get("history") or [{"kl": math.nan}]
    step = payload["extra"].get("step")
    kl = next((h["kl"] for h in history if h.get("step") == step), history[-1]["kl"])
    return {
        "checkpoint": str(path),
        "step": step,
        "train_s": payload["extra"].get("seconds", payload["extra"].get("train_seconds", math.nan)),
        "kl": kl,
        "by_contexts": score_network(problem, network, oracle),
    }


def table(problem_name: str, blind: float, rows: dict[str, dict]) -> str:
    """Markdown table (results_pages.latent_rows, the table of docs/results/anp-training.md);
    MSE ratios against the `elbo` row of the same run (else the first row)."""
    lines = [f"{problem_name}: blind (context-free) MSE {blind:.3g}", ""]
    return "\n".join(lines + latent_rows(rows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", default="stefan")
    parser.add_argument("--steps", type=int, default=625)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--checkpoints", nargs="+", type=Path, default=None, help="score these, train nothing"
    )
    parser.add_argument(
        "--latent-aggregation",
        choices=LATENT_AGGREGATIONS,
        default=ANPConfig.latent_aggregation,
        help="of the variants trained here (the committed variants table used mean)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also the Bayes posterior's spread on the first row's context subsets",
    )
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
        for index, path in enumerate(args.checkpoints):
            rows[str(path)] = checkpoint_row(problem, path, args.oracle and index == 0)
    else:
        with tempfile.TemporaryDirectory() as folder:
            for index, name in enumerate(names):
                oracle = args.oracle and index == 0
                rows[name] = run_variant(
                    problem, name, args.steps, Path(folder), oracle, args.latent_aggregation
                )
                print(f"{name}: done in {rows[name]['train_s']:.0f} s", flush=True)
    print(table(problem.name, blind, rows))
    if args.oracle:
        print()
        print(spread_table(rows))
    if not args.no_write:
        stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        section = "checkpoints" if args.checkpoints else "variants"
        section += "_oracle" if args.oracle else ""  # kept apart from the rows without it
        entry = stored.setdefault(problem.name, {})
        entry.update({"machine": machine(), "blind_mse": blind})
        entry[section] = rows
        write_json(RESULTS, stored)
        print(f"wrote {RESULTS.relative_to(Path(__file__).resolve().parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
