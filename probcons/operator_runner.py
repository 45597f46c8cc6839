"""The operator-learning job: train one backbone on one operator problem, evaluate, write files.

`probcons.runner.run_problem` dispatches here for the operator-1d and operator-2d families.

Backbones: "fno", "fno-bc" (FNO with the boundary data as input channels), "boon-fno" (the
kernel-corrected FNO), "boon-ensemble" (members x boon-fno as a Gaussian backbone; on a problem
with a Pyro model file, heat-neumann, also ProbConserv on the model's sites [conservation;
Neumann rows] through `ExactConditioning`). A boon-ensemble run with `checkpoint` (a file
`BoonEnsemble.save` wrote, e.g. the shipped heat-neumann-boon-ensemble-e2e.pt) trains nothing:
it draws the same data as a training run (train, then test, from the seed) and evaluates the
stored ensemble, with its stored s and covariance scale c, on the test set.

Files in out_dir:
- metrics.json: the run's settings (problem, backbone, seed, sizes, config, machine) and
  "metrics", the backbone's flat BOON metrics (rel_l2, boundary_error, ...); for boon-ensemble
  also one entry per method in the GPME shape, {method: {metric: mean, metric_se: standard
  error over test samples}}, with "methods" listing those keys;
- model.pt (or member_<e>.pt), boundary.png;
- boon-ensemble only: `<method>.nc` per method (the run-folder schema of
  `probcons.posterior_files`: the test samples are the functions, the grid is (output times,
  x), `draws` draws each; constant_data holds the exact Gaussian moments, the sample's
  parameter, the mass U(t) and the constraint rows) and report.html / report.md
  (`probcons.report.write_report`), so `probcons report OUT_DIR` reads the run.
  Methods: "unconstrained" (the ensemble's Gaussian) and, with a model file, "probconserv".
Deterministic backbones (fno, fno-bc, boon-fno) write no `<method>.nc`: a point prediction has
no predictive distribution, so draws equal to the mean with zero variance would put a log
likelihood of -inf, zero coverage and a degenerate PIT into a calibration report, which says
nothing the flat metrics do not; their metrics.json keeps the flat "metrics", and their
report.md / report.html lists those point metrics (`probcons report OUT_DIR` writes it too).
2-D problems (problems2d: cavity, wave2d; backbones fno, fno-bc, boon-fno) train the one-step
model, roll the test trajectories out and write metrics.json, model.pt, error_vs_time.png and
the point report; boon-ensemble and fno-ensemble (`probcons.backbones.boon_ensemble2d`) write
member_<e>.pt, `<method>.nc` for "unconstrained" and "probconserv" (exact on the problem's
physics rows) on the flat (t, C n^2) grid, metrics.json and the report (`run_ensemble2d`).
"""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from probcons import metrics as scores
from probcons.backbones.boon_ensemble import MODEL_PROBLEMS, BoonEnsemble
from probcons.boon.training import TrainingConfig, config_dict, evaluate, predict, train_model
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.inference import ConstraintSites
from probcons.io import write_json
from probcons.metrics import summarize
from probcons.posterior import Posterior
from probcons.posterior_files import (
    constraint_arrays,
    posterior_inference_data,
    write_inference_data,
)
from probcons.problems.operators import (
    OPERATOR_PROBLEMS,
    OperatorData,
    OperatorProblem,
    make_problem,
)
from probcons.problems.operators2d import OPERATOR_PROBLEMS_2D, make_problem2d
from probcons.validation import check_positive_int

