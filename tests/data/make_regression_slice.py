"""Compute the regression slice: small, seeded runs of the three committed result families.

    PYTHONPATH=/path/to/baseline python tests/data/make_regression_slice.py [OUT.json]

writes tests/data/regression_slice.json (or OUT.json) from whichever `probcons` is imported;
tests/test_regression_slice.py recomputes the slice with the current code and compares.

- gpme: `probcons.runner.run` on Stefan with the shipped ANP (3 functions, 101 x 101, 100 draws,
  seed 0): the returned metrics, metrics.json, and per method a summary of the InferenceData file
  (attributes; sum, sum of squares, min, max of the moments, the draws and the truth; function
  0's mean and variance at every 5th x of the time-of-interest row).
- conditioning: `probcons.conditioning.condition` of a seeded random prior on a 50 x 200 grid
  (diagonal, and low rank 16 + diagonal, as in benchmarks/conditioning.py), on conservation
  alone and with Dirichlet rows at both ends: posterior mean and variance summaries, the
  constraint residual of the mean and of 8 seeded posterior draws.
- boon: heat-neumann (65 nodes, 40 training and 20 test samples, a small FNO, 8 epochs of 2
  steps, seed 0): `run_operator_problem` metrics for boon-fno and boon-ensemble (2 members),
  the data, and the same BOON trained through `probcons.boon.training` with its test predictions.

Only public entry points are used (listed in ENTRY_POINTS); every computation runs on one
torch thread, in a temporary working directory, so the package's own models/ are found.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ENTRY_POINTS = (
    "probcons.runner.RunSettings(problem, backbone, n_functions, grid, draws, seed, out, "
    "overwrite)",
    "probcons.runner.run(settings, progress=, report=) -> {method: {metric: float}}",
    "run directory: metrics.json, <method>.nc (InferenceData: posterior_predictive.u, "
    "observed_data.u, constant_data.u_mean/.u_variance/.parameter/.mass, attributes)",
    "probcons.grid.Grid.uniform(t_range, x_range, n_t, n_x)",
    "probcons.covariance.DiagonalCovariance(variance), LowRankCovariance(diagonal, factor)",
    "probcons.prediction.GaussianPrediction(mean, covariance, grid): .mean, .variance, "
    ".sample(n, generator)",
    "probcons.constraints.conservation_constraint(grid, mass), dirichlet_constraint(grid, "
    "left=, right=), LinearConstraint.stack(other), .residual(u)",
    "probcons.conditioning.condition(prior, constraint) -> GaussianPrediction-like",
    "probcons.operator_runner.run_operator_problem(problem, backbone, out_dir, seed, n_train=, "
    "n_test=, n_x=, config=, members=, threads=, figure=) -> {'metrics', 'sizes', ...}",
    "probcons.problems.operators.make_problem(name, n_x=); OperatorProblem.generate(n, generator) "
    "-> OperatorData(inputs, targets, boundary)",
    "probcons.boon.training.TrainingConfig(modes, width, layers, padding, projection_width, "
    "epochs, batch_size), train_model(kind, problem, train, config, seed) -> (model, s), "
    "predict(model, kind, data)",
)

SEED = 0
GPME = {"problem": "stefan", "backbone": "anp", "n_functions": 3, "grid": (101, 101), "draws": 100}
ROW_STRIDE = 5
"""Every ROW_STRIDE-th x of function 0's time-of-interest row is stored."""
CONDITIONING_GRID = (50, 200)
CONDITIONING_RANK = 16
CONDITIONING_DRAWS = 8
CONDITIONING_CASES = (
    ("diagonal", "conservation"),
    ("diagonal", "conservation+dirichlet"),
    ("lowrank", "conservation"),
    ("lowrank", "conservation+dirichlet"),
)
ENTRY_STRIDE = 997
"""Every ENTRY_STRIDE-th entry of the flattened posterior mean and variance is stored."""
BOON_PROBLEM = "heat-neumann"
BOON_SIZES = {"n_train": 40, "n_test": 20, "n_x": 65}
BOON_CONFIG = {
    "modes": 8,
    "width": 16,
    "layers": 2,
    "padding": 4,
    "projection_width": 32,
    "epochs": 8,
    "batch_size": 20,
}
BOON_MEMBERS = 2
PREDICTION_STRIDE = 8
"""Every PREDICTION_STRIDE-th node of test sample 0's last output time is stored."""


