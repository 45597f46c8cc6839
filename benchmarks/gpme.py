"""The ProbConserv comparison on the GPME problems: ANP, SoftC-ANP, HardC-ANP, ProbConserv-ANP,
the GP backbone unconstrained and with ProbConserv, and the deep ensemble and FNO ensemble
unconstrained, with HardC and with ProbConserv, side by side.

    python benchmarks/gpme.py --problems stefan                 # shipped checkpoints
    python benchmarks/gpme.py --problems stefan --train-missing # train what is missing first
    python benchmarks/gpme.py --methods ensembles --n-functions 10  # only the ensemble rows,
                                                                    # merged into the stored JSON

Per problem and test parameter: `n_functions` test functions (contexts drawn per function with
a fixed seed, the same for every method), a uniform (n_t x n_x) evaluation grid, `latent_samples`
ANP latent draws mixed by the law of total variance, `draws` posterior samples per function for
CRPS, coverage and the front position. The ensembles see (t, x, parameter) and not the contexts,
so their prediction is the same for every test function of a parameter value: it is computed
once per value and only the posterior draws differ between functions (MSE, CE and LL then have
a standard error of 0; CRPS, coverage and the front position average the draws' Monte Carlo
noise). ProbConserv and HardC use the problem's Pyro model (models/PROBLEM.py) and its
conservation site, exactly as `probcons run` does. Prints one table per problem and parameter
with the machine, writes benchmarks/results/gpme.json (merged, method by method, with what was
not run) and gpme.md, and, when the ANP methods ran on Stefan u* = 0.6, the shock-position
figure. Ensembles come from models/checkpoints/<problem>-{ensemble,fno-ensemble}.pt, or from
`--ensemble-dir` where it holds them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from probcons import metrics
from probcons.backbones.anp import ANPBackbone, default_checkpoint
from probcons.backbones.ensemble import DeepEnsembleBackbone
from probcons.backbones.fno_ensemble import FNOEnsembleBackbone
from probcons.backbones.gp import GPBackbone
from probcons.backbones.member_training import load_or_train_ensemble
from probcons.checkpoint import load_checkpoint
from probcons.covariance import LowRankCovariance
from probcons.inference import ExactConditioning
from probcons.io import write_json, write_text
from probcons.machine import cpu_name
from probcons.problems import get_problem
from probcons.runner import (
    collect_sites,
    draw_and_score,
    function_contexts,
    load_model,
    predict_function,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_pages import gpme_table, shock_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpme.json"
TABLES = ROOT / "benchmarks" / "results" / "gpme.md"
SHOCKS = ROOT / "benchmarks" / "results" / "stefan_shock_positions.json"
FIGURES = ROOT / "docs" / "figures"
METHODS = {
    # name: (backbone, method of the runner)
    "anp": ("anp", "unconstrained"),
    "softc-anp": ("softc-anp", "unconstrained"),
    "hardc-anp": ("anp", "hardc"),
    "probconserv-anp": ("anp", "probconserv"),
    "anp-e2e": ("anp-e2e", "unconstrained"),
    "probconserv-anp-e2e": ("anp-e2e", "probconserv"),
    "gp": ("gp", "unconstrained"),
    "probconserv-gp": ("gp", "probconserv"),
    "ensemble": ("ensemble", "unconstrained"),
    "hardc-ensemble": ("ensemble", "hardc"),
    "probconserv-ensemble": ("ensemble", "probconserv"),
    "fno-ensemble": ("fno-ensemble", "unconstrained"),
    "hardc-fno-ensemble": ("fno-ensemble", "hardc"),
    "probconserv-fno-ensemble": ("fno-ensemble", "probconserv"),
}
METHOD_GROUPS = {
    # shorthand accepted by --methods
    "anps": ("anp", "softc-anp", "hardc-anp", "probconserv-anp"),
    "e2e": ("anp-e2e", "probconserv-anp-e2e"),
    "gps": ("gp", "probconserv-gp"),
    "ensembles": tuple(m for m, (backbone, _) in METHODS.items() if "ensemble" in backbone),
}
ENSEMBLE_BACKBONES = ("ensemble", "fno-ensemble")
SHIPPED_ENSEMBLES = {
    # variant: (config overrides, the same as `probcons train` flags, run-folder suffix); the
    # FNO members are smaller than the backbone's default so that 5 fit in 2 MiB
    "ensemble": ({}, "", ""),
    "fno-ensemble": ({"width": 12, "modes": (6, 6)}, " --width 12 --modes 6", "-w12m6"),
}
CONTEXT_FREE = (DeepEnsembleBackbone, FNOEnsembleBackbone)
"""Backbones whose prediction ignores the contexts (computed once per parameter value)."""
JSON_METRICS = (
    *("mse", "mse_t", "ce", "ll", "crps", "coverage_90", "shock_position_error"),
    *metrics.PROTOCOL_KEYS["paper"],
)
"""Stored per method: the probcons protocol's metrics and the paper's (MSE, LL, signed CE at t*)."""
SHOCK_METHODS = ("anp", "softc-anp", "hardc-anp", "probconserv-anp", "probconserv-anp-e2e")
ANP_VARIANTS = ("anp", "softc-anp", "anp-e2e")
E2E_FLAGS = (
    *("--objective", "constrained-crps", "--slice-points", "201"),
    *("--epochs", "1", "--learning-rate", "3e-4"),
)
"""`probcons train` flags of the end-to-end checkpoints (docs/results/end-to-end.md), each
fine-tuned from the shipped post-hoc <problem>-anp.pt (--init)."""
SHOCK_DRAWS = 1000
SHOCK_CHUNK = 100
SHOCK_SEED = 12345
PUBLISHED_DIFFUSION = {
    # method: (CE x1e-3, LL, MSE x1e-4 at t = 0.5), REFERENCE section 3 (paper, Table 1)
    "anp": ("4.68 (0.10)", "2.72 (0.02)", "1.71 (0.41)"),
    "softc-anp": ("3.47 (0.17)", "2.40 (0.02)", "2.24 (0.78)"),
    "hardc-anp": ("0", "3.08 (0.04)", "1.37 (0.33)"),
    "probconserv-anp": ("0", "2.74 (0.02)", "1.55 (0.33)"),
}


@contextlib.contextmanager
def one_line_errors(script: str):
    """Turn a ValueError (bad input) inside the block into `script: error: ...` on stderr and
    exit status 2, with no traceback."""
    try:
        yield
    except ValueError as error:
        print(f"{script}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def machine() -> str:
    """One line: CPU, threads, Python and torch."""
    cpu = cpu_name()
    return (
        f"{cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def ensure_checkpoint(problem: str, variant: str, train_missing: bool) -> Path:
    """The shipped checkpoint; trained by the documented command when missing and allowed."""
    path = default_checkpoint(problem, variant)
    if path.is_file():
        return path
    flags = {"anp": [], "softc-anp": ["--softc-lambda", "1"], "anp-e2e": e2e_flags(problem)}
    if not train_missing:
        raise SystemExit(
            f"missing {path}; pass --train-missing or run `probcons train {problem} --backbone anp"
            f"{''.join(' ' + flag for flag in flags[variant])} --export {path}`"
        )
    from probcons.training.command import main as train_main

    arguments = [problem, "--export", str(path), "--out", f"checkpoints/{problem}-{variant}"]
    train_main(arguments + flags[variant])
    return path


def e2e_flags(problem: str) -> list[str]:
    """`probcons train` flags of the end-to-end checkpoint: the conditioned mixture's CRPS,
    fine-tuned from the shipped post-hoc checkpoint."""
    return [*E2E_FLAGS, "--init", str(default_checkpoint(problem, "anp"))]


def training_seconds(path: Path) -> tuple[float | None, float | None]:
    """(wall, CPU) seconds of the whole training run recorded in an exported checkpoint; for a
    run fine-tuned from another checkpoint (training option init), the sum of both runs."""
    payload = load_checkpoint(path)
    extra = payload["extra"]
    wall = extra.get("run_train_seconds", extra.get("train_seconds"))
    cpu = extra.get("run_cpu_seconds", extra.get("cpu_seconds"))
    init = payload["hyperparameters"].get("training", {}).get("init")
    if init is not None and Path(init).is_file() and Path(init).resolve() != path.resolve():
        base_wall, base_cpu = training_seconds(Path(init))
        wall = None if wall is None or base_wall is None else float(wall) + base_wall
        cpu = None if cpu is None or base_cpu is None else float(cpu) + base_cpu
    return (None if wall is None else float(wall)), (None if cpu is None else float(cpu))


def ensemble_checkpoint(problem: str, variant: str, directory: Path | None) -> Path:
    """directory/<problem>-<variant>.pt if it exists (or nothing is shipped), else the shipped
    models/checkpoints/<problem>-<variant>.pt."""
    shipped = default_checkpoint(problem, variant)
    if directory is None:
        return shipped
    candidate = Path(directory) / f"{problem}-{variant}.pt"
    return candidate if candidate.is_file() or not shipped.is_file() else shipped


def load_ensemble(problem: str, variant: str, directory: Path | None, train_missing: bool):
    """The ensemble backbone of `problem` (variant 'ensemble' or 'fno-ensemble'); when missing
    and allowed, trained as the shipped one was (SHIPPED_ENSEMBLES) into its checkpoint."""
    path = ensemble_checkpoint(problem, variant, directory)
    config, flags, suffix = SHIPPED_ENSEMBLES[variant]
    if not path.is_file() and not train_missing:
        raise SystemExit(
            f"missing {path}; pass --train-missing or run `probcons train {problem} "
            f"--backbone {variant}{flags} --export {path}`"
        )
    return load_or_train_ensemble(
        problem,
        variant,
        checkpoint=path,
        train_missing=train_missing,
        config=config,
        directory=Path("checkpoints") / f"{problem}-{variant}{suffix}",
    )


def ensemble_training_seconds(backbone) -> float | None:
    """Wall seconds of training all members one after another (sum of the members' times)."""
    seconds = backbone.metadata.get("seconds")
    return None if seconds is None else float(sum(seconds))


def spread_share(prediction) -> float | None:
    """Share of the predictive variance (summed over the grid) carried by the member spread
    F F^T of an ensemble's LowRankCovariance; None for other covariances and for mixtures."""
    covariance = getattr(prediction, "covariance", None)
    if not isinstance(covariance, LowRankCovariance):
        return None
    spread = float(covariance.factor.square().sum())
    return spread / (spread + float(covariance.diagonal_part.sum()))


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    summary: dict[str, float] = {}
    for key in rows[0]:
        mean, error = metrics.mean_and_standard_error([row[key] for row in rows])
        summary[key], summary[f"{key}_se"] = mean, error
    return summary


def evaluate(problem, parameter, backbones, methods, args, model, train_s, shock_store):
    """Scores of every method over the test functions at one parameter value."""
    grid = problem.grid(args.n_t, args.n_x)
    times, positions = grid.mesh()
    truth = problem.solution(times, positions, parameter)
    rows: dict[str, list[dict[str, float]]] = {method: [] for method in methods}
    floor = []
    seconds: dict[str, float] = {name: 0.0 for name in backbones}
    model_args = (problem, parameter, args.sigma_g)
    index = grid.time_index(problem.time_of_interest)
    cached: dict[str, tuple] = {}  # context-free backbones: (prediction, constraint, posteriors)
    for function in range(args.n_functions):
        contexts = function_contexts(problem, parameter, args.seed, function)
        for name, backbone in backbones.items():
            started = time.perf_counter()
            if name in cached:
                prediction, constraint, posteriors = cached[name]
            else:
                prediction = predict_function(
                    backbone, problem, parameter, grid, args.seed, function, contexts
                )
                constraint = collect_sites(ExactConditioning(model), prediction, *model_args)
                posteriors = {}
                if isinstance(backbone, CONTEXT_FREE):
                    cached[name] = (prediction, constraint, posteriors)
            if name == next(iter(backbones)):
                floor.append(metrics.conservation_error(truth, constraint))
            for method, (backbone_name, runner_method) in METHODS.items():
                if backbone_name != name or method not in methods:
                    continue
                if method not in posteriors:
                    posteriors[method] = constraint.posterior(runner_method)
                posterior = posteriors[method]
                if name not in cached:
                    del posteriors[method]
                _, _, scores = draw_and_score(
                    posterior, constraint, truth, problem, parameter, args, function
                )
                if hasattr(posterior, "latent_variance_share"):
                    scores["latent_variance_share"] = posterior.latent_variance_share()
                share = spread_share(prediction)
                if share is not None:
                    scores["member_spread_share"] = share
                rows[method].append(scores)
                if shock_store is not None and function == 0 and method in SHOCK_METHODS:
                    threshold = problem.front_threshold(parameter)
                    profiles = []
                    shock_generator = torch.Generator().manual_seed(SHOCK_SEED)
                    for _ in range(SHOCK_DRAWS // SHOCK_CHUNK):
                        profiles.append(posterior.sample(SHOCK_CHUNK, shock_generator)[:, index])
                    shock_store[method] = metrics.front_positions(
                        torch.cat(profiles), grid.x, threshold
                    ).tolist()
            seconds[name] += time.perf_counter() - started
    results = {}
    for method in methods:
        summary = summarize(rows[method])
        summary["n_functions"] = args.n_functions
        backbone_name = METHODS[method][0]
        summary["train_s"] = train_s.get(backbone_name)
        summary["eval_s_per_function"] = seconds[backbone_name] / args.n_functions
        results[method] = summary
    floor_mean, floor_se = metrics.mean_and_standard_error(floor)
    if shock_store is not None:
        # the analytic front; the grid-interpolated front of the exact field is kept beside it
        shock_store["truth"] = problem.front_position(problem.time_of_interest, parameter)
        shock_store["truth_grid"] = float(
            metrics.front_positions(truth[index][None], grid.x, problem.front_threshold(parameter))[
                0
            ]
        )
    return results, (floor_mean, floor_se)


RECORD_EXTRAS = (
    "latent_variance_share",
    "latent_variance_share_se",
    "member_spread_share",
    "shock_position",
    "shock_position_covered",
    "eval_s_per_function",
)


def json_record(values: dict, train_cpu_s, floor: float, protocol: dict) -> dict:
    """One method's entry of gpme.json from its `evaluate` summary: the JSON_METRICS and their
    standard errors (None where a metric does not apply), training time, extras, the exact
    solution's CE floor and the protocol."""
    record = {k: values.get(k) for k in JSON_METRICS}
    record["train_s"] = values.get("train_s")
    record["train_cpu_s"] = train_cpu_s
    record.update({f"{k}_se": values.get(f"{k}_se") for k in JSON_METRICS})
    record.update({k: values[k] for k in RECORD_EXTRAS if k in values})
    record["ce_floor_exact_solution"] = floor
    record["protocol"] = dict(protocol)
    return record


def expand_methods(text: str) -> list[str]:
    """Comma-separated method names or METHOD_GROUPS names -> method names, in METHODS order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [n for n in names if n not in METHODS and n not in METHOD_GROUPS]
    if unknown or not names:
        raise SystemExit(
            f"--methods: unknown {unknown or text!r}; expected names from {list(METHODS)} "
            f"or groups {list(METHOD_GROUPS)}"
        )
    chosen = {m for n in names for m in METHOD_GROUPS.get(n, (n,))}
    return [m for m in METHODS if m in chosen]


def table(problem, parameter: str, records: dict[str, dict]) -> str:
    """Markdown table of the stored records of one problem and parameter value (the formatter of
    docs/results/gpme.md), with the published diffusion numbers under the diffusion tables."""
    lines = [gpme_table(problem, parameter, records)]
    if problem.name == "diffusion":
        lines += [
            "",
            "Published (diffusion, t = 0.5; CE x1e-3, LL, MSE x1e-4; paper Table 1, parameter"
            " value not stated in our transcription):",
            "",
            "| method | CE x1e-3 | LL | MSE@t x1e-4 |",
            "|---|---|---|---|",
        ]
        for method, (ce, ll, mse_t) in PUBLISHED_DIFFUSION.items():
            lines.append(f"| {method} (paper) | {ce} | {ll} | {mse_t} |")
    return "\n".join(lines)


def shock_figure(shock_store: dict, path: Path, draw: bool = True) -> str:
    """Histogram of the posterior front position per method against the truth (saved to `path`
    when `draw`), and its table (results_pages.shock_table, the table of docs/results/gpme.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = shock_store["truth"]
    figure, axes = plt.subplots(len(SHOCK_METHODS), 1, figsize=(6, 7), sharex=True)
    for axis, method in zip(axes, SHOCK_METHODS, strict=True):
        positions = shock_store.get(method)
        if positions is not None:
            positions = np.asarray(positions)
        if positions is None:
            axis.set_visible(False)
            continue
        lower, upper = np.quantile(positions, [0.05, 0.95])
        mean = float(positions.mean())
        axis.hist(positions, bins=40, color="tab:blue", alpha=0.7, density=True)
        axis.axvline(truth, color="black", linestyle="--", label=f"truth {truth:.4f}")
        axis.axvline(mean, color="tab:red", label=f"mean {mean:.4f}")
        axis.axvspan(lower, upper, color="tab:red", alpha=0.1, label="90 % interval")
        axis.set_title(method, fontsize=9)
        axis.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("x of the front (first crossing of u*/2)")
    figure.tight_layout()
    if draw:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return shock_table(shock_store)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default="diffusion,pme,stefan")
    parser.add_argument(
        "--params", default=None, help="comma-separated values (default: test values)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"methods or groups ({', '.join(METHOD_GROUPS)}); default all",
    )
    parser.add_argument("--n-functions", type=int, default=50)
    parser.add_argument("--n-t", type=int, default=201)
    parser.add_argument("--n-x", type=int, default=201)
    parser.add_argument("--latent-samples", type=int, default=100)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--sigma-g", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-missing", action="store_true")
    parser.add_argument(
        "--ensemble-dir",
        type=Path,
        default=None,
        help="folder searched for <problem>-ensemble.pt and <problem>-fno-ensemble.pt before "
        "the shipped models/checkpoints",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="evaluate nothing: rebuild gpme.md and the figure from the stored results",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    methods = expand_methods(args.methods)
    print(f"machine: {machine()}")
    produced: dict[str, dict[str, dict]] = {}
    shocks_produced = False
    problems = [] if args.report_only else [p.strip() for p in args.problems.split(",")]
    for name in [p for p in problems if p]:
        problem = get_problem(name)
        model = load_model(ROOT / "models" / f"{name}.py")
        backbones, train_s, train_cpu_s = {}, {}, {}
        for variant in ANP_VARIANTS:
            if any(METHODS[m][0] == variant for m in methods):
                path = ensure_checkpoint(name, variant, args.train_missing)
                backbones[variant] = ANPBackbone.from_checkpoint(
                    path, n_samples=args.latent_samples, name=variant
                )
                train_s[variant], train_cpu_s[variant] = training_seconds(path)
        if any(METHODS[m][0] == "gp" for m in methods):
            backbones["gp"] = GPBackbone()
            train_s["gp"] = train_cpu_s["gp"] = None
        checkpoints = {}
        for variant in ENSEMBLE_BACKBONES:
            if any(METHODS[m][0] == variant for m in methods):
                backbones[variant] = load_ensemble(
                    name, variant, args.ensemble_dir, args.train_missing
                )
                train_s[variant] = ensemble_training_seconds(backbones[variant])
                train_cpu_s[variant] = None
                path = ensemble_checkpoint(name, variant, args.ensemble_dir).resolve()
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                checkpoints[variant] = {
                    "checkpoint": str(shown),
                    "members": len(backbones[variant].members),
                    "member_parameters": sum(
                        p.numel() for p in backbones[variant].members[0].parameters()
                    ),
                    "checkpoint_bytes": path.stat().st_size,
                }
        params = (
            [float(v) for v in args.params.split(",")] if args.params else list(problem.test_values)
        )
        for parameter in params:
            key = f"{parameter:g}"
            shock_store = {} if name == "stefan" and key == "0.6" else None
            started = time.perf_counter()
            results, floor = evaluate(
                problem, parameter, backbones, methods, args, model, train_s, shock_store
            )
            print(f"{name} {key}: evaluated in {time.perf_counter() - started:.0f} s")
            entry = produced.setdefault(name, {}).setdefault(key, {})
            for method, values in results.items():
                variant = METHODS[method][0]
                protocol = {
                    "n_functions": args.n_functions,
                    "grid": [args.n_t, args.n_x],
                    "latent_samples": args.latent_samples if "anp" in variant else None,
                    "draws": args.draws,
                    "sigma_G": args.sigma_g,
                }
                record = json_record(values, train_cpu_s.get(variant), floor[0], protocol)
                record.update(checkpoints.get(variant, {}))
                if hasattr(backbones[variant], "variance_scale"):
                    record["variance_scale"] = backbones[variant].variance_scale
                    record["context_exponent"] = backbones[variant].context_exponent
                    if backbones[variant].count_scales is not None:  # conditioned calibration
                        contexts = len(function_contexts(problem, parameter, args.seed, 0).u)
                        record["count_scale"] = backbones[variant].count_scales(contexts)
                        record["contexts"] = contexts
                record["machine"] = machine()
                entry[method] = record
            print(table(problem, key, entry) + "\n", flush=True)
            if shock_store and any(method in shock_store for method in SHOCK_METHODS):
                shocks_produced = True
                shocks = json.loads(SHOCKS.read_text()) if SHOCKS.is_file() else {}
                shocks.update(shock_store)
                if not args.no_write:
                    write_json(SHOCKS, shocks)
                figure = FIGURES / "stefan_shock_position.png"
                print(shock_figure(shocks, figure, draw=not args.no_write) + "\n")
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for name, entries in produced.items():
        for key, records in entries.items():
            stored.setdefault(name, {}).setdefault(key, {}).update(records)
    if args.report_only:  # refresh the training times from the shipped checkpoints
        for name, entries in stored.items():
            for records in entries.values():
                for method, record in records.items():
                    variant = METHODS[method][0]
                    if variant in ENSEMBLE_BACKBONES:  # its own checkpoint, stored in the record
                        continue
                    path = default_checkpoint(name, variant)
                    if variant != "gp" and path.is_file():
                        record["train_s"], record["train_cpu_s"] = training_seconds(path)
    report = [f"Machine: {machine()}", ""]
    for name, entries in stored.items():
        for key, records in entries.items():
            report += [table(get_problem(name), key, records), ""]
    if SHOCKS.is_file():
        draw = (shocks_produced or args.report_only) and not args.no_write
        shocks = json.loads(SHOCKS.read_text())
        report += [shock_figure(shocks, FIGURES / "stefan_shock_position.png", draw), ""]
    if not args.no_write:
        write_json(RESULTS, stored)
        write_text(TABLES, "\n".join(report) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)} and {TABLES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