BACKBONES = {"fno": "fno", "fno-bc": "fno-bc", "boon-fno": "boon", "boon-ensemble": "boon"}
BACKBONES_2D = ("fno", "fno-bc", "boon-fno", "boon-ensemble", "fno-ensemble")
ENSEMBLE_BACKBONES_2D = {"boon-ensemble": "boon", "fno-ensemble": "fno"}
"""2-D Gaussian backbones (`probcons.backbones.boon_ensemble2d`) and their members' kind."""
DRAWS_2D = 10
"""Draws per test trajectory and method in a 2-D `<method>.nc` (a cavity slice has 5000 values)."""
VALIDATION_SEED_2D = 2000
"""Seed offset of the held-out calibration trajectories (training: seed, test: seed + 1000)."""
TRAJECTORIES_2D = (80, 16)  # default training / test trajectories of the 2-D problems
DRAWS = 100
"""Draws per test sample and method in `<method>.nc` (as `probcons run` on GPME problems)."""
ENSEMBLE_METHODS = ("unconstrained", "probconserv")
"""Methods of a boon-ensemble run on a problem with a model file (else "unconstrained" only)."""
MASS_SITE, BOUNDARY_SITE = "mass", "neumann"
"""The sites of models/heat-neumann.py that the flat metrics' conservation / boundary keys read."""
DRAW_STREAM = 7919
"""Entropy word that keeps the draws' seeds apart from the data's and the training's."""