def summary(values) -> dict[str, float]:
    """sum, sum of squares, min and max of an array, in float64."""
    array = np.asarray(values, dtype=np.float64)
    return {
        "sum": float(array.sum()),
        "sum_squares": float(np.square(array).sum()),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def plain(value):
    """JSON-ready Python value of a NumPy/torch scalar or a nested container."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


@contextlib.contextmanager
def single_thread_in(directory: Path):
    """One torch thread and `directory` (created) as working directory; both restored after."""
    threads = torch.get_num_threads()
    previous = Path.cwd()
    torch.set_num_threads(1)
    Path(directory).mkdir(parents=True, exist_ok=True)
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)
        torch.set_num_threads(threads)


# -- 1. the GPME Stefan row ---------------------------------------------------------------------


def inference_data_summary(path: Path) -> dict:
    """Attributes, shapes and value summaries of one method's InferenceData file."""
    import arviz as az

    data = az.from_netcdf(path)
    constant = data.constant_data
    mean = constant["u_mean"].values
    variance = constant["u_variance"].values
    draws = data.posterior_predictive["u"]
    times = constant["t"].values
    row = int(np.argmin(np.abs(times - float(constant.attrs["time_of_interest"]))))
    attributes = ("problem", "backbone", "method", "sigma_G", "parameter_name", "time_of_interest")
    return {
        "attributes": {name: plain(constant.attrs[name]) for name in (*attributes, "seed")},
        "draws_dims": list(draws.dims),
        "draws_shape": list(draws.shape),
        "draws_dtype": str(draws.dtype),
        "t": summary(times),
        "x": summary(constant["x"].values),
        "parameter": plain(constant["parameter"].values),
        "mass": summary(constant["mass"].values),
        "truth": summary(data.observed_data["u"].values),
        "u_mean": summary(mean),
        "u_variance": summary(variance),
        "draws": summary(draws.values),
        "time_of_interest_index": row,
        "function_0_mean_at_time_of_interest": plain(mean[0, row, ::ROW_STRIDE]),
        "function_0_variance_at_time_of_interest": plain(variance[0, row, ::ROW_STRIDE]),
    }


def compute_gpme(directory: Path) -> dict:
    """The Stefan ANP row on GPME["n_functions"] functions, run into directory/run."""
    from probcons.runner import RunSettings, run

    out = Path(directory) / "run"
    settings = RunSettings(**GPME, seed=SEED, out=out, overwrite=True)
    with single_thread_in(Path(directory)):
        metrics = run(settings, progress=False, report=False)
    methods = sorted(metrics)
    return {
        "settings": plain({**GPME, "seed": SEED}),
        "metrics": plain(metrics),
        "metrics_file": json.loads((out / "metrics.json").read_text()),
        "files": {method: inference_data_summary(out / f"{method}.nc") for method in methods},
    }


# -- 2. conditioning rows -----------------------------------------------------------------------


def conditioning_case(covariance: str, constraints: str):
    """(prior, constraint): random mean, variance in [0.1, 1.1], factor 0.3 N(0, 1), random
    mass and boundary values, all from one generator seeded with SEED."""
    from probcons.constraints import conservation_constraint, dirichlet_constraint
    from probcons.covariance import DiagonalCovariance, LowRankCovariance
    from probcons.grid import Grid
    from probcons.prediction import GaussianPrediction

    n_t, n_x = CONDITIONING_GRID
    generator = torch.Generator().manual_seed(SEED)

    def uniform(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t, n_x)
    mean = torch.randn(n_t, n_x, generator=generator, dtype=torch.float64)
    variance = 0.1 + uniform(n_t * n_x)
    if covariance == "diagonal":
        prior_covariance = DiagonalCovariance(variance)
    else:
        factor = 0.3 * torch.randn(
            n_t * n_x, CONDITIONING_RANK, generator=generator, dtype=torch.float64
        )
        prior_covariance = LowRankCovariance(variance, factor)
    constraint = conservation_constraint(grid, uniform(n_t))
    if constraints == "conservation+dirichlet":
        constraint = constraint.stack(
            dirichlet_constraint(grid, left=uniform(n_t), right=uniform(n_t))
        )
    return GaussianPrediction(mean, prior_covariance, grid), constraint


def compute_conditioning() -> dict:
    """ProbConserv updates of the CONDITIONING_CASES: moments, residuals, seeded draws."""
    from probcons.conditioning import condition

    rows = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for covariance, constraints in CONDITIONING_CASES:
            prior, constraint = conditioning_case(covariance, constraints)
            posterior = condition(prior, constraint)
            mean = posterior.mean.reshape(-1)
            variance = posterior.variance.reshape(-1)
            generator = torch.Generator().manual_seed(SEED + 1)
            draws = posterior.sample(CONDITIONING_DRAWS, generator)
            rows[f"{covariance}/{constraints}"] = {
                "mean": summary(mean),
                "variance": summary(variance),
                "mean_entries": plain(mean[::ENTRY_STRIDE]),
                "variance_entries": plain(variance[::ENTRY_STRIDE]),
                "residual": float(constraint.residual(posterior.mean).abs().max()),
                "draws": summary(draws),
                "draws_residual": float(constraint.residual(draws).abs().max()),
            }
    finally:
        torch.set_num_threads(threads)
    return {"grid": list(CONDITIONING_GRID), "rank": CONDITIONING_RANK, "cases": rows}


# -- 3. BOON on heat-neumann --------------------------------------------------------------------


def compute_boon(directory: Path) -> dict:
    """boon-fno and boon-ensemble through the runner; the same BOON through the training API."""
    from probcons.boon.training import TrainingConfig, predict, train_model
    from probcons.operator_runner import run_operator_problem
    from probcons.problems.operators import make_problem

    config = TrainingConfig(**BOON_CONFIG)
    runs = {}
    with single_thread_in(Path(directory)):
        for backbone in ("boon-fno", "boon-ensemble"):
            result = run_operator_problem(
                BOON_PROBLEM,
                backbone,
                Path(directory) / backbone,
                SEED,
                **BOON_SIZES,
                config=config,
                members=BOON_MEMBERS,
                threads=1,
                figure=False,
            )
            metrics = {key: value for key, value in result["metrics"].items() if key != "train_s"}
            runs[backbone] = {"metrics": plain(metrics), "sizes": plain(result["sizes"])}
        problem = make_problem(BOON_PROBLEM, n_x=BOON_SIZES["n_x"])
        generator = torch.Generator().manual_seed(SEED)
        train = problem.generate(BOON_SIZES["n_train"], generator)
        test = problem.generate(BOON_SIZES["n_test"], generator)
        model, _ = train_model("boon", problem, train, config, SEED)
        prediction = predict(model, "boon", test).to(torch.float64)
    data = {
        "train_inputs": summary(train.inputs),
        "train_targets": summary(train.targets),
        "test_inputs": summary(test.inputs),
        "test_targets": summary(test.targets),
    }
    if test.boundary is not None:
        data["test_boundary"] = summary(test.boundary)
    return {
        "settings": plain({"problem": BOON_PROBLEM, **BOON_SIZES, **BOON_CONFIG, "seed": SEED}),
        "data": data,
        "runs": runs,
        "prediction": {
            "shape": list(prediction.shape),
            "values": summary(prediction),
            "sample_0_last_time": plain(prediction[0, -1, ::PREDICTION_STRIDE]),
        },
    }


# -- the whole slice ----------------------------------------------------------------------------


def compute_slice(directory: Path) -> dict:
    """{gpme, conditioning, boon}: every number the test compares."""
    directory = Path(directory)
    return plain(
        {
            "gpme": compute_gpme(directory / "gpme"),
            "conditioning": compute_conditioning(),
            "boon": compute_boon(directory / "boon"),
        }
    )


def versions() -> dict:
    """Library versions, and the probcons source used with its git commit (when it has one)."""
    import subprocess

    import probcons

    source = Path(probcons.__file__).resolve().parent
    done = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "probcons": str(source),
        "commit": done.stdout.strip() if done.returncode == 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0]) if argv else Path(__file__).resolve().with_name("regression_slice.json")
    with tempfile.TemporaryDirectory() as directory:
        values = compute_slice(Path(directory))
    document = {
        "meta": {
            "made_by": "tests/data/make_regression_slice.py",
            "versions": versions(),
            "entry_points": list(ENTRY_POINTS),
        },
        **values,
    }
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
