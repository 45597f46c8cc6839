"""Posterior samples as ArviZ InferenceData: the run-directory schema, lazy reading, conversion.

Schema of one `<method>.nc` (h5netcdf):
    posterior_predictive.u  (chain, draw, function, t, x)  float32 draws of the field
    observed_data.u         (function, t, x)               exact solution
    constant_data           optional: parameter (function), mass (function, t) = U(t),
                            u_mean, u_variance (function, t, x) exact predictive moments
    coords t, x, function; attrs on every group: problem, backbone, method, sigma_G,
    parameter_name, time_of_interest; a 2-D field stored flat also has field_layout =
    FLAT_2D_LAYOUT, channels C and n: x then indexes the C n^2 positions, channel-major.
Reading is lazy: one function's draws (chain * draw, n_t, n_x) are loaded at a time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import torch
import xarray as xr

from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.io import atomic_write
from probcons.validation import as_float64_tensor, describe

FIELD = "u"
SAMPLE_DIMS = ("chain", "draw")
FIELD_DIMS = ("function", "t", "x")
SAMPLE_DTYPE = np.float32
MIN_DRAWS = 2  # a sample variance needs two draws
# Draws are read in blocks of functions aligned with the file's chunks along `function` (a
# chunk spanning several functions is then decompressed once, not once per function), at most
# this many bytes per block.
READ_BLOCK_BYTES = 256 * 2**20
# Methods in the order the report lists them; others follow alphabetically.
METHOD_ORDER = ("unconstrained", "softc", "hardc", "probconserv")
# Groups ArviZ may hold a user's field in, searched in this order.
SAMPLE_GROUPS = ("posterior_predictive", "predictions", "posterior")
FLAT_2D_LAYOUT = "flat-2d"
"""attrs["field_layout"] of a 2-D field on C channels x n x n nodes stored along x, channel-major
(position c n^2 + i n + k): sums over x are whole-field sums, not a 1-D mass."""


def _plain(value: Any) -> Any:
    """netCDF attributes come back as 1-element arrays: a Python scalar instead."""
    array = np.asarray(value)
    if array.dtype.kind in "biuf" and array.size == 1:
        return array.reshape(()).item()
    return value


class MethodData:
    """Lazy view of one method's InferenceData file; `close()` (or `with`) releases it.

    Attributes: path, method, attrs (dict), grid (Grid), n_functions, n_draws (chain * draw),
    has_moments, has_mass, has_parameter, has_constraint, constraint_rows (the stored rows'
    names, or None). Draws are read one block of functions at a time
    (`block_size` functions, aligned with the file's chunks, at most READ_BLOCK_BYTES).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"path: expected an existing .nc file, got {str(self.path)!r}")
        try:
            self._idata = az.from_netcdf(self.path, engine="h5netcdf")
        except (OSError, ValueError) as error:
            raise UsageError(
                f"path: expected an InferenceData netCDF file, could not read {self.path}: {error}"
            ) from error
        try:
            self._check_schema()
        except ValueError:
            self.close()
            raise

    def _check_schema(self) -> None:
        groups = set(self._idata.groups())
        for group in ("posterior_predictive", "observed_data"):
            if group not in groups or FIELD not in self._idata[group]:
                raise UsageError(
                    f"{self.path.name}: expected variable {FIELD!r} in group {group!r}, "
                    f"found groups {sorted(groups)}"
                )
        draws = self._idata.posterior_predictive[FIELD]
        truth = self._idata.observed_data[FIELD]
        if set(draws.dims) != set(SAMPLE_DIMS + FIELD_DIMS):
            raise UsageError(
                f"{self.path.name}: posterior_predictive.{FIELD}: expected dims "
                f"{SAMPLE_DIMS + FIELD_DIMS}, got {draws.dims}"
            )
        if set(truth.dims) != set(FIELD_DIMS):
            raise UsageError(
                f"{self.path.name}: observed_data.{FIELD}: expected dims {FIELD_DIMS}, "
                f"got {truth.dims}"
            )
        self._draws = draws.transpose(*SAMPLE_DIMS, *FIELD_DIMS)
        self._truth = truth.transpose(*FIELD_DIMS)
        for dim in FIELD_DIMS:
            if draws.sizes[dim] != truth.sizes[dim]:
                raise UsageError(
                    f"{self.path.name}: dimension {dim!r} has {draws.sizes[dim]} entries in "
                    f"posterior_predictive and {truth.sizes[dim]} in observed_data"
                )
        self.grid = Grid(
            torch.tensor(np.asarray(draws["t"].values, dtype=np.float64)),
            torch.tensor(np.asarray(draws["x"].values, dtype=np.float64)),
        )
        self.n_functions = int(draws.sizes["function"])
        self.n_draws = int(draws.sizes["chain"] * draws.sizes["draw"])
        if self.n_functions < 1 or self.n_draws < MIN_DRAWS:
            raise UsageError(
                f"{self.path.name}: expected >= 1 function and >= {MIN_DRAWS} draws, got "
                f"{self.n_functions} functions and {self.n_draws} draws"
            )
        self.attrs = plain_attributes(self._idata.posterior_predictive.attrs)
        chunks = draws.encoding.get("preferred_chunks", {})
        per_function = self.n_draws * self.grid.size * draws.dtype.itemsize
        self.block_size = max(
            1, min(int(chunks.get("function", 1)), READ_BLOCK_BYTES // per_function)
        )
        self._block: tuple[int, np.ndarray] | None = None
        self.method = self.path.stem
        constant = self._idata["constant_data"] if "constant_data" in groups else None
        self._constant = constant
        self.has_moments = constant is not None and {"u_mean", "u_variance"} <= set(constant)
        self.has_mass = constant is not None and "mass" in constant
        self.has_parameter = constant is not None and "parameter" in constant
        self.has_constraint = constant is not None and "constraint_weights" in constant
        self.has_bounds = constant is not None and {"bound_lower", "bound_upper"} <= set(constant)
        self.has_site_residual = constant is not None and "site_residual" in constant
        self.constraint_rows: tuple[str, ...] | None = None
        if self.has_constraint and "constraint_row" in constant.coords:
            self.constraint_rows = tuple(
                str(name) for name in constant["constraint_row"].values.tolist()
            )

    # -- one function at a time --

    def draws(self, function: int) -> torch.Tensor:
        """(n_draws, n_t, n_x) float64 draws of function `function` (chains concatenated)."""
        start = function - function % self.block_size
        if self._block is None or self._block[0] != start:
            self._block = None  # release the previous block before reading the next
            stop = min(start + self.block_size, self.n_functions)
            block = np.asarray(self._draws.isel(function=slice(start, stop)).values)
            self._block = (start, block)
        values = self._block[1][:, :, function - start]
        return torch.from_numpy(values.astype(np.float64).reshape(self.n_draws, *self.grid.shape))

    def truth(self, function: int) -> torch.Tensor:
        """(n_t, n_x) float64 exact solution."""
        return torch.from_numpy(np.asarray(self._truth.isel(function=function).values, np.float64))

    def moments(self, function: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Exact predictive (mean, variance), each (n_t, n_x), or None if not stored."""
        if not self.has_moments:
            return None
        mean, variance = (
            torch.from_numpy(
                np.asarray(self._constant[name].transpose(*FIELD_DIMS)[function].values, np.float64)
            )
            for name in ("u_mean", "u_variance")
        )
        return mean, variance

    def mass(self, function: int) -> torch.Tensor | None:
        """(n_t,) U(t) of the exact solution, or None if not stored."""
        if not self.has_mass:
            return None
        mass = self._constant["mass"].transpose("function", "t")[function].values
        return torch.from_numpy(np.asarray(mass, np.float64))

    def constraint_residual(self, function: int, field: torch.Tensor) -> torch.Tensor | None:
        """G u - b for a field (n_t, n_x) with the rows function `function` was conditioned on
        (stored by `probcons run`), or None if the file has none."""
        if not self.has_constraint:
            return None
        rows = ("constraint_slice", "constraint_row")
        weights, values = (
            torch.from_numpy(
                np.asarray(self._constant[name][function].transpose(*dims).values, np.float64)
            )
            for name, dims in (
                ("constraint_weights", (*rows, "constraint_point")),
                ("constraint_values", rows),
            )
        )
        return constraint_residual(weights, values, field)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(lower, upper), each (n_t, n_x) float64, of the run's bound sites, or None."""
        if not self.has_bounds:
            return None
        return tuple(
            torch.from_numpy(np.asarray(self._constant[name].transpose(*FIELD_DIMS[1:]).values)).to(
                torch.float64
            )
            for name in ("bound_lower", "bound_upper")
        )

    def site_residual(self, function: int) -> float | None:
        """Max over draws, nonlinear sites and rows of |h(u) - b|, or None if not stored."""
        if not self.has_site_residual:
            return None
        return float(np.max(np.asarray(self._constant["site_residual"][function].values)))

    def parameter(self, function: int) -> float | None:
        """The PDE parameter of function `function`, or None if not stored."""
        if not self.has_parameter:
            return None
        return float(self._constant["parameter"][function].values)

    def close(self) -> None:
        self._block = None
        for group in self._idata.groups():
            self._idata[group].close()

    def __enter__(self) -> MethodData:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"MethodData(method={self.method!r}, functions={self.n_functions}, "
            f"draws={self.n_draws}, grid={self.grid!r})"
        )


def constraint_residual(
    weights: torch.Tensor, values: torch.Tensor, field: torch.Tensor
) -> torch.Tensor:
    """G u - b (slice, row) of stored constraint rows, weights (slice, row, point) and values
    (slice, row), for a field (n_t, n_x): slices and points are t and x, or 1 and t-major."""
    field = field.reshape(weights.shape[0], weights.shape[2])
    return torch.einsum("jki,ji->jk", weights, field) - values


def plain_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A group's attributes as `MethodData.attrs` holds them (1-element arrays as scalars)."""
    return {key: _plain(value) for key, value in attrs.items()}


def is_flat_2d(attrs: Mapping[str, Any]) -> bool:
    """True when a method file's attributes mark its x axis as a flattened 2-D field."""
    return attrs.get("field_layout") == FLAT_2D_LAYOUT


def method_sort_key(method: str) -> tuple[int, str]:
    """Canonical order: unconstrained, softc, hardc, probconserv, then the rest by name."""
    name = method.lower()
    return (METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER), name)


def method_files(run_dir: str | os.PathLike) -> list[Path]:
    """The `<method>.nc` files of a run directory, in canonical method order."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise UsageError(f"run_dirs: expected existing directories, got {str(directory)!r}")
    files = sorted(directory.glob("*.nc"), key=lambda path: method_sort_key(path.stem))
    if not files:
        raise UsageError(f"run_dirs: expected <method>.nc files in {directory}, found none")
    return files


# -- user samples -> InferenceData --


def _select_variable(sizes: Mapping[str, int], variable: str | None, size: int) -> str:
    """Name of the site holding the field: `variable`, or the only site with `size` values."""
    if variable is not None:
        if variable not in sizes:
            raise UsageError(
                f"variable: expected one of the sample sites {sorted(sizes)}, got {variable!r}"
            )
        return variable
    matching = [name for name, count in sizes.items() if count == size]
    if len(matching) != 1:
        raise UsageError(
            f"variable: expected the name of the field's sample site; {len(matching)} sites "
            f"hold {size} values per draw ({matching}) among {sorted(sizes)}"
        )
    return matching[0]


def _samples_array(samples: Any, variable: str | None, size: int) -> np.ndarray:
    """(chain, draw, size) float32 from a dict of draws, an InferenceData or an array."""
    if isinstance(samples, az.InferenceData):
        sites: dict[str, xr.DataArray] = {}
        for group in reversed(SAMPLE_GROUPS):  # earlier groups win
            if group in samples.groups():
                sites.update({name: samples[group][name] for name in samples[group].data_vars})
        if not sites:
            raise UsageError(
                f"samples: expected an InferenceData with one of the groups {SAMPLE_GROUPS}, "
                f"got groups {samples.groups()}"
            )
        sizes = {name: math.prod(site.shape[2:]) for name, site in sites.items()}
        name = _select_variable(sizes, variable, size)
        values = np.asarray(sites[name].values, dtype=np.float64)
        if values.ndim < 2 or sizes[name] != size:
            raise UsageError(
                f"samples: expected {name!r} with dims (chain, draw, ...) holding {size} values "
                f"per draw, got shape {values.shape}"
            )
        if not np.isfinite(values).all():
            raise UsageError("samples: expected finite draws, got NaN or infinite entries")
        return values.reshape(values.shape[0], values.shape[1], size).astype(SAMPLE_DTYPE)
    if isinstance(samples, Mapping):
        sizes = {
            name: math.prod(tuple(getattr(values, "shape", ()))[1:])
            if getattr(values, "ndim", 0)
            else 0
            for name, values in samples.items()
        }
        samples = samples[_select_variable(sizes, variable, size)]
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    try:
        values = np.asarray(samples, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise UsageError(f"samples: expected numeric draws, got {describe(samples)}") from error
    if values.ndim < 2 or math.prod(values.shape[1:]) != size:
        raise UsageError(
            f"samples: expected draws of shape (n_draws, ...) with {size} values per draw "
            f"(function, t, x), got shape {values.shape}"
        )
    if not np.isfinite(values).all():
        raise UsageError("samples: expected finite draws, got NaN or infinite entries")
    return values.reshape(1, values.shape[0], size).astype(SAMPLE_DTYPE)


def _per_function(value: Any, name: str, shape: tuple[int, ...], n_functions: int) -> np.ndarray:
    """Broadcast a per-function quantity given for one function to (n_functions, *shape)."""
    tensor = as_float64_tensor(value, name)
    if tuple(tensor.shape) == shape:  # one value shared by every function
        tensor = tensor.expand(n_functions, *shape)
    if tuple(tensor.shape) != (n_functions, *shape):
        raise UsageError(
            f"{name}: expected shape {(n_functions, *shape)}"
            + f" or {shape}"
            + f", got {tuple(tensor.shape)}"
        )
    return tensor.numpy()


def to_inference_data(
    samples: Any,
    truth: Any,
    grid: Grid,
    *,
    variable: str | None = None,
    method: str = "model",
    problem: str = "custom",
    backbone: str = "pyro",
    parameter: Any = None,
    parameter_name: str = "parameter",
    mass: Any = None,
    mean: Any = None,
    variance: Any = None,
    sigma_G: float = float("nan"),
    time_of_interest: float | None = None,
    front_threshold: float | None = None,
) -> az.InferenceData:
    """A user's samples of a field on `grid` plus the truth, in the run-directory schema.

    samples: a dict of draws {site: (n_draws, ...)} (pyro.infer.Predictive, our constrained
        Predictive), an InferenceData (`az.from_pyro`: (chain, draw, ...) in posterior_predictive,
        predictions or posterior), or an array (n_draws, ...). Each draw holds
        n_functions * n_t * n_x values, t-major (index (f * n_t + j) * n_x + i).
    truth: (n_t, n_x) for one function or (n_functions, n_t, n_x).
    variable: the site holding the field; needed only when several sites have that size.
    parameter (n_functions,) or scalar, mass (n_functions, n_t) or (n_t,) = U(t),
    mean/variance (n_functions, n_t, n_x) or (n_t, n_x): optional constant_data.
    front_threshold: for a field with a front, the level u_c at which a profile counts as having
        crossed it; the report then shows posterior front positions at `time_of_interest`.
    Returns InferenceData with posterior_predictive.u (chain, draw, function, t, x) float32.
    """
    if not isinstance(grid, Grid):
        raise UsageError(f"grid: expected a probcons.grid.Grid, got {describe(grid)}")
    for name, text in (("method", method), ("problem", problem), ("backbone", backbone)):
        if not isinstance(text, str) or not text or "/" in text:
            raise UsageError(f"{name}: expected a non-empty name without '/', got {text!r}")
    truth_tensor = as_float64_tensor(truth, "truth")
    if tuple(truth_tensor.shape) == grid.shape:
        truth_tensor = truth_tensor[None]
    if truth_tensor.dim() != 3 or tuple(truth_tensor.shape[1:]) != grid.shape:
        raise UsageError(
            f"truth: expected shape {grid.shape} or (n_functions, {grid.n_t}, {grid.n_x}), "
            f"got {tuple(truth_tensor.shape)}"
        )
    n_functions = truth_tensor.shape[0]
    draws = _samples_array(samples, variable, n_functions * grid.size)
    draws = draws.reshape(*draws.shape[:2], n_functions, *grid.shape)
    if time_of_interest is None:
        time_of_interest = float(grid.t[grid.n_t // 2])
    attrs = {
        "problem": problem,
        "backbone": backbone,
        "method": method,
        "sigma_G": float(sigma_G),
        "parameter_name": parameter_name,
        "time_of_interest": float(time_of_interest),
    }
    if front_threshold is not None:
        attrs["front_threshold"] = float(front_threshold)
    coords = {
        "chain": np.arange(draws.shape[0]),
        "draw": np.arange(draws.shape[1]),
        "function": np.arange(n_functions),
        "t": grid.t.numpy(),
        "x": grid.x.numpy(),
    }
    field_coords = {name: coords[name] for name in FIELD_DIMS}
    groups = {
        "posterior_predictive": xr.Dataset(
            {FIELD: (SAMPLE_DIMS + FIELD_DIMS, draws)}, coords=coords, attrs=attrs
        ),
        "observed_data": xr.Dataset(
            {FIELD: (FIELD_DIMS, truth_tensor.numpy())}, coords=field_coords, attrs=attrs
        ),
    }
    constant = {}
    if parameter is not None:
        values = as_float64_tensor(parameter, "parameter").reshape(-1)
        if values.numel() == 1:
            values = values.expand(n_functions)
        if values.numel() != n_functions:
            raise UsageError(
                f"parameter: expected a scalar or {n_functions} values, got {values.numel()}"
            )
        constant["parameter"] = (("function",), values.numpy().copy())
    if mass is not None:
        constant["mass"] = (
            ("function", "t"),
            _per_function(mass, "mass", (grid.n_t,), n_functions),
        )
    if (mean is None) != (variance is None):
        raise UsageError("mean, variance: expected both or neither, got only one")
    if mean is not None:
        constant["u_mean"] = (FIELD_DIMS, _per_function(mean, "mean", grid.shape, n_functions))
        moments_variance = _per_function(variance, "variance", grid.shape, n_functions)
        if (moments_variance < 0).any():
            raise UsageError("variance: expected values >= 0, got negative entries")
        constant["u_variance"] = (FIELD_DIMS, moments_variance)
    if constant:
        groups["constant_data"] = xr.Dataset(constant, coords=field_coords, attrs=attrs)
    return az.InferenceData(**groups)


def write_inference_data(idata: az.InferenceData, run_dir: str | os.PathLike) -> Path:
    """Write `idata` atomically as `run_dir/<method>.nc` (method from its attrs); return the path."""
    if not isinstance(idata, az.InferenceData) or "posterior_predictive" not in idata.groups():
        raise UsageError(
            f"idata: expected InferenceData with a posterior_predictive group, got {describe(idata)}"
        )
    method = idata.posterior_predictive.attrs.get("method")
    if not isinstance(method, str) or not method or "/" in method:
        raise UsageError(f"idata: expected a 'method' attribute naming the file, got {method!r}")
    target = Path(run_dir) / f"{method}.nc"
    with atomic_write(target) as temporary:
        idata.to_netcdf(str(temporary), engine="h5netcdf")
    return target