def _prepare(n_train, n_test, threads, config, epochs, out_dir) -> tuple:
    """Checked sizes and threads, the config with `epochs` applied, and the created out_dir."""
    check_positive_int(n_train, "n_train")
    check_positive_int(n_test, "n_test")
    if threads is not None:
        torch.set_num_threads(check_positive_int(threads, "threads"))
    if epochs is not None:
        config = replace(config, epochs=check_positive_int(epochs, "epochs"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return config, out_dir


def _save(model, path: Path, problem_name: str, kind: str) -> None:
    operator = model.operator if kind == "boon" else model
    extra = {"problem": problem_name, "kind": kind}
    if kind == "boon":
        extra["boundary"] = model.hyperparameters["boundary"]
    operator.save(path, extra=extra)


def run_operator_problem(
    problem: str,
    backbone: str,
    out_dir: str | Path,
    seed: int = 0,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    n_x: int = 65,
    n_times: int | None = None,
    config: TrainingConfig | None = None,
    epochs: int | None = None,
    members: int = 4,
    threads: int | None = 1,
    figure: bool = True,
    draws: int | None = None,
    report: bool = True,
    checkpoint: str | Path | None = None,
    ensemble_covariance: str = "sample",
) -> dict:
    """Train `backbone` on `problem` (seeded), evaluate on a test set, write files; return metrics.

    problem: a key of OPERATOR_PROBLEMS (or of OPERATOR_PROBLEMS_2D: run_operator_problem2d);
    backbone: a key of BACKBONES; out_dir: created if needed; seed: data, initialisation, batch
    order and draws; n_train / n_test samples (default 200 / 100; 2-D: TRAJECTORIES_2D); n_x
    grid nodes on [0, 1]; n_times output times (default per problem); config: TrainingConfig
    (defaults), epochs overrides config.epochs; members: ensemble size (boon-ensemble only);
    threads: torch.set_num_threads (None leaves it); figure: write boundary.png; draws: draws
    per test sample and method in `<method>.nc` (default DRAWS; 2-D: DRAWS_2D) and report:
    write report.html (boon-ensemble); checkpoint: a stored boon-ensemble of `problem`
    (`BoonEnsemble.load`) evaluated instead of a trained one (its grid; config, epochs and members
    do not apply); ensemble_covariance: "sample" or "marginal" for the 2-D ensembles
    (`run_operator_problem2d`).
    Returns the contents of metrics.json (see the module docstring).
    """
    if checkpoint is not None and (backbone != "boon-ensemble" or problem in OPERATOR_PROBLEMS_2D):
        raise UsageError(
            f"checkpoint: applies to the 1-D boon-ensemble only, got backbone {backbone!r} on "
            f"{problem!r}"
        )
    if problem in OPERATOR_PROBLEMS_2D:
        return run_operator_problem2d(
            problem,
            backbone,
            out_dir,
            seed,
            n_train=TRAJECTORIES_2D[0] if n_train is None else n_train,
            n_test=TRAJECTORIES_2D[1] if n_test is None else n_test,
            config=config,
            epochs=epochs,
            threads=threads,
            figure=figure,
            members=members,
            draws=DRAWS_2D if draws is None else draws,
            report=report,
            ensemble_covariance=ensemble_covariance,
        )
    if ensemble_covariance != "sample":
        raise UsageError(
            "ensemble_covariance: expected 'sample' on a 1-D problem (the marginal option is "
            f"for the 2-D ensembles), got {ensemble_covariance!r}"
        )
    if problem not in OPERATOR_PROBLEMS:
        known = sorted(OPERATOR_PROBLEMS) + sorted(OPERATOR_PROBLEMS_2D)
        raise UsageError(f"problem: expected one of {known}, got {problem!r}")
    if backbone not in BACKBONES:
        raise UsageError(f"backbone: expected one of {sorted(BACKBONES)}, got {backbone!r}")
    draws = DRAWS if draws is None else check_positive_int(draws, "draws")
    check_positive_int(members, "members")
    n_train = 200 if n_train is None else n_train
    n_test = 100 if n_test is None else n_test
    stored = None if checkpoint is None else _stored_ensemble(checkpoint, problem, n_x, n_times)
    config, out_dir = _prepare(
        n_train, n_test, threads, config or TrainingConfig(), epochs, out_dir
    )
    spec = make_problem(problem, n_x=n_x, n_times=n_times) if stored is None else stored.problem
    generator = torch.Generator().manual_seed(seed)
    train, test = spec.generate(n_train, generator), spec.generate(n_test, generator)
    kind = BACKBONES[backbone]
    result: dict = {
        "problem": problem,
        "backbone": backbone,
        "seed": seed,
        "sizes": {"n_train": n_train, "n_test": n_test, "n_x": n_x, "n_times": spec.n_times},
        "config": config_dict(config),
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    posteriors = None
    if backbone != "boon-ensemble":
        model, seconds = train_model(kind, spec, train, config, seed)
        result["metrics"] = {**evaluate(model, kind, spec, test), "train_s": seconds}
        _save(model, out_dir / "model.pt", problem, kind)
        prediction = predict(model, kind, test).to(torch.float64)
    else:
        if stored is None:
            ensemble = BoonEnsemble.train(spec, train, config, members, seed)
        else:
            ensemble = stored
            result["checkpoint"] = str(checkpoint)
            result["config"] = ensemble.training.get("config", result["config"])
            result["training"] = {
                key: ensemble.training[key]
                for key in ("objective", "recipe", "covariance_scale", "seconds")
                if key in ensemble.training
            }
        for index, model in enumerate(ensemble.models):
            _save(model, out_dir / f"member_{index}.pt", problem, kind)
        if stored is None:
            # the diagonal variance from held-out samples (neither training nor test data)
            validation = spec.generate(max(n_test // 2, 2), generator)
            ensemble.calibrate(validation)
        sites = ensemble.sites(test) if problem in MODEL_PROBLEMS else None
        posteriors = ensemble_posteriors(ensemble, test, sites)
        result["metrics"] = {
            **ensemble_metrics(ensemble, spec, test, sites, posteriors),
            "noise_variance": ensemble.noise_variance,
            "covariance_scale": ensemble.covariance_scale,
            "coverage_90": ensemble.coverage(test),
        }
        summaries = write_method_files(out_dir, spec, test, posteriors, sites, draws, seed)
        result["methods"] = list(summaries)
        result.update(summaries)
        prediction = torch.stack([p.mean for p in posteriors["unconstrained"]])
    write_json(out_dir / "metrics.json", result)
    if figure:
        from probcons.boon.figures import plot_boundary_profiles

        plot_boundary_profiles(spec, test, {backbone: prediction}, out_dir / "boundary.png")
    if report:  # deterministic backbones: a report of their point metrics
        from probcons.report import write_report

        write_report([out_dir])
    return result


def _stored_ensemble(
    checkpoint: str | Path, problem: str, n_x: int, n_times: int | None
) -> BoonEnsemble:
    """The boon-ensemble stored at `checkpoint`, checked against the run's problem and grid."""
    ensemble = BoonEnsemble.load(checkpoint)
    stored = ensemble.problem
    if stored.name != problem:
        raise UsageError(
            f"checkpoint: {str(checkpoint)!r} holds an ensemble for {stored.name!r}, not for "
            f"{problem!r}"
        )
    if n_x != stored.n_x or n_times not in (None, stored.n_times):
        raise UsageError(
            f"checkpoint: {str(checkpoint)!r} was trained on n_x={stored.n_x}, "
            f"n_times={stored.n_times}; got n_x={n_x}, n_times={n_times}"
        )
    return ensemble


def ensemble_posteriors(
    ensemble: BoonEnsemble, test: OperatorData, sites: list[ConstraintSites] | None
) -> dict[str, list[Posterior]]:
    """{method: one Posterior per test sample}: ENSEMBLE_METHODS on the model's `sites`, or
    the ensemble's Gaussian alone ("unconstrained") when there are none."""
    if sites is None:
        return {"unconstrained": ensemble.predict(test)}
    return {method: [s.posterior(method) for s in sites] for method in ENSEMBLE_METHODS}


def _site_residual(sites: ConstraintSites, field: torch.Tensor, name: str) -> float:
    """max |G u - b| over the rows of site `name`."""
    return float(sites.residual(field)[..., sites.columns[name]].abs().max())


def ensemble_metrics(
    ensemble: BoonEnsemble,
    problem: OperatorProblem,
    test: OperatorData,
    sites: list[ConstraintSites] | None = None,
    posteriors: dict[str, list[Posterior]] | None = None,
) -> dict:
    """Relative L2, mean predictive std, BC residual and, with the model's sites (heat), the
    conservation error before and after ProbConserv and the posterior's relative L2 and rows.

    sites: `ensemble.sites(test)` (traced here when None on a problem with a model file);
    posteriors: `ensemble_posteriors(ensemble, test, sites)` (computed here when None).
    """
    if sites is None and problem.name in MODEL_PROBLEMS:
        sites = ensemble.sites(test)
    if posteriors is None:
        posteriors = ensemble_posteriors(ensemble, test, sites)
    truth = test.targets
    rel, spread, bc = [], [], []
    ce_prior, ce_post, bc_post, rel_post = [], [], [], []
    for i, prediction in enumerate(posteriors["unconstrained"]):
        rel.append(float((prediction.mean - truth[i]).norm() / truth[i].norm()))
        spread.append(float(prediction.stddev.mean()))
        bc.append(_condition_residual(problem, test, i, prediction.mean))
        if sites is not None and {MASS_SITE, BOUNDARY_SITE} <= set(sites[i].columns):
            posterior = posteriors["probconserv"][i]
            ce_prior.append(_site_residual(sites[i], prediction.mean, MASS_SITE))
            ce_post.append(_site_residual(sites[i], posterior.mean, MASS_SITE))
            bc_post.append(_site_residual(sites[i], posterior.mean, BOUNDARY_SITE))
            rel_post.append(float((posterior.mean - truth[i]).norm() / truth[i].norm()))
    metrics = {
        "rel_l2": sum(rel) / len(rel),
        "mean_std": sum(spread) / len(spread),
        "boundary_error": max(bc),
        "members": len(ensemble.models),
    }
    if ce_prior:
        metrics.update(
            {
                "conservation_error": max(ce_prior),
                "posterior_rel_l2": sum(rel_post) / len(rel_post),
                "posterior_conservation_error": max(ce_post),
                "posterior_boundary_error": max(bc_post),
            }
        )
    return metrics


def _condition_residual(
    problem: OperatorProblem, data: OperatorData, index: int, field: torch.Tensor
) -> float:
    """max |R u - g| of the problem's boundary condition for sample `index`."""
    boundary = None if data.boundary is None else data.boundary[index : index + 1]
    return float(problem.condition.residual(field[None], boundary).abs().max())


def _draw_generator(seed: int, index: int, method: int) -> torch.Generator:
    """The generator of the draws of test sample `index` under method number `method`: one
    SeedSequence entropy per run, one stream per sample and method."""
    entropy = [seed, DRAW_STREAM, index, method]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint32)
    return torch.Generator().manual_seed(int(state[0]))


def _sample_posteriors(predictions, draws: int, seed: int, method: int, score):
    """Each posterior's `draws` samples (its own `_draw_generator`), mean and variance, stacked,
    and score(i, posterior, samples) per posterior: (samples, means, variances, per_sample)."""
    samples, means, variances, per_sample = [], [], [], []
    for i, posterior in enumerate(predictions):
        field = posterior.sample(draws, _draw_generator(seed, i, method))
        samples.append(field.numpy().astype(np.float32))
        means.append(posterior.mean.numpy())
        variances.append(posterior.variance.numpy())
        per_sample.append(score(i, posterior, field))
    return np.stack(samples), np.stack(means), np.stack(variances), per_sample


def _parameters(problem: OperatorProblem, data: OperatorData) -> tuple[np.ndarray, str]:
    """(F,) one scalar per test sample and its name: the sampled physical parameter when
    there is one (heat: w), else the sample's index."""
    if data.parameters is not None and data.parameters.reshape(len(data), -1).shape[1] == 1:
        names = [name for name in problem.parameters if name.endswith("_range")]
        name = names[0].removesuffix("_range") if len(names) == 1 else "parameter"
        return data.parameters.reshape(-1).numpy(), name
    return np.arange(len(data), dtype=np.float64), "test sample"


def write_method_files(
    out_dir: Path,
    problem: OperatorProblem,
    test: OperatorData,
    posteriors: dict[str, list[Posterior]],
    sites: list[ConstraintSites] | None,
    draws: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Write `<method>.nc` for every method of `posteriors` and return {method: summary}.

    Each test sample is a function on the grid (output times, x), with `draws` draws from its
    own generator per method (`_draw_generator`); the time of interest is the middle output
    time. constant_data: the exact moments, the parameter, the mass U(t) (heat: the model's
    mass rows, from the exact fluxes; else the trapezoid mass of the truth) and, with `sites`,
    the rows each sample was conditioned on (the same rows for every method, as on GPME runs).
    The summary has the GPME runner's keys (mse, mse_t, ce = mean |G m - b| over all the rows,
    with sites only; ll, crps, coverage_50, coverage_90) plus rel_l2 and boundary_error (per
    sample max |R m - g|), each a mean over samples with its standard error `<key>_se`.
    """
    grid = Grid(problem.times, problem.x)
    time_of_interest = float(problem.times[problem.n_times // 2])
    time_index = grid.time_index(time_of_interest)
    truth = test.targets.to(torch.float64)
    constraint = None if sites is None else constraint_arrays([s.constraint for s in sites])
    if sites is not None and MASS_SITE in sites[0].columns and not sites[0].flat:
        mass = torch.stack([s.constraint.values[:, s.columns[MASS_SITE]][:, 0] for s in sites])
    else:  # no exact mass known: the trapezoid mass of the truth
        mass = truth @ grid.trapezoid_weights()
    parameter, parameter_name = _parameters(problem, test)
    condition = problem.condition
    attrs = {
        "problem": problem.name,
        "backbone": "boon-ensemble",
        "sigma_G": 0.0,
        "parameter_name": parameter_name,
        "time_of_interest": time_of_interest,
        "seed": seed,
        "constraint_flat": None if sites is None else int(sites[0].flat),
        "boundary_condition": condition.kind if condition.sides == ("left", "right") else None,
    }

    def score(i, posterior, field):
        row = _score(posterior, field, truth[i], time_index)
        if sites is not None:  # CE as on GPME runs: mean |G m - b| over every row
            row["ce"] = float(sites[i].residual(posterior.mean).abs().mean())
        row["boundary_error"] = _condition_residual(problem, test, i, posterior.mean)
        return row

    summaries = {}
    for number, (method, predictions) in enumerate(posteriors.items()):
        samples, means, variances, per_sample = _sample_posteriors(
            predictions, draws, seed, number, score
        )
        data = posterior_inference_data(
            samples=samples,
            truth=truth.numpy(),
            mean=means,
            variance=variances,
            parameter=parameter,
            mass=mass.numpy(),
            grid=grid,
            attrs={**attrs, "method": method},
            constraint=constraint,
        )
        write_inference_data(out_dir / f"{method}.nc", data)
        summaries[method] = summarize(per_sample)
    return summaries


def _score(posterior: Posterior, draws: torch.Tensor, truth: torch.Tensor, time_index: int):
    """The GPME runner's per-function scores of a posterior and its draws (D, n_t, n_x)."""
    mean, variance = posterior.mean, posterior.variance
    return {
        "mse": scores.mse(mean, truth),
        "mse_t": scores.mse(mean[time_index], truth[time_index]),
        "ll": float(scores.gaussian_log_likelihood(mean, variance, truth).mean()),
        "crps": float(scores.crps_ensemble(draws, truth).mean()),
        "coverage_50": float(scores.central_interval_coverage(draws, truth, 0.5).double().mean()),
        "coverage_90": float(scores.central_interval_coverage(draws, truth, 0.9).double().mean()),
        "rel_l2": float((mean - truth).norm() / truth.norm()),
    }


def run_operator_problem2d(
    problem: str,
    backbone: str,
    out_dir: str | Path,
    seed: int = 0,
    *,
    n_train: int = TRAJECTORIES_2D[0],
    n_test: int = TRAJECTORIES_2D[1],
    n: int = 50,
    config=None,
    epochs: int | None = None,
    threads: int | None = 1,
    figure: bool = True,
    progress: bool = False,
    members: int = 4,
    draws: int = DRAWS_2D,
    report: bool = True,
    ensemble_covariance: str = "sample",
) -> dict:
    """Train a one-step 2-D model (problems2d), roll out the test trajectories, write files.

    problem: "cavity" or "wave2d"; backbone: one of BACKBONES_2D; n_train / n_test trajectories
    (training seed `seed`, test seed `seed` + 1000); n nodes per side; config: TrainingConfig2d
    (defaults), epochs overrides config.epochs. Writes metrics.json, model.pt (weights and
    hyperparameters; `training2d.load_model2d`) and error_vs_time.png; returns the metrics.
    boon-ensemble / fno-ensemble: `members` one-step models (member_<e>.pt), calibrated on
    held-out trajectories (seed + VALIDATION_SEED_2D), and `<method>.nc` per method
    (`run_ensemble2d`); draws per test trajectory and method; report: write report.html;
    ensemble_covariance: "sample" or "marginal" (`BoonEnsemble2d`'s covariance).
    """
    from probcons.boon.training2d import TrainingConfig2d, evaluate2d, train_model2d
    from probcons.checkpoint import save_checkpoint

    if problem not in OPERATOR_PROBLEMS_2D:
        raise UsageError(
            f"problem: expected one of {sorted(OPERATOR_PROBLEMS_2D)}, got {problem!r}"
        )
    if backbone not in BACKBONES_2D:
        raise UsageError(
            f"backbone: expected one of {list(BACKBONES_2D)} for {problem}, got {backbone!r}"
        )
    if config is not None and not isinstance(config, TrainingConfig2d):
        raise UsageError(
            f"config: expected a TrainingConfig2d for {problem}, got {type(config).__name__}"
        )
    config, out_dir = _prepare(
        n_train, n_test, threads, config or TrainingConfig2d(), epochs, out_dir
    )
    if backbone in ENSEMBLE_BACKBONES_2D and check_positive_int(members, "members") < 2:
        raise UsageError(f"members: expected at least 2 for {backbone}, got {members}")
    spec = make_problem2d(problem, n=n)
    train, test = spec.generate(n_train, seed), spec.generate(n_test, seed + 1000)
    if backbone in ENSEMBLE_BACKBONES_2D:
        return run_ensemble2d(
            spec,
            backbone,
            train,
            test,
            config,
            out_dir,
            seed,
            members,
            draws,
            report,
            progress,
            ensemble_covariance,
        )
    kind = BACKBONES[backbone]
    model, seconds = train_model2d(kind, spec, train, config, seed, progress=progress)
    metrics, _ = evaluate2d(model, kind, spec, test)
    result = {
        "problem": problem,
        "backbone": backbone,
        "seed": seed,
        "map": "one autoregressive step, rolled out from the first state(s) to t_end",
        "sizes": {"n_train": n_train, "n_test": n_test, "n": spec.n, "n_steps": spec.n_steps},
        "config": config_dict(config),
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "metrics": {**metrics, "train_s": seconds},
    }
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    save_checkpoint(
        out_dir / "model.pt",
        state,
        model.hyperparameters,
        {
            "problem": problem,
            "kind": kind,
            "n": spec.n,
            "n_steps": spec.n_steps,
            "t_end": spec.t_end,
            "config": config_dict(config),
        },
    )
    write_json(out_dir / "metrics.json", result)
    if figure:
        _plot_steps(spec, metrics["rel_l2_per_step"], backbone, out_dir / "error_vs_time.png")
    from probcons.report import write_report

    write_report([out_dir])  # the point metrics: a 2-D backbone here is deterministic
    return result


def _plot_steps(problem, errors: list[float], label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = problem.times[-len(errors) :].numpy()
    figure, axis = plt.subplots(figsize=(4.6, 3.4))
    axis.semilogy(times, errors, "C0-o", ms=3, label=label)
    axis.set_xlabel("t")
    axis.set_ylabel("relative L2 error of the rollout")
    axis.set_title(problem.name)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_ensemble2d(
    problem,
    backbone: str,
    train,
    test,
    config,
    out_dir: Path,
    seed: int = 0,
    members: int = 4,
    draws: int = DRAWS_2D,
    report: bool = True,
    progress: bool = False,
    covariance: str = "sample",
) -> dict:
    """A 2-D ensemble run: train, calibrate on held-out trajectories, condition, write files.
    covariance: the prediction's, "sample" or "marginal" (`BoonEnsemble2d`).

    Methods: "unconstrained" (the ensemble's Gaussian) and "probconserv" (exact on
    `physics_constraint`). metrics.json holds the flat "metrics" of the unconstrained
    prediction and one summary per method (`ensemble2d_scores`), as on 1-D ensemble runs.
    """
    from probcons.backbones.boon_ensemble2d import BoonEnsemble2d
    from probcons.checkpoint import save_checkpoint

    check_positive_int(draws, "draws")
    kind = ENSEMBLE_BACKBONES_2D[backbone]
    ensemble, seconds = BoonEnsemble2d.train(
        problem, train, config, members, seed, kind, progress=progress, covariance=covariance
    )
    for index, model in enumerate(ensemble.models):
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        extra = {
            "problem": problem.name,
            "kind": kind,
            "n": problem.n,
            "n_steps": problem.n_steps,
            "t_end": problem.t_end,
            "config": config_dict(config),
        }
        save_checkpoint(out_dir / f"member_{index}.pt", state, model.hyperparameters, extra)
    validation = problem.generate(max(len(test) // 2, 2), seed + VALIDATION_SEED_2D)
    ensemble.calibrate(validation)
    rollouts = ensemble.member_rollouts(test)
    priors = ensemble.predict(test, rollouts)
    posteriors = {"unconstrained": priors, "probconserv": ensemble.posteriors(test, priors)}
    summaries = write_method_files2d(out_dir, problem, test, posteriors, backbone, draws, seed)
    result = {
        "problem": problem.name,
        "backbone": backbone,
        "seed": seed,
        "map": "one autoregressive step per member, rolled out from the first state(s) to t_end",
        "sizes": {
            "n_train": len(train),
            "n_test": len(test),
            "n_validation": len(validation),
            "n": problem.n,
            "n_steps": problem.n_steps,
            "members": members,
            "draws": draws,
        },
        "ensemble_covariance": covariance,
        "config": config_dict(config),
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "metrics": {
            **summaries["unconstrained"],
            "noise_variance": ensemble.noise_variance,
            "train_s": seconds,
            "members": members,
        },
        "methods": list(summaries),
        **summaries,
    }
    write_json(out_dir / "metrics.json", result)
    if report:
        from probcons.report import write_report

        write_report([out_dir])
    return result


def ensemble2d_scores(problem, posterior: Posterior, states: torch.Tensor) -> dict[str, float]:
    """Scores of one trajectory's Gaussian on the predicted slices (float64): rel_l2 (mean over
    slices of ||m - u|| / ||u||), crps (closed-form Gaussian, mean over points), ll, coverage_90,
    boundary_error (max |wall rows of m|), circulation (cavity) / balance (wave2d) residual
    max |row(m) - b|."""
    from probcons.backbones.boon_ensemble2d import (
        balance_residual,
        circulation_residual,
        physics_constraint,
    )

    truth = states[problem.history :].to(torch.float64).reshape(posterior.grid.shape)
    mean, variance = posterior.mean, posterior.variance
    per_slice = (mean - truth).norm(dim=1) / truth.norm(dim=1)
    constraint = physics_constraint(problem, states)
    walls = [k for k, name in enumerate(constraint.names) if name != "balance"]
    if problem.name == "cavity":
        physics = ("circulation", circulation_residual(problem, mean))
    else:
        physics = ("balance", balance_residual(problem, mean, states[0, 0]))
    return {
        "rel_l2": float(per_slice.mean()),
        "crps": float(scores.crps_gaussian(mean, variance, truth).mean()),
        "ll": float(scores.gaussian_log_likelihood(mean, variance, truth).mean()),
        "coverage_90": float(
            scores.gaussian_interval_coverage(mean, variance, truth, 0.9).double().mean()
        ),
        "boundary_error": float(constraint.residual(mean)[:, walls].abs().max()),
        f"{physics[0]}_residual": float(physics[1].abs().max()),
    }


def write_method_files2d(
    out_dir: Path,
    problem,
    test,
    posteriors: dict[str, list[Posterior]],
    backbone: str,
    draws: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """`<method>.nc` per method on the flat grid (predicted times, C n^2 positions; the test
    trajectories are the functions) and {method: summary of `ensemble2d_scores`}.

    The files mark x as a flat 2-D field (field_layout FLAT_2D_LAYOUT, channels, n), so the
    report shows no CE and no mass figure (a sum over the positions is no conservation law) and
    takes the 2-D scores (`ensemble2d_scores`) from metrics.json into its "2-D physics" table.
    No boundary_condition attribute is set (its 1-D boundary column does not apply). The rows
    are not stored (a cavity's wall rows would take n_test x n_t x 392 x 5000 floats)."""
    from probcons.backbones.boon_ensemble2d import ensemble_grid, flat_truth
    from probcons.report.data import FLAT_2D_LAYOUT

    grid = ensemble_grid(problem)
    truth = flat_truth(problem, test)
    mass = truth @ grid.trapezoid_weights()  # the schema's mass: a whole-field sum, not shown
    attrs = {
        "problem": problem.name,
        "backbone": backbone,
        "field_layout": FLAT_2D_LAYOUT,
        "channels": problem.channels,
        "n": problem.n,
        "sigma_G": 0.0,
        "parameter_name": "test sample",
        "time_of_interest": float(grid.t[grid.n_t // 2]),
        "seed": seed,
    }
    summaries = {}
    for number, (method, predictions) in enumerate(posteriors.items()):
        samples, means, variances, per_sample = _sample_posteriors(
            predictions,
            draws,
            seed,
            number,
            lambda i, posterior, _: ensemble2d_scores(problem, posterior, test.states[i]),
        )
        data = posterior_inference_data(
            samples=samples,
            truth=truth.numpy(),
            mean=means,
            variance=variances,
            parameter=np.arange(len(test), dtype=np.float64),
            mass=mass.numpy(),
            grid=grid,
            attrs={**attrs, "method": method},
        )
        write_inference_data(out_dir / f"{method}.nc", data)
        summaries[method] = summarize(per_sample)
    return summaries
