"""Choosing an ANP's training settings by what ProbConserv does with it, on validation functions.

ProbConserv moves each latent sample's mean by Sigma G^T (G Sigma G^T)^-1 (b - G mu): the mass
defect goes where the decoder variance is. A checkpoint with the better unconstrained mean can
still give the worse ProbConserv mean when its variance is not where its error is. This script
scores trained checkpoints of one problem side by side on `n_functions` validation functions:
parameters drawn from the training range with their own seed (VALIDATION_SEED), never the
benchmark's test values, 100 contexts each (their own seeds), the 201 x 201 grid, `latent_samples`
latent draws mixed by the law of total variance. Per checkpoint it prints and stores

    val NLL        the training run's best validation NLL (from the checkpoint)
    MSE            of the ANP, HardC-ANP and ProbConserv-ANP means against the exact field
    LL             mean pointwise Gaussian log-density of the truth, ANP and ProbConserv-ANP
    corr(|e|, sd)  correlation over the grid of the ANP's absolute error and predictive sd

each the mean over the functions, with its standard error (`_se`; shown for ProbConserv's MSE),
and ProbConserv's MSE against the first checkpoint listed, function by function: the geometric
mean of the ratio and the share of functions where it is below 1.

    python benchmarks/anp_selection.py --problem pme DIR_A/best.pt DIR_B/best.pt ...

Writes benchmarks/results/anp_selection.json ({problem: {"protocol": ..., "checkpoints": {path:
scores}}}, merged by checkpoint path).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from probcons import metrics
from probcons.backbones.anp import ANPBackbone
from probcons.inference import ExactConditioning
from probcons.io import write_json
from probcons.problems import get_problem, sample_contexts
from probcons.runner import collect_sites, load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpme import machine, one_line_errors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "anp_selection.json"
VALIDATION_SEED = 977
CONTEXT_SEED = 5_000_000
METHODS = ("unconstrained", "hardc", "probconserv")


def load_candidate(path: Path, problem_name: str, latent_samples: int) -> ANPBackbone:
    """The ANP of checkpoint `path`; ValueError naming `checkpoints` if it is not an ANP
    checkpoint of `problem_name`."""
    try:
        backbone = ANPBackbone.from_checkpoint(path, n_samples=latent_samples)
    except Exception as error:  # not a probcons ANP checkpoint: say which file, not a traceback
        raise ValueError(
            f"checkpoints: {str(path)!r} is not an ANP checkpoint ({error})"
        ) from error
    if backbone.problem != problem_name:
        raise ValueError(
            f"checkpoints: {str(path)!r} was trained on {backbone.problem!r}, "
            f"expected --problem {problem_name!r}"
        )
    return backbone


def checkpoint_label(backbone: ANPBackbone) -> str:
    """A short name for a checkpoint: its training settings that this comparison varies."""
    hyperparameters = backbone.metadata["hyperparameters"]
    training, anp = hyperparameters["training"], hyperparameters["anp"]
    return (
        f"beta {training.get('likelihood_beta', 0.0):g}, epochs {training['epochs']}, "
        f"{anp.get('latent_aggregation', 'mean')} aggregation, softc {training['softc_lambda']:g}"
    )


@dataclass
class ValidationFunctions:
    """The functions every checkpoint is scored on: parameters, their contexts and exact fields
    (n_t, n_x) on `grid`, and the problem's Pyro model."""

    problem: object
    grid: object
    model: object
    parameters: list[float]
    contexts: list
    truths: list[torch.Tensor]

    @classmethod
    def build(cls, problem, n_functions: int, n_t: int, n_x: int) -> ValidationFunctions:
        """Draw the parameters (VALIDATION_SEED) and contexts, solve each exactly, once."""
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        parameters = problem.sample_parameters(n_functions, generator).tolist()
        grid = problem.grid(n_t, n_x)
        times, positions = grid.mesh()
        contexts = [
            sample_contexts(problem, p, torch.Generator().manual_seed(CONTEXT_SEED + index))
            for index, p in enumerate(parameters)
        ]
        truths = [problem.solution(times, positions, p) for p in parameters]
        model = load_model(ROOT / "models" / f"{problem.name}.py")
        return cls(problem, grid, model, parameters, contexts, truths)


def summarize(rows: dict[str, list[float]], chosen: list[int] | None = None) -> dict:
    """{key: mean, key_se: its standard error} over the functions `chosen` (all by default)."""
    scores = {}
    for key, values in rows.items():
        picked = values if chosen is None else [values[i] for i in chosen]
        scores[key], scores[f"{key}_se"] = metrics.mean_and_standard_error(picked)
    return scores


