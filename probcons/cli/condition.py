"""`probcons condition PREDICTIONS.nc --model MODEL.py --out DIR`: your own surrogate's
predictions, conditioned on your own Pyro model's constraint sites, written as a run folder.

PREDICTIONS.nc is an InferenceData netCDF file (one HDF5 group per InferenceData group, as
`xarray.Dataset.to_netcdf(path, group=..., engine="h5netcdf")` or ArviZ write it) holding, on
named coordinates t and x (strictly increasing),

- draws: a variable (`u`, or the only one with a draw dimension) in posterior_predictive or
  posterior with dims (chain?, draw or sample, function?, t, x), at least 2 draws; each
  function's draws become N(sample mean, low-rank sample covariance) (`from_dataarray`, with
  D at least probcons.backbones.samples.VARIANCE_FLOOR of the largest sample variance);
- or moments, in posterior_predictive, posterior, predictions or constant_data: `u_mean` (or
  `mean`) (function?, t, x) with `u_variance` (or `variance`) (function?, t, x), a diagonal
  covariance, and/or `u_factor` (or `factor`) (function?, t, x, rank), the low-rank covariance
  D + F F^T with D the variance if given, else VARIANCE_FLOOR of the largest F F^T
  diagonal;
- optionally the truth, observed_data.u (or its only variable) (function?, t, x), and the
  exact mass U(t), constant_data.mass (function?, t), drawn in the report's mass figure.

Draws win over moments when a file has both. A missing function dimension means one function.

The model file defines `model(prediction)`: it draws the latent `u` from
`GaussianField(prediction)` and observes linear sites of it (`observe_constraint`, or a
Normal/Delta site); `prediction` is one function's Gaussian on the file's grid
(`prediction.grid`). Each method (unconstrained, HardC, ProbConserv) is applied to every
function and written as `<method>.nc` in the `probcons run` schema with the rows applied
(constant_data.constraint_*); with the truth, `metrics.json` (MSE, CE, LL, CRPS, coverage, mean
and standard error over functions) and the calibration report too. Everything is written into a
hidden folder beside --out that replaces it when complete.

Parsing imports nothing heavy; the job imports torch, Pyro and the runner's file helpers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probcons.cli.catalog import METHODS
from probcons.cli.run import parse_methods
from probcons.errors import UsageError

SAMPLE_DTYPES = ("float32", "float64")
"""--sample-dtype: float32 (default, the `probcons run` files) or float64 (exact rows hold to
round-off in the stored draws)."""
DEFAULT_DRAWS = 100
DRAW_GROUPS = ("posterior_predictive", "posterior")
MOMENT_GROUPS = ("posterior_predictive", "posterior", "predictions", "constant_data")
DRAW_DIMS = ("draw", "sample")
FIELD = "u"
MEAN_NAMES = ("u_mean", "mean")
VARIANCE_NAMES = ("u_variance", "variance")
FACTOR_NAMES = ("u_factor", "factor")
FUNCTION = "function"
MIN_DRAWS = 2
COORDINATE_TOLERANCE = 1e-12
"""Largest relative difference between the truth's t, x coordinates and the prediction's."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "condition",
        help="condition your own predictions (.nc) on your Pyro model's constraints",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("predictions", type=Path, help="InferenceData netCDF (draws or moments)")
    parser.add_argument(
        "--model", type=Path, required=True, help="Pyro model file defining model(prediction)"
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    parser.add_argument(
        "--methods",
        type=parse_methods,
        default=METHODS,
        help="comma-separated methods (default unconstrained,hardc,probconserv)",
    )
    parser.add_argument(
        "--draws", type=int, default=DEFAULT_DRAWS, help="posterior draws per function"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sample-dtype",
        choices=SAMPLE_DTYPES,
        default="float32",
        help="stored draws: float32 (default) or float64 (exact rows hold to round-off)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty run directory"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.set_defaults(handler=handle)


# -- reading a user's file ----------------------------------------------------------------


@dataclass
class UserPredictions:
    """What PREDICTIONS.nc holds: one prior per function on `grid`, the truth, the mass.

    kind "draws" (`field` the draws' DataArray) or "moments" (`mean`, `variance`, `factor`
    DataArrays, each None if absent); truth (F, n_t, n_x) and mass (F, n_t) float64 arrays or
    None; attrs: the source group's attributes.
    """

    path: Path
    grid: Any
    n_functions: int
    kind: str
    source: str
    field: Any = None
    mean: Any = None
    variance: Any = None
    factor: Any = None
    truth: Any = None
    mass: Any = None
    attrs: dict | None = None
    datasets: tuple = ()

    def close(self) -> None:
        """Release the file."""
        for dataset in self.datasets:
            dataset.close()

    def __enter__(self) -> UserPredictions:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def prior(self, function: int):
        """Function `function`'s GaussianPrediction on `grid`."""
        if self.kind == "draws":
            from probcons.backbones.samples import from_dataarray

            draws = _one_function(self.field, function)
            return from_dataarray(draws, grid=self.grid)  # D >= VARIANCE_FLOOR x max variance
        return _moments_prior(self, function)


def _describe_dims(variable) -> str:
    return "(" + ", ".join(map(str, variable.dims)) + ")"


def _one_function(variable, function: int):
    return variable.isel({FUNCTION: function}) if FUNCTION in variable.dims else variable


def _open_groups(path: Path) -> dict:
    """{group: lazily opened xarray Dataset} of an InferenceData netCDF file."""
    import h5netcdf
    import xarray as xr

    if not path.is_file():
        raise UsageError(
            f"predictions: expected an InferenceData netCDF file, got {str(path)!r} (no such file)"
        )
    try:
        with h5netcdf.File(path, "r") as handle:
            names = list(handle.groups)
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())
        raise UsageError(
            "predictions: expected an InferenceData netCDF file (HDF5 with groups, e.g. written "
            f'by to_netcdf(path, group=..., engine="h5netcdf")), could not read {str(path)!r} '
            f"({message})"
        ) from error
    if not names:
        raise UsageError(
            f"predictions: expected InferenceData groups such as posterior_predictive in "
            f"{str(path)!r}, found none"
        )
    return {name: xr.open_dataset(path, group=name, engine="h5netcdf") for name in names}


def _check_field_dims(variable, where: str, extra: tuple[str, ...], expected: str) -> None:
    """Dims of `variable` are t, x, optional function, and exactly the dims in `extra` (names
    of further allowed dims are matched by the caller); t and x carry coordinates."""
    dims = set(map(str, variable.dims))
    allowed = {"t", "x", FUNCTION, *extra}
    if not {"t", "x"} <= dims or dims - allowed:
        raise UsageError(
            f"predictions: expected {where} with dims {expected} on named coordinates t and x, "
            f"got dims {_describe_dims(variable)}"
        )
    missing = [name for name in ("t", "x") if name not in variable.coords]
    if missing:
        raise UsageError(
            f"predictions: expected coordinate values for t and x on {where}, got none for "
            f"{' and '.join(missing)}"
        )


def _find_draws(groups: dict):
    """(group, name, DataArray) of the draws, or None when no variable has a draw dimension."""
    for group in DRAW_GROUPS:
        if group not in groups:
            continue
        dataset = groups[group]
        candidates = [
            str(name)
            for name, variable in dataset.data_vars.items()
            if any(dim in variable.dims for dim in DRAW_DIMS)
        ]
        if not candidates:
            continue
        if FIELD in candidates:
            name = FIELD
        elif len(candidates) == 1:
            name = candidates[0]
        else:
            raise UsageError(
                f"predictions: expected the field's draws as {group}.{FIELD}, or one variable "
                f"with a draw dimension in {group}, got {candidates}"
            )
        return group, name, dataset[name]
    return None


def _first(dataset, names: tuple[str, ...]):
    return next((dataset[name] for name in names if name in dataset.data_vars), None)


def _find_moments(groups: dict):
    """(group, mean, variance or None, factor or None), or None when no group has a mean."""
    for group in MOMENT_GROUPS:
        if group not in groups:
            continue
        mean = _first(groups[group], MEAN_NAMES)
        if mean is None:
            continue
        variance = _first(groups[group], VARIANCE_NAMES)
        factor = _first(groups[group], FACTOR_NAMES)
        if variance is None and factor is None:
            raise UsageError(
                f"predictions: expected {group}.{mean.name} with a variance "
                f"({' or '.join(VARIANCE_NAMES)}) or a low-rank factor "
                f"({' or '.join(FACTOR_NAMES)}) in {group}, got neither"
            )
        return group, mean, variance, factor
    return None


def _grid_of(variable):
    import numpy as np

    from probcons.grid import Grid

    return Grid(
        np.asarray(variable.coords["t"].values, dtype=np.float64),
        np.asarray(variable.coords["x"].values, dtype=np.float64),
    )


def _count_functions(variable) -> int:
    return int(variable.sizes[FUNCTION]) if FUNCTION in variable.dims else 1


def _same_axes(variable, grid, n_functions: int, where: str) -> None:
    """`variable` lies on `grid`'s t and x (same coordinates) and has n_functions functions."""
    import numpy as np

    _check_field_dims(variable, where, (), "(function?, t, x)")
    for axis, values in (("t", grid.t), ("x", grid.x)):
        given = np.asarray(variable.coords[axis].values, dtype=np.float64)
        expected = values.numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        if given.shape != expected.shape or not np.allclose(
            given, expected, rtol=0, atol=COORDINATE_TOLERANCE * scale
        ):
            raise UsageError(
                f"predictions: expected {where} on the predictions' {axis} coordinates "
                f"({expected.size} values), got {given.size} different ones"
            )
    if _count_functions(variable) != n_functions:
        raise UsageError(
            f"predictions: expected {where} for {n_functions} functions, got "
            f"{_count_functions(variable)}"
        )


def _field_array(variable, dims: tuple[str, ...]):
    """(F, *dims) float64 values of a variable with an optional function dimension."""
    import numpy as np

    if FUNCTION not in variable.dims:
        variable = variable.expand_dims(FUNCTION)
    values = np.asarray(variable.transpose(FUNCTION, *dims).values, dtype=np.float64)
    return values


def read_predictions(path: str | Path) -> UserPredictions:
    """Read and check PREDICTIONS.nc (see the module docstring); data stay on disk until a
    function's prior is built. Raises UsageError naming what the file lacks."""
    path = Path(path)
    groups = _open_groups(path)
    try:
        predictions = _read_groups(path, groups)
    except BaseException:
        for dataset in groups.values():
            dataset.close()
        raise
    predictions.datasets = tuple(groups.values())
    return predictions


def _read_groups(path: Path, groups: dict) -> UserPredictions:
    import numpy as np

    found = _find_draws(groups)
    if found is not None:
        group, name, field = found
        where = f"{group}.{name}"
        draw = next(dim for dim in DRAW_DIMS if dim in field.dims)
        _check_field_dims(field, where, (draw, "chain"), "(chain?, draw|sample, function?, t, x)")
        count = int(np.prod([field.sizes[dim] for dim in field.dims if dim in (draw, "chain")]))
        if count < MIN_DRAWS:
            raise UsageError(
                f"predictions: expected at least {MIN_DRAWS} draws per function in {where}, "
                f"got {count}"
            )
        grid = _grid_of(field)
        predictions = UserPredictions(
            path, grid, _count_functions(field), "draws", where, field=field
        )
        attrs = groups[group].attrs
    else:
        moments = _find_moments(groups)
        if moments is None:
            listing = {name: sorted(map(str, ds.data_vars)) for name, ds in groups.items()}
            raise UsageError(
                "predictions: expected draws (a variable with dims (chain?, draw|sample, "
                "function?, t, x) in posterior_predictive or posterior) or moments (mean with "
                f"variance or factor), got groups and variables {listing}"
            )
        group, mean, variance, factor = moments
        where = f"{group}.{mean.name}"
        _check_field_dims(mean, where, (), "(function?, t, x)")
        grid = _grid_of(mean)
        n_functions = _count_functions(mean)
        if variance is not None:
            _same_axes(variance, grid, n_functions, f"{group}.{variance.name}")
        if factor is not None:
            rank = [dim for dim in factor.dims if dim not in ("t", "x", FUNCTION)]
            if len(rank) != 1:
                raise UsageError(
                    f"predictions: expected {group}.{factor.name} with dims (function?, t, x, "
                    f"rank), got dims {_describe_dims(factor)}"
                )
            _same_axes(factor.isel({rank[0]: 0}), grid, n_functions, f"{group}.{factor.name}")
        predictions = UserPredictions(
            path,
            grid,
            n_functions,
            "moments",
            where,
            mean=mean,
            variance=variance,
            factor=factor,
        )
        attrs = groups[group].attrs
    predictions.attrs = {str(key): value for key, value in attrs.items()}
    if "observed_data" in groups:
        observed = groups["observed_data"]
        truth = observed[FIELD] if FIELD in observed.data_vars else None
        if truth is None and len(observed.data_vars) == 1:
            truth = next(iter(observed.data_vars.values()))
        if truth is None:
            raise UsageError(
                f"predictions: expected the truth as observed_data.{FIELD} (or a single "
                f"variable), got {sorted(map(str, observed.data_vars))}"
            )
        where = f"observed_data.{truth.name}"
        _same_axes(truth, grid, predictions.n_functions, where)
        predictions.truth = _field_array(truth, ("t", "x"))
        if not np.isfinite(predictions.truth).all():
            raise UsageError(f"predictions: expected finite values in {where}, got NaN or inf")
    if "constant_data" in groups and "mass" in groups["constant_data"].data_vars:
        mass = groups["constant_data"]["mass"]
        if set(map(str, mass.dims)) - {FUNCTION} != {"t"} or mass.sizes["t"] != grid.n_t:
            raise UsageError(
                f"predictions: expected constant_data.mass with dims (function?, t) and "
                f"{grid.n_t} times, got dims {_describe_dims(mass)}"
            )
        if _count_functions(mass) != predictions.n_functions:
            raise UsageError(
                f"predictions: expected constant_data.mass for {predictions.n_functions} "
                f"functions, got {_count_functions(mass)}"
            )
        predictions.mass = _field_array(mass, ("t",))
    return predictions


def _moments_prior(predictions: UserPredictions, function: int):
    """from_moments of one function: a diagonal covariance, or D + F F^T with a factor."""
    import numpy as np

    from probcons.backbones.samples import from_moments
    from probcons.covariance import LowRankCovariance

    grid = predictions.grid
    mean = _one_function(predictions.mean, function).transpose("t", "x").values
    variance = None
    if predictions.variance is not None:
        variance = _one_function(predictions.variance, function).transpose("t", "x").values
        variance = np.asarray(variance, dtype=np.float64).reshape(-1)
        if not np.isfinite(variance).all() or (variance < 0).any():
            raise UsageError(
                f"predictions: expected finite variances >= 0 in {predictions.variance.name} "
                f"(function {function}), got minimum {np.nanmin(variance):.3g} or NaN"
            )
    if predictions.factor is None:
        return from_moments(mean, variance, grid)
    factor = _one_function(predictions.factor, function)
    rank = next(dim for dim in factor.dims if dim not in ("t", "x"))
    columns = np.asarray(factor.transpose("t", "x", rank).values, dtype=np.float64)
    columns = columns.reshape(grid.size, -1)
    if variance is None:
        from probcons.backbones.samples import VARIANCE_FLOOR

        floor = VARIANCE_FLOOR * float(np.square(columns).sum(axis=1).max())
        variance = np.full(grid.size, floor)
    return from_moments(mean, LowRankCovariance(variance, columns), grid)


# -- the job --------------------------------------------------------------------------------


def _draw_generator(seed: int, function: int, method: str):
    """A torch generator for (function, method): one SeedSequence per run, spawned per
    function and per method (by its place in METHODS, so a subset of methods draws the same)."""
    import numpy as np
    import torch

    sequence = np.random.SeedSequence(seed, spawn_key=(function, METHODS.index(method)))
    state = int(sequence.generate_state(1, dtype=np.uint64)[0]) >> 1  # inside int64
    return torch.Generator().manual_seed(state)


def _scores(posterior, samples, truth, sites, stored) -> dict[str, float]:
    """The metrics of one function (those of `probcons run` that need no Problem), plus
    ce_draws_max: the largest |G u - b| over the draws as the file stores them."""
    from probcons import metrics
    from probcons.runner import field_scores

    scores = field_scores(posterior, metrics.sorted_draws(samples), truth, sites)
    return {**scores, "ce_draws_max": float(sites.residual(stored).abs().max())}


def _file_data(predictions, samples, posterior, sites, function, dtype, attrs):
    """One function of a method's file: `posterior_inference_data` with the constraint rows,
    draws stored as `dtype`, without the groups and variables the user's file did not give."""
    import arviz as az
    import numpy as np

    from probcons.posterior_files import posterior_inference_data
    from probcons.runner import constraint_arrays

    grid = predictions.grid
    draws = samples.numpy()[None]  # (1, D, n_t, n_x)
    truth = predictions.truth
    data = posterior_inference_data(
        samples=draws,
        truth=np.full((1, *grid.shape), np.nan) if truth is None else truth[function][None],
        mean=posterior.mean.numpy()[None],
        variance=posterior.variance.numpy()[None],
        parameter=np.full(1, np.nan),
        mass=np.full((1, grid.n_t), np.nan)
        if predictions.mass is None
        else predictions.mass[function][None],
        grid=grid,
        attrs=attrs,
        constraint=constraint_arrays([sites.constraint]),
        sample_dtype=dtype,
    )
    groups = {name: data[name] for name in data.groups()}
    if truth is None:
        del groups["observed_data"]
    dropped = ["parameter"] + (["mass"] if predictions.mass is None else [])
    groups["constant_data"] = groups["constant_data"].drop_vars(dropped)
    return az.InferenceData(**groups)


def _attributes(predictions: UserPredictions, method: str, sites, model: Path, dtype: str):
    """Attributes of every group of a method's file (the `probcons run` ones that apply)."""
    import numpy as np

    grid = predictions.grid
    given = predictions.attrs or {}
    time_of_interest = given.get("time_of_interest", float(grid.t[grid.n_t // 2]))
    return {
        "problem": str(given.get("problem", "custom")),
        "backbone": str(given.get("backbone", "user")),
        "method": method,
        "sigma_G": float(np.max(sites.constraint.noise_std.numpy())),
        "time_of_interest": float(np.asarray(time_of_interest).reshape(-1)[0]),
        "constraint_flat": int(sites.flat),
        "predictions": predictions.path.name,
        "predictions_source": predictions.source,
        "model": model.name,
        "sample_dtype": dtype,
    }


@dataclass
class ConditionSettings:
    """Arguments of `probcons condition`; `check()` validates them before anything is written."""

    predictions: Path
    model: Path
    out: Path
    methods: tuple[str, ...] = METHODS
    draws: int = DEFAULT_DRAWS
    seed: int = 0
    sample_dtype: str = "float32"
    overwrite: bool = False

    def check(self) -> None:
        from probcons.runner import MAX_SEED, check_output_directory
        from probcons.validation import check_choice, check_positive_int

        unknown = [method for method in self.methods if method not in METHODS]
        if unknown or not self.methods:
            raise UsageError(
                f"methods: expected a comma-separated subset of {', '.join(METHODS)}, "
                f"got {','.join(self.methods) or 'nothing'}"
            )
        if len(set(self.methods)) != len(self.methods):
            raise UsageError(f"methods: expected each method once, got {','.join(self.methods)}")
        check_positive_int(self.draws, "draws")
        check_choice(self.sample_dtype, "sample_dtype", SAMPLE_DTYPES)
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not (0 <= self.seed <= MAX_SEED)
        ):
            raise UsageError(f"seed: expected an integer in [0, {MAX_SEED}], got {self.seed!r}")
        self.model, self.out = Path(self.model), Path(self.out)
        if not self.model.is_file():
            raise UsageError(
                f"model: expected a Pyro model file, got {str(self.model)!r} (no such file)"
            )
        if self.model.suffix != ".py":
            raise UsageError(f"model: expected a Python file (.py), got {str(self.model)!r}")
        check_output_directory(self.out, self.overwrite)


def condition_predictions(settings: ConditionSettings) -> dict[str, dict[str, float]] | None:
    """Run `probcons condition`: returns {method: metric summary} (None without the truth) and
    writes settings.out (replacing it only with settings.overwrite)."""
    import shutil

    import numpy as np

    from probcons.inference import ExactConditioning
    from probcons.runner import _move_into_place, _staging_directory, load_model

    settings.check()
    conditioning = ExactConditioning(load_model(settings.model))
    dtype = np.dtype(settings.sample_dtype)
    with read_predictions(settings.predictions) as predictions:
        # The run is built in <hidden folder beside OUT>/<OUT's name>, so that the report names
        # the run as OUT, and that folder is renamed to OUT once complete.
        hidden = _staging_directory(settings.out)
        try:
            staging = hidden / settings.out.resolve().name
            staging.mkdir()
            summary = _condition_into(staging, predictions, conditioning, settings, dtype)
            _move_into_place(staging, settings.out, settings.overwrite)
        finally:
            shutil.rmtree(hidden, ignore_errors=True)
    return summary


def _condition_into(staging: Path, predictions, conditioning, settings, dtype):
    """Every function and method into `staging`: the files, metrics.json and the report."""
    import torch

    from probcons.io import write_json
    from probcons.runner import append_inference_data, collect_sites, constraint_arrays, summarize

    scores: dict[str, list[dict[str, float]]] = {method: [] for method in settings.methods}
    first = None
    for function in range(predictions.n_functions):
        sites = collect_sites(conditioning, predictions.prior(function))
        if first is None:
            first = sites.constraint
        else:  # every function needs the same rows to share the files' dimensions
            constraint_arrays([first, sites.constraint])
        truth = None
        if predictions.truth is not None:
            truth = torch.from_numpy(predictions.truth[function])
        for method in settings.methods:
            posterior = sites.posterior(method)
            generator = _draw_generator(settings.seed, function, method)
            samples = posterior.sample(settings.draws, generator)
            attrs = _attributes(predictions, method, sites, settings.model, settings.sample_dtype)
            data = _file_data(predictions, samples, posterior, sites, function, dtype, attrs)
            append_inference_data(staging / f"{method}.nc", data)
            if truth is not None:
                stored = samples.to(_torch_dtype(settings.sample_dtype)).double()
                scores[method].append(_scores(posterior, samples, truth, sites, stored))
    if predictions.truth is None:
        return None
    summary = {method: summarize(per_function) for method, per_function in scores.items()}
    write_json(staging / "metrics.json", summary)
    _write_report(staging)
    return summary


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def _write_report(staging: Path) -> None:
    """The calibration report of the staged files (named like OUT, so labelled as OUT)."""
    from probcons.report import write_report

    write_report([staging])


def handle(args: argparse.Namespace) -> int:
    import torch

    from probcons.runner import format_table
    from probcons.validation import check_positive_int

    check_positive_int(args.threads, "threads")
    torch.set_num_threads(args.threads)
    settings = ConditionSettings(
        predictions=args.predictions,
        model=args.model,
        out=args.out,
        methods=args.methods,
        draws=args.draws,
        seed=args.seed,
        sample_dtype=args.sample_dtype,
        overwrite=args.overwrite,
    )
    summary = condition_predictions(settings)
    if summary is None:
        print("no truth (observed_data) in the predictions: no metrics.json and no report")
        print(f"wrote {settings.out}/")
    else:
        print(format_table(summary))
        print(f"wrote {settings.out}/ (report: {settings.out / 'report.html'})")
    return 0


__all__ = [
    "ConditionSettings",
    "UserPredictions",
    "add_parser",
    "condition_predictions",
    "handle",
    "read_predictions",
]
