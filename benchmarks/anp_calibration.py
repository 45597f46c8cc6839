"""One variance scale for every function, or one that reads the function's own contexts?

`probcons calibrate` fits the ANP's decoder variance on held-out functions as s0 f^gamma sigma^2,
f the prediction's mean squared standardised error at its own contexts shrunk to 1
(`probcons.backbones.context_scale`); gamma = 0 is the single scalar it fitted before. This
script scores the shipped ANP checkpoints of each problem with three variance models of the same
predictions (the same latent draws):

    as trained   sigma^2
    scalar       s sigma^2, s the held-out scalar (stored as calibration.scalar_scale)
    context      s0 f^gamma sigma^2, the held-out context fit (calibration.context_scale and
                 context_fit_exponent), whether the checkpoint applies it or not

on the validation functions of benchmarks/anp_selection.py (`n_functions` parameters from the
training range with their own seed, never the test values; 100 contexts; the n_t x n_x grid;
`latent_samples` latent draws). Per model it prints and stores LL (mean pointwise log-density of
the truth), the 90 % coverage and the CRPS (closed form, of the Gaussian with the predictive's
mean and variance) of the ANP and of ProbConserv-ANP, each the mean over the functions with its
standard error, over all functions and over each third of the training range (low, middle, high
parameter).

    python benchmarks/anp_calibration.py --problems stefan,diffusion,pme

Writes benchmarks/results/anp_calibration.json ({problem: {"protocol": ..., checkpoint name:
{model: {subset: scores}}}}, merged by problem).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from probcons import metrics
from probcons.backbones.anp import ANPBackbone, default_checkpoint
from probcons.inference import ExactConditioning
from probcons.io import write_json
from probcons.problems import get_problem
from probcons.runner import collect_sites

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anp_selection import (  # noqa: E402
    VALIDATION_SEED,
    ValidationFunctions,
    add_protocol_arguments,
    check_protocol_arguments,
    summarize,
)
from gpme import machine, one_line_errors  # noqa: E402
from results_pages import CALIBRATION_SUBSETS as SUBSETS  # noqa: E402
from results_pages import calibration_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "anp_calibration.json"
PROBLEMS = ("stefan", "diffusion", "pme")
VARIANTS = ("anp", "softc-anp")
MODELS = ("as trained", "scalar", "context")
METHODS = ("unconstrained", "probconserv")


@dataclass
class VarianceModels:
    """A checkpoint's network (variance as trained) and, per model of MODELS, the (scale s0,
    exponent gamma) of its variance s0 f^gamma sigma^2."""

    backbone: ANPBackbone
    settings: dict[str, tuple[float, float]]

    @classmethod
    def load(cls, path: Path, latent_samples: int) -> VarianceModels:
        backbone = ANPBackbone.from_checkpoint(
            path, n_samples=latent_samples, variance_scale=1.0, context_exponent=0.0
        )
        calibration = backbone.metadata["extra"].get("calibration", {})
        if "context_scale" not in calibration:
            raise ValueError(
                f"checkpoint: {str(path)!r} has no context calibration; run `probcons calibrate` "
                "on it"
            )
        settings = {
            "as trained": (1.0, 0.0),
            "scalar": (calibration["scalar_scale"], 0.0),
            "context": (calibration["context_scale"], calibration["context_fit_exponent"]),
        }
        return cls(backbone, settings)


def third(parameter: float, train_range: tuple[float, float]) -> str:
    """Which third of the training range `parameter` lies in."""
    low, high = train_range
    index = min(2, int(3 * (parameter - low) / (high - low)))
    return SUBSETS[1 + index]


def score_models(models: VarianceModels, functions: ValidationFunctions) -> dict:
    """{model: {subset: {ll_<method>, coverage_90_<method>, crps_<method>, each with _se, n}}};
    one decoder pass per function, rescaled for each variance model."""
    problem, grid, model_file = functions.problem, functions.grid, functions.model
    rows: dict[str, dict[str, list[float]]] = {model: {} for model in models.settings}
    subsets = []
    cases = zip(functions.parameters, functions.contexts, functions.truths, strict=True)
    for index, (parameter, contexts, truth) in enumerate(
        tqdm(cases, total=len(functions.parameters), desc=problem.name, leave=False)
    ):
        subsets.append(third(parameter, problem.train_range))
        draws = models.backbone.decoder_draws(
            problem, parameter, contexts, grid, torch.Generator().manual_seed(index)
        )
        for model, (scale, exponent) in models.settings.items():
            prediction = draws.mixture(scale * draws.context_factor**exponent)
            constraint = collect_sites(
                ExactConditioning(model_file), prediction, problem, parameter, 0.0
            )
            for method in METHODS:
                posterior = constraint.posterior(method)
                mean, variance = posterior.mean, posterior.variance
                log_density = metrics.gaussian_log_likelihood(mean, variance, truth)
                inside = metrics.gaussian_interval_coverage(mean, variance, truth, 0.9)
                crps = metrics.crps_gaussian(mean, variance, truth)
                rows[model].setdefault(f"ll_{method}", []).append(float(log_density.mean()))
                rows[model].setdefault(f"crps_{method}", []).append(float(crps.mean()))
                rows[model].setdefault(f"coverage_90_{method}", []).append(
                    float(inside.double().mean())
                )
    scores: dict[str, dict] = {}
    for model, values in rows.items():
        scores[model] = {}
        for subset in SUBSETS:
            chosen = [i for i, s in enumerate(subsets) if subset == "all" or s == subset]
            scores[model][subset] = {"n": len(chosen), **summarize(values, chosen)}
    return scores


def table(problem_name: str, results: dict[str, dict]) -> str:
    """Markdown table (results_pages.calibration_rows, the table of docs/results/calibration.md):
    one row per checkpoint and variance model; each cell gives the mean over all functions, then
    over the low, middle and high third of the training range."""
    lines = [
        f"{problem_name}: validation functions (module docstring); each cell: all functions "
        "(± standard error) / low / middle / high third of the training range",
        "",
    ]
    return "\n".join(lines + calibration_rows(results))


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    add_protocol_arguments(parser, grid=101)
    arguments = parser.parse_args(argv)
    check_protocol_arguments(parser, arguments)
    arguments.problems = arguments.problems.split(",")
    for name in arguments.problems:
        if name not in PROBLEMS:
            parser.error(f"--problems: expected names from {', '.join(PROBLEMS)}, got {name!r}")
    return arguments


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    with one_line_errors("anp_calibration.py"):
        backbones = {
            (name, variant): VarianceModels.load(
                default_checkpoint(name, variant), arguments.latent_samples
            )
            for name in arguments.problems
            for variant in VARIANTS
        }
    print(f"machine: {machine()}")
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for name in arguments.problems:
        problem = get_problem(name)
        functions = ValidationFunctions.build(
            problem, arguments.n_functions, arguments.n_t, arguments.n_x
        )
        results = {
            variant: score_models(backbones[name, variant], functions) for variant in VARIANTS
        }
        print(table(name, results) + "\n", flush=True)
        stored[name] = {
            "protocol": {
                "n_functions": arguments.n_functions,
                "latent_samples": arguments.latent_samples,
                "grid": [arguments.n_t, arguments.n_x],
                "validation_seed": VALIDATION_SEED,
                "train_range": list(problem.train_range),
                "machine": machine(),
            },
            **results,
        }
    if not arguments.no_write:
        write_json(RESULTS, stored)


if __name__ == "__main__":
    main()