def score_checkpoint(backbone: ANPBackbone, functions: ValidationFunctions, name: str) -> dict:
    """Mean over the validation functions of each score (module docstring) of one checkpoint."""
    problem, grid, model = functions.problem, functions.grid, functions.model
    rows: dict[str, list[float]] = {}
    cases = zip(functions.parameters, functions.contexts, functions.truths, strict=True)
    for index, (parameter, contexts, truth) in enumerate(
        tqdm(cases, total=len(functions.parameters), desc=name, leave=False)
    ):
        prediction = backbone.predict(
            problem, parameter, contexts, grid, torch.Generator().manual_seed(index)
        )
        constraint = collect_sites(ExactConditioning(model), prediction, problem, parameter, 0.0)
        for method in METHODS:
            posterior = constraint.posterior(method)
            rows.setdefault(f"mse_{method}", []).append(metrics.mse(posterior.mean, truth))
            if method != "hardc":
                log_density = metrics.gaussian_log_likelihood(
                    posterior.mean, posterior.variance, truth
                )
                rows.setdefault(f"ll_{method}", []).append(float(log_density.mean()))
        error = (truth - prediction.mean).abs().flatten()
        spread = prediction.variance.sqrt().flatten()
        rows.setdefault("corr_error_sd", []).append(float(np.corrcoef(error, spread)[0, 1]))
    scores = summarize(rows)
    scores["mse_probconserv_per_function"] = rows["mse_probconserv"]
    scores["val_nll"] = float(backbone.metadata["extra"]["val_nll"])
    scores["label"] = checkpoint_label(backbone)
    return scores


def paired_ratio(values, reference) -> tuple[float, float]:
    """Geometric mean over functions of values / reference, and the share of functions where
    values < reference (the same functions, so the comparison is paired)."""
    ratio = np.asarray(values) / np.asarray(reference)
    return float(np.exp(np.log(ratio).mean())), float((ratio < 1).mean())


def table(problem_name: str, results: dict[str, dict]) -> str:
    """Markdown table of `results` ({path: scores}); the paired ratio is against the first row."""
    lines = [
        f"{problem_name}: validation functions (module docstring)",
        "",
        "| checkpoint | settings | val NLL | MSE ANP | MSE HardC | MSE ProbConserv "
        "| ProbConserv / first row (paired; share better) | LL ANP | LL ProbConserv "
        "| corr(abs e, sd) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference = next(iter(results.values()))["mse_probconserv_per_function"]
    for row, (path, s) in enumerate(results.items()):
        ratio, better = paired_ratio(s["mse_probconserv_per_function"], reference)
        paired = "reference" if row == 0 else f"{ratio:.2f} ({better:.0%})"
        lines.append(
            f"| {path} | {s['label']} | {s['val_nll']:.3f} | {s['mse_unconstrained']:.3e} "
            f"| {s['mse_hardc']:.3e} | {s['mse_probconserv']:.3e} ± {s['mse_probconserv_se']:.1e} "
            f"| {paired} | {s['ll_unconstrained']:.2f} "
            f"| {s['ll_probconserv']:.2f} | {s['corr_error_sd']:.2f} |"
        )
    return "\n".join(lines)


COUNT_OPTIONS = ("n_functions", "latent_samples", "n_t", "n_x", "threads")


def add_protocol_arguments(parser: argparse.ArgumentParser, grid: int) -> None:
    """Options of the validation protocol (COUNT_OPTIONS, --no-write); grid: default n_t, n_x."""
    parser.add_argument("--n-functions", type=int, default=48)
    parser.add_argument("--latent-samples", type=int, default=32)
    parser.add_argument("--n-t", type=int, default=grid)
    parser.add_argument("--n-x", type=int, default=grid)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")


def check_protocol_arguments(parser: argparse.ArgumentParser, arguments) -> None:
    """Exit 2 with one line naming the first of COUNT_OPTIONS below 1."""
    for name in COUNT_OPTIONS:
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected at least 1")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--problem", required=True, choices=("diffusion", "pme", "stefan"))
    add_protocol_arguments(parser, grid=201)
    arguments = parser.parse_args(argv)
    check_protocol_arguments(parser, arguments)
    for path in arguments.checkpoints:
        if not path.is_file():
            parser.error(f"checkpoints: {str(path)!r} is not a file")
    return arguments


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    with one_line_errors("anp_selection.py"):
        backbones = {
            str(path): load_candidate(path, arguments.problem, arguments.latent_samples)
            for path in arguments.checkpoints
        }
    problem = get_problem(arguments.problem)
    functions = ValidationFunctions.build(
        problem, arguments.n_functions, arguments.n_t, arguments.n_x
    )
    results = {
        path: score_checkpoint(backbone, functions, Path(path).name)
        for path, backbone in backbones.items()
    }
    print(f"machine: {machine()}")
    print(table(arguments.problem, results))
    if not arguments.no_write:
        stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        section = stored.setdefault(arguments.problem, {"checkpoints": {}})
        section["checkpoints"].update(results)
        section["protocol"] = {
            "n_functions": arguments.n_functions,
            "latent_samples": arguments.latent_samples,
            "grid": [arguments.n_t, arguments.n_x],
            "validation_seed": VALIDATION_SEED,
            "parameters": functions.parameters,
            "machine": machine(),
        }
        write_json(RESULTS, stored)


if __name__ == "__main__":
    main()
