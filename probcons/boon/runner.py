"""Run one operator problem with one backbone: data, training, evaluation, files.

Backbones: "fno", "fno-bc" (FNO with the boundary data as input channels), "boon-fno" (the
kernel-corrected FNO), "boon-ensemble" (members x boon-fno as a Gaussian backbone; on
heat-neumann also the ProbConserv update on [conservation; Neumann rows]).
Writes out_dir/metrics.json, out_dir/model.pt (or member_<e>.pt) and out_dir/boundary.png.
2-D problems (problems2d: cavity, wave2d; backbones fno, fno-bc, boon-fno) train the one-step
model, roll the test trajectories out and write metrics.json, model.pt and error_vs_time.png.
"""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import torch

from probcons.boon.ensemble import BoonEnsemble, conserve, heat_constraints
from probcons.boon.problems import OPERATOR_PROBLEMS, make_problem
from probcons.boon.problems2d import OPERATOR_PROBLEMS_2D, make_problem2d
from probcons.boon.training import TrainingConfig, config_dict, evaluate, predict, train_model
from probcons.errors import UsageError
from probcons.io import write_json
from probcons.validation import check_positive_int

BACKBONES = {"fno": "fno", "fno-bc": "fno-bc", "boon-fno": "boon", "boon-ensemble": "boon"}
BACKBONES_2D = ("fno", "fno-bc", "boon-fno")
TRAJECTORIES_2D = (80, 16)  # default training / test trajectories of the 2-D problems


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
) -> dict:
    """Train `backbone` on `problem` (seeded), evaluate on a test set, write files; return metrics.

    problem: a key of OPERATOR_PROBLEMS (or of OPERATOR_PROBLEMS_2D: run_operator_problem2d);
    backbone: a key of BACKBONES; out_dir: created if needed; seed: data, initialisation and
    batch order; n_train / n_test samples (default 200 / 100; 2-D: TRAJECTORIES_2D); n_x grid
    nodes on [0, 1]; n_times output times (default per problem); config: TrainingConfig (defaults),
    epochs overrides config.epochs; members: ensemble size (boon-ensemble only); threads:
    torch.set_num_threads (None leaves it); figure: write boundary.png.
    """
    if problem in OPERATOR_PROBLEMS_2D:
        return run_operator_problem2d(
            problem,
            backbone,
            out_dir,
            seed,
            n_train=TRAJECTORIES_2D[0] if n_train is None else n_train,
            n_test=TRAJECTORIES_2D[1] if n_test is None else n_test,
            epochs=epochs,
            threads=threads,
            figure=figure,
        )
    if problem not in OPERATOR_PROBLEMS:
        known = sorted(OPERATOR_PROBLEMS) + sorted(OPERATOR_PROBLEMS_2D)
        raise UsageError(f"problem: expected one of {known}, got {problem!r}")
    if backbone not in BACKBONES:
        raise UsageError(f"backbone: expected one of {sorted(BACKBONES)}, got {backbone!r}")
    n_train = 200 if n_train is None else n_train
    n_test = 100 if n_test is None else n_test
    config, out_dir = _prepare(
        n_train, n_test, threads, config or TrainingConfig(), epochs, out_dir
    )
    spec = make_problem(problem, n_x=n_x, n_times=n_times)
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
    if backbone != "boon-ensemble":
        model, seconds = train_model(kind, spec, train, config, seed)
        result["metrics"] = {**evaluate(model, kind, spec, test), "train_s": seconds}
        _save(model, out_dir / "model.pt", problem, kind)
        prediction = predict(model, kind, test).to(torch.float64)
    else:
        check_positive_int(members, "members")
        ensemble = BoonEnsemble.train(spec, train, config, members, seed)
        for index, model in enumerate(ensemble.models):
            _save(model, out_dir / f"member_{index}.pt", problem, kind)
        # the diagonal variance from held-out samples (neither training nor test data)
        validation = spec.generate(max(n_test // 2, 2), generator)
        ensemble.calibrate(validation)
        result["metrics"] = {
            **ensemble_metrics(ensemble, spec, test),
            "noise_variance": ensemble.noise_variance,
            "coverage_90": ensemble.coverage(test),
        }
        prediction = ensemble.member_predictions(test).mean(0)
    write_json(out_dir / "metrics.json", result)
    if figure:
        from probcons.boon.figures import plot_boundary_profiles

        plot_boundary_profiles(spec, test, {backbone: prediction}, out_dir / "boundary.png")
    return result


def ensemble_metrics(ensemble: BoonEnsemble, problem, test) -> dict:
    """Relative L2, mean predictive std, BC residual and (heat) conservation error, before/after."""
    predictions = ensemble.predict(test)
    truth = test.targets
    rel = []
    spread = []
    bc = []
    ce_prior, ce_post, bc_post, rel_post = [], [], [], []
    for i, prediction in enumerate(predictions):
        rel.append(float((prediction.mean - truth[i]).norm() / truth[i].norm()))
        spread.append(float(prediction.stddev.mean()))
        bc.append(
            float(
                problem.condition.residual(
                    prediction.mean[None],
                    test.boundary[i : i + 1] if test.boundary is not None else None,
                )
                .abs()
                .max()
            )
        )
        if problem.name == "heat-neumann":
            conservation, boundary = heat_constraints(problem, test, i, problem.condition.order)
            posterior = conserve(prediction, [conservation, boundary])
            ce_prior.append(float(conservation.residual(prediction.mean).abs().max()))
            ce_post.append(float(conservation.residual(posterior.mean).abs().max()))
            bc_post.append(float(boundary.residual(posterior.mean).abs().max()))
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
) -> dict:
    """Train a one-step 2-D model (problems2d), roll out the test trajectories, write files.

    problem: "cavity" or "wave2d"; backbone: one of BACKBONES_2D; n_train / n_test trajectories
    (training seed `seed`, test seed `seed` + 1000); n nodes per side; config: TrainingConfig2d
    (defaults), epochs overrides config.epochs. Writes metrics.json, model.pt (weights and
    hyperparameters; `training2d.load_model2d`) and error_vs_time.png; returns the metrics.
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
    config, out_dir = _prepare(
        n_train, n_test, threads, config or TrainingConfig2d(), epochs, out_dir
    )
    spec = make_problem2d(problem, n=n)
    train, test = spec.generate(n_train, seed), spec.generate(n_test, seed + 1000)
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
