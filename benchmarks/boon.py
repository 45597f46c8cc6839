"""BOON benchmark: FNO, FNO with boundary-data channels, and BOON on five 1-D operator problems.

Same widths, modes, layers, epochs and seeds for the models of a problem. Prints relative
L2 (whole domain and interior, i.e. farther than 5 % of the domain from either end), the share
of the squared error within 5 % of each end, the max boundary-condition residual with the model
in float64 and in float32, and training time, each model's rel. L2 as a ratio to plain FNO's,
and (heat-Neumann) a probabilistic section: an ensemble of BOONs, its 90 % coverage with the
default and with the held-out-calibrated diagonal variance, and the ProbConserv update on
[conservation; Neumann rows]. Writes benchmarks/results/boon.json and the figures
docs/figures/boon_heat_neumann.png (profiles at one time) and docs/figures/boon_insulator.png
(profiles near both ends and u_x(0, t), u_x(1, t) over time). One CPU thread. `--resume` keeps
the problems already in the JSON that were run with the same settings.

Boundary-data channels: where a problem's boundary data are the same for every sample (heat: one
heater; wave: zeros), they carry no information, and as extra lift inputs they only shrink the
initial weights of the informative inputs (default fan-in initialisation); fno-bc and BOON then
get the same inputs as FNO (`probcons.boon.training.sees_boundary_data`; then fno-bc is FNO and
is not trained twice). The row boon-overwrite is the ablation: BOON's final boundary solve alone,
without the kernel correction of the layers (same inputs and initialisation as boon).

    python benchmarks/boon.py [--epochs 120] [--problems heat-neumann stokes ...] [--resume]
    python benchmarks/boon.py --resume --rerun burgers-periodic   # one problem again
    python benchmarks/boon.py --seed 1 --no-probabilistic --out benchmarks/results/boon_seed1.json
    python benchmarks/boon.py --summary benchmarks/results/boon.json benchmarks/results/boon_seed*.json
    python benchmarks/boon.py --e2e --seeds 0 1 2   # heat ensemble, post-hoc vs end-to-end

`--e2e` runs only the heat-Neumann ensemble of the probabilistic section (the library's
`HeatRecipe`: same data, seeds and members, per seed of `--seeds`) and compares the post-hoc
ProbConserv update with the ensemble fine-tuned jointly through it
(`probcons.backbones.boon_ensemble_e2e`), each before and after the exact update and after it
with the covariance scale c fitted on the validation set; mean ± standard error over the seeds
and every seed's rows go to `--e2e-out` (boon.json is left as it is).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from probcons import metrics
from probcons.backbones.boon_ensemble import BoonEnsemble
from probcons.backbones.boon_ensemble_e2e import (
    HeatRecipe,
    boon_config,
    ensemble_marginals,
    fine_tune,
    fit_covariance_scale,
    marginal_scores,
    train_heat_members,
)
from probcons.boon.figures import plot_boundary_profiles, plot_insulator
from probcons.boon.training import (
    MODEL_KINDS,
    config_dict,
    evaluate,
    predict,
    relative_l2,
    train_model,
)
from probcons.io import write_json
from probcons.metrics import gaussian_interval_coverage, gaussian_log_likelihood
from probcons.problems.operators import OPERATOR_PROBLEMS, make_problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boon_common  # noqa: E402
from results_pages import (  # noqa: E402
    BOON_E2E_METRICS,
    BOON_E2E_STAGES,
    boon_e2e_rows,
    boon_seed_rows,
)

ROOT = Path(__file__).resolve().parents[1]
LEVEL = 0.9  # nominal coverage of the probabilistic section
ABLATION = "boon-overwrite"  # BOON without the kernel correction (final boundary solve only)


def probabilistic_heat(problem, train, validation, test, first, config, members, seed) -> dict:
    """Ensemble of `members` BOONs (`first` plus members - 1 new seeds), calibrated and conserved."""
    extra = [train_model("boon", problem, train, config, seed + e)[0] for e in range(1, members)]
    ensemble = BoonEnsemble([first, *extra], "boon", problem)
    members_test = ensemble.member_predictions(test)
    mean = members_test.mean(0)
    spread = members_test.var(0, unbiased=True)

    def scores(noise: float) -> dict:
        variance = spread + noise
        return {
            "coverage90": float(
                gaussian_interval_coverage(mean, variance, test.targets, LEVEL).double().mean()
            ),
            "log_likelihood": float(gaussian_log_likelihood(mean, variance, test.targets).mean()),
        }

    default = ensemble.noise_variance
    before = scores(default)
    calibrated = ensemble.calibrate(validation)
    after = scores(calibrated)
    conserved = []
    # models/heat-neumann.py traced once per sample: sites "mass" and "neumann" (ExactConditioning)
    for index, sites in enumerate(ensemble.sites(test)):
        prediction, posterior = sites.prior, sites.posterior("probconserv")
        target = test.targets[index]

        def error(field, site, sites=sites):
            return float(sites.residual(field)[..., sites.columns[site]].abs().max())

        conserved.append(
            {
                "rel_l2": float(relative_l2(posterior.mean[None], target[None])[0]),
                "coverage90": float(
                    gaussian_interval_coverage(posterior.mean, posterior.variance, target, LEVEL)
                    .double()
                    .mean()
                ),
                "mass_error": error(posterior.mean, "mass"),
                "neumann_error": error(posterior.mean, "neumann"),
                "prior_mass_error": error(prediction.mean, "mass"),
                "data_mass_error": error(target, "mass"),
            }
        )
    n = len(conserved)
    return {
        "members": members,
        "member_epochs": config.epochs,
        "n_validation": len(validation),
        "ensemble_rel_l2": float(relative_l2(mean, test.targets).mean()),
        "mean_spread_variance": float(spread.mean()),
        "test_mse": float(((mean - test.targets) ** 2).mean()),
        "noise_variance_default": default,
        "noise_variance_calibrated": calibrated,
        "default": before,
        "calibrated": after,
        "conserved": {
            key: (max if key.endswith("error") else sum)(row[key] for row in conserved)
            / (1 if key.endswith("error") else n)
            for key in conserved[0]
        },
        "prior_boundary_error": float(problem.condition.residual(mean, test.boundary).abs().max()),
    }


E2E_OPTIONS = (
    "e2e",
    "e2e_epochs",
    "e2e_learning_rate",
    "e2e_batch_size",
    "e2e_objectives",
    "e2e_out",
    "seeds",
)
"""Options of the `--e2e` run only (not part of the main run's recorded sizes)."""
E2E_STAGES = BOON_E2E_STAGES
"""Scores of each e2e row: before the update, after it (c = 1), after it with the fitted c."""
E2E_METRICS = BOON_E2E_METRICS


def e2e_recipe(args, seed: int) -> HeatRecipe:
    """The library's heat recipe with this run's sizes and `seed`."""
    return HeatRecipe(
        members=args.members,
        seed=seed,
        n_train=args.n_train,
        n_test=args.n_test,
        n_validation=args.n_validation,
        n_x=args.n_x,
        epochs=args.epochs,
        member_epochs=args.member_epochs,
        fine_tune_epochs=args.e2e_epochs,
        fine_tune_learning_rate=args.e2e_learning_rate,
        fine_tune_batch_size=args.e2e_batch_size,
    )


def e2e_row(ensemble, problem, validation, test) -> dict:
    """Scores of `ensemble` on `test` before and after the exact update (`marginal_scores`),
    and after it with the covariance scale c fitted on `validation` ("calibrated")."""
    scale = fit_covariance_scale(ensemble_marginals(ensemble, validation, 1.0), validation.targets)
    marginals = ensemble_marginals(ensemble, test, 1.0)
    calibrated = marginal_scores(ensemble_marginals(ensemble, test, scale), test.targets)
    members = ensemble.member_predictions(test)
    return {
        **marginal_scores(marginals, test.targets),
        "calibrated": calibrated["conditioned"],
        "covariance_scale": scale,
        "noise_variance": ensemble.noise_variance,
        "members_boundary_error": max(
            float(problem.condition.residual(u, test.boundary).abs().max()) for u in members
        ),
        "boundary_error": float(
            problem.condition.residual(marginals.mean.reshape(test.targets.shape), test.boundary)
            .abs()
            .max()
        ),
    }


def e2e_seed(args, seed: int) -> dict:
    """One seed of the heat ensemble (`HeatRecipe`: data, members and fine-tuning seeded by
    `seed`), calibrated (s) on the validation set, scored on the first n_conserve test samples:
    post-hoc, and fine-tuned jointly through the update on the training set with each of
    `--e2e-objectives` (the best epoch on the validation set's conditioned score)."""
    recipe = e2e_recipe(args, seed)
    problem, train, test, validation = recipe.data()
    test = test.subset(slice(0, args.n_conserve))
    ensemble, members_s = train_heat_members(recipe, problem, train)
    ensemble.calibrate(validation)
    rows = {"post-hoc": {**e2e_row(ensemble, problem, validation, test), "seconds": members_s}}
    print(f"  seed {seed}: members trained in {members_s:.0f} s", flush=True)
    for objective in args.e2e_objectives:
        tuned, log = fine_tune(
            ensemble, train, recipe.fine_tune_config, objective, seed, validation
        )
        rows[f"end-to-end ({objective})"] = {
            **e2e_row(tuned, problem, validation, test),
            **log,
            "members_s": members_s,
        }
        print(f"  seed {seed}: end-to-end ({objective}) in {log['seconds']:.0f} s", flush=True)
    print_e2e_rows(rows)
    return rows


def e2e_summary(per_seed: dict[str, dict]) -> dict:
    """{row: {stage: {metric: {"mean", "se", "values"}}}} over the seeds (standard error of the
    mean, ddof = 1), plus the covariance scale c."""
    first = next(iter(per_seed.values()))
    summary: dict = {}
    for name in first:
        rows = [per_seed[seed][name] for seed in per_seed]
        entry = {}
        for stage in E2E_STAGES:
            entry[stage] = {}
            for key in E2E_METRICS:
                values = [row[stage][key] for row in rows]
                mean, error = metrics.mean_and_standard_error(values)
                entry[stage][key] = {"mean": mean, "se": error, "values": values}
        values = [row["covariance_scale"] for row in rows]
        mean, error = metrics.mean_and_standard_error(values)
        entry["covariance_scale"] = {"mean": mean, "se": error, "values": values}
        summary[name] = entry
    return summary


def e2e_heat(args, machine) -> dict:
    """`e2e_seed` for every seed of --seeds, their summary and the run's settings."""
    started = time.perf_counter()
    per_seed = {str(seed): e2e_seed(args, seed) for seed in args.seeds}
    recipe = e2e_recipe(args, args.seeds[0])
    return {
        "summary": e2e_summary(per_seed),
        "seeds": per_seed,
        "_meta": {
            "machine": machine,
            "config": config_dict(recipe.config),
            "member_config": config_dict(recipe.member_config),
            "fine_tune_config": config_dict(recipe.fine_tune_config),
            "sizes": {
                key: value
                for key, value in vars(args).items()
                if key
                not in (
                    *("out", "figures", "summary", "e2e_out", "resume", "rerun", "problems"),
                    *("ablation", "probabilistic", "seed"),
                )
            },
            "n_test_scored": args.n_conserve,
            "stages": "prior: before the exact update; conditioned: after it; calibrated: after "
            "it with the covariance scale c fitted on the validation set",
            "seconds": time.perf_counter() - started,
        },
    }


def print_e2e_rows(rows: dict) -> None:
    """One seed's rows: rel. L2, NLL, CRPS, coverage per stage."""
    print("  | ensemble | update | rel. L2 | NLL | CRPS | 90 % cov. |")
    print("  |---|---|---|---|---|---|")
    for name, row in rows.items():
        for stage in E2E_STAGES:
            r = row[stage]
            print(
                f"  | {name} | {stage} | {r['rel_l2']:.3e} | {r['nll']:.3f} | {r['crps']:.3e}"
                f" | {r['coverage90']:.3f} |"
            )


def print_e2e(result: dict) -> None:
    """The summary table: mean ± standard error over the seeds (results_pages.fmt)."""
    meta = result["_meta"]
    machine = meta["machine"]
    print(
        f"\nBOON heat ensemble, post-hoc vs end-to-end: seeds {meta['sizes']['seeds']},"
        f" {meta['n_test_scored']} test samples per seed ({machine['platform']},"
        f" {machine['cpu']}, torch {machine['torch']}, {machine['threads']} thread)\n"
    )
    print("\n".join(boon_e2e_rows(result)))


OPTIONS_BEFORE_RECORDED = {"ablation": True, "probabilistic": True}
"""Settings of runs whose JSON predates these options (what those runs did)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(OPERATOR_PROBLEMS))
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--n-validation", type=int, default=50)
    parser.add_argument("--n-x", type=int, default=65)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--member-epochs", type=int, default=50)
    parser.add_argument("--n-conserve", type=int, default=20)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--rerun",
        nargs="+",
        default=[],
        choices=list(OPERATOR_PROBLEMS),
        help="with --resume: run these problems again, keep the others from the JSON",
    )
    parser.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--probabilistic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/boon.json")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs/figures")
    parser.add_argument(
        "--summary", type=Path, nargs="+", help="print the seed summary of these result files only"
    )
    parser.add_argument("--e2e", action="store_true", help="only the heat post-hoc vs end-to-end")
    parser.add_argument("--e2e-epochs", type=int, default=40)
    parser.add_argument("--e2e-learning-rate", type=float, default=1e-4)
    parser.add_argument("--e2e-batch-size", type=int, default=20)
    parser.add_argument("--e2e-objectives", nargs="+", default=["nll", "crps"])
    parser.add_argument("--e2e-out", type=Path, default=ROOT / "benchmarks/results/boon_e2e.json")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="--e2e: seeds of data, members, tuning"
    )
    args = parser.parse_args()
    if args.summary:
        print_seed_summary([json.loads(path.read_text()) for path in args.summary], args.summary)
        return
    torch.set_num_threads(1)
    config, member_config = boon_config(args.epochs), boon_config(args.member_epochs)
    machine = boon_common.machine()
    if args.e2e:
        print(f"machine: {machine}")
        result = e2e_heat(args, machine)
        write_json(args.e2e_out, result)
        print_e2e(result)
        return
    settings = {
        key: value
        for key, value in vars(args).items()
        if key not in ("problems", "resume", "rerun", "out", "figures", "summary", *E2E_OPTIONS)
    }
    meta = {
        "machine": machine,
        "config": config_dict(config),
        "member_config": config_dict(member_config),
        "sizes": settings,
        "inputs": "fno-bc and boon get the boundary-data channels only where they vary by sample",
    }
    print(f"machine: {machine}")
    print(f"config: {config_dict(config)}; sizes {settings}")
    results: dict = {}
    if args.resume and args.out.exists():
        previous = json.loads(args.out.read_text())
        # runs saved before --ablation / --probabilistic existed ran both
        saved = {**OPTIONS_BEFORE_RECORDED, **previous.get("_meta", {}).get("sizes", {})}
        if saved == settings and previous["_meta"].get("config") == config_dict(config):
            kept = [p for p in args.problems if p in previous and p not in args.rerun]
            results = {p: previous[p] for p in kept}
            if "heat-neumann" in kept and "_probabilistic" in previous:
                results["_probabilistic"] = previous["_probabilistic"]
            print(f"resuming: kept {sorted(results)}")
    for name in args.problems:
        if name in results:
            continue
        problem = make_problem(name, n_x=args.n_x)
        generator = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        train = problem.generate(args.n_train, generator)
        test = problem.generate(args.n_test, generator)
        print(f"\n{name}: {problem.description}")
        print(
            f"  data {time.perf_counter() - start:.1f} s; outputs (n, {problem.n_times},"
            f" {problem.n_x}); boundary data vary by sample: {problem.boundary_varies}"
        )
        results[name] = {}
        predictions, models = {}, {}
        same_as_fno = not (problem.boundary_varies and problem.condition.has_data)
        for kind in (*MODEL_KINDS, ABLATION) if args.ablation else MODEL_KINDS:
            if kind == "fno-bc" and same_as_fno:
                # no informative boundary channels: fno-bc is FNO (same inputs, init and seed)
                results[name][kind] = {**results[name]["fno"], "same_model_as": "fno"}
                models[kind], predictions[kind] = models["fno"], predictions["fno"]
                print("  fno-bc         = fno (the boundary data carry no information)")
                continue
            model_kind = "boon" if kind == ABLATION else kind
            model, seconds = train_model(
                model_kind, problem, train, config, args.seed, correct_layers=kind != ABLATION
            )
            metrics = {**evaluate(model, model_kind, problem, test), "train_s": seconds}
            results[name][kind] = metrics
            models[kind] = model
            predictions[kind] = predict(model, model_kind, test).to(torch.float64)
            ratio = metrics["rel_l2"] / results[name]["fno"]["rel_l2"]
            print(
                f"  {kind:14s} rel_l2 {metrics['rel_l2']:.3e} (x{ratio:.2f} FNO)"
                f"  interior {metrics['rel_l2_interior']:.3e}"
                f"  share L/R {metrics['error_share_left']:.2f}"
                f"/{metrics['error_share_right']:.2f}"
                f"  bc f64 {metrics['boundary_error']:.1e}"
                f"  f32 {metrics['boundary_error_f32']:.1e}  train {seconds:.0f} s",
                flush=True,
            )
        if name == "heat-neumann":
            shown = {"FNO": predictions["fno"], "BOON": predictions["boon"]}
            plot_boundary_profiles(problem, test, shown, args.figures / "boon_heat_neumann.png")
            plot_insulator(problem, test, shown, args.figures / "boon_insulator.png")
        if name == "heat-neumann" and args.probabilistic:
            validation = problem.generate(args.n_validation, generator)
            results["_probabilistic"] = probabilistic_heat(
                problem,
                train,
                validation,
                test.subset(slice(0, args.n_conserve)),
                models["boon"],
                member_config,
                args.members,
                args.seed,
            )
            print_probabilistic(results["_probabilistic"])
        results[name]["_total_s"] = time.perf_counter() - start
        print(f"  {name}: {results[name]['_total_s']:.0f} s in all", flush=True)
        write_json(args.out, {**results, "_meta": meta})
    print_table(results, machine)


def print_seed_summary(runs: list[dict], paths: list[Path]) -> None:
    """Per problem and model: rel. L2 of each run (seed) and the geometric mean of the ratios
    (results_pages.boon_seed_rows, the table of docs/results/boon.md)."""
    seeds = [run["_meta"]["sizes"]["seed"] for run in runs]
    print(f"seed summary of {[p.name for p in paths]} (seeds {seeds})\n")
    print("\n".join(boon_seed_rows(runs)))


def print_probabilistic(p: dict) -> None:
    print(
        f"\n  probabilistic BOON (heat-neumann): {p['members']} members (the table's BOON and"
        f" {p['members'] - 1} x {p['member_epochs']} epochs), calibrated on"
        f" {p['n_validation']} held-out samples; ensemble rel L2"
        f" {p['ensemble_rel_l2']:.3e}, test MSE {p['test_mse']:.2e},"
        f" mean member variance {p['mean_spread_variance']:.2e}"
    )
    print("  | diagonal variance | value | 90 % coverage | mean log-lik. |")
    print("  |---|---|---|---|")
    for key in ("default", "calibrated"):
        print(
            f"  | {key} | {p[f'noise_variance_{key}']:.2e} | {p[key]['coverage90']:.3f}"
            f" | {p[key]['log_likelihood']:.2f} |"
        )
    c = p["conserved"]
    print(
        f"  ProbConserv update (calibrated, {c['rel_l2']:.3e} rel L2, coverage"
        f" {c['coverage90']:.3f}): max mass residual {c['mass_error']:.1e}"
        f" (prior {c['prior_mass_error']:.1e}, data {c['data_mass_error']:.1e}),"
        f" max Neumann residual {c['neumann_error']:.1e} (prior {p['prior_boundary_error']:.1e})"
    )


def print_table(results: dict, machine: dict) -> None:
    print(
        f"\nBOON benchmark ({machine['platform']}, {machine['cpu']}, torch {machine['torch']},"
        f" {machine['threads']} thread)\n"
    )
    header = (
        "| problem | model | rel. L2 | / FNO | rel. L2 interior | err. share L/R | BC error f64"
        " | BC error f32 | train s |"
    )
    print(header)
    print("|" + "---|" * 9)
    for name, models in results.items():
        if name.startswith("_"):
            continue
        fno = models["fno"]["rel_l2"]
        for kind in (k for k in (*MODEL_KINDS, ABLATION) if k in models):
            m = models[kind]
            print(
                f"| {name} | {kind} | {m['rel_l2']:.2e} | {m['rel_l2'] / fno:.2f}"
                f" | {m['rel_l2_interior']:.2e}"
                f" | {m['error_share_left']:.2f}/{m['error_share_right']:.2f}"
                f" | {m['boundary_error']:.1e} | {m['boundary_error_f32']:.1e}"
                f" | {m['train_s']:.0f} |"
            )
    if "_probabilistic" in results:
        print_probabilistic(results["_probabilistic"])


if __name__ == "__main__":
    main()
