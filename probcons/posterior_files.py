"""Writing a method's posterior over many functions as ArviZ InferenceData (netCDF, h5netcdf).

Schema: posterior_predictive.u (chain, draw, function, t, x) float32 (or float64 on request); observed_data.u
(function, t, x) the exact solution; constant_data.parameter (function), .mass (function, t),
.u_mean and .u_variance (function, t, x) the exact predictive moments; the constraint rows
the posterior was conditioned on, .constraint_weights (function, constraint_slice,
constraint_row, constraint_point), .constraint_values and .constraint_noise_std (function,
constraint_slice, constraint_row), with the rows' names as the constraint_row coordinate
(slice and point are t and x, or 1 and t-major grid points when attrs constraint_flat = 1);
with bound sites .bound_lower and .bound_upper (t, x) (-inf / +inf where open); with nonlinear
sites .site_residual (function, nonlinear_site), max over draws and rows of |h(u) - b|;
root attributes problem, backbone, method, sigma_G, parameter_name, time_of_interest.
Numeric variables are zlib-compressed except the draws (`UNCOMPRESSED`).
"""

from __future__ import annotations

import os
from typing import Any

import arviz as az
import numpy as np

from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.io import atomic_write


def posterior_inference_data(
    samples: np.ndarray,
    truth: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    parameter: np.ndarray,
    mass: np.ndarray,
    grid: Grid,
    attrs: dict[str, Any],
    constraint: dict[str, np.ndarray] | None = None,
    sample_dtype: type = np.float32,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    site_residual: tuple[np.ndarray, tuple[str, ...]] | None = None,
) -> az.InferenceData:
    """samples (F, D, n_t, n_x); truth, mean, variance (F, n_t, n_x); parameter (F,); mass (F, n_t);
    constraint: {weights (F, S, R, P), values, noise_std (F, S, R), names (R,)} or None;
    bounds: (lower, upper), each (n_t, n_x), or None; site_residual: (values (F, K), the K
    nonlinear sites' names) or None;
    sample_dtype: how the draws are stored (float32 by default, for size; float64 keeps exact
    constraints exact in the file)."""
    n_functions = samples.shape[0]
    coords = {
        "function": np.arange(n_functions),
        "t": grid.t.numpy(),
        "x": grid.x.numpy(),
    }
    field = ["function", "t", "x"]
    constant = {"parameter": parameter, "mass": mass, "u_mean": mean, "u_variance": variance}
    dims = {
        "u": field,
        "parameter": ["function"],
        "mass": ["function", "t"],
        "u_mean": field,
        "u_variance": field,
    }
    if constraint is not None:
        rows = ["function", "constraint_slice", "constraint_row"]
        for name in ("weights", "values", "noise_std"):
            constant[f"constraint_{name}"] = constraint[name]
            dims[f"constraint_{name}"] = rows + ["constraint_point"] if name == "weights" else rows
        coords["constraint_row"] = constraint["names"]
    if bounds is not None:
        for name, values in zip(("bound_lower", "bound_upper"), bounds, strict=True):
            constant[name] = values
            dims[name] = ["t", "x"]
    if site_residual is not None:
        constant["site_residual"] = site_residual[0]
        dims["site_residual"] = ["function", "nonlinear_site"]
        coords["nonlinear_site"] = np.array(site_residual[1])
    data = az.from_dict(
        posterior_predictive={"u": np.moveaxis(samples, 1, 0)[None].astype(sample_dtype)},
        observed_data={"u": truth},
        constant_data=constant,
        coords=coords,
        dims=dims,
    )
    kept = {key: value for key, value in attrs.items() if value is not None}
    for group in data.groups():
        data[group].attrs.update(kept)
    return data


UNCOMPRESSED = (("posterior_predictive", "u"),)
"""(group, variable) stored without zlib: the float32 draws have random low mantissa bits and
compress by about 8 %, at several seconds per run; every other numeric variable is zlib'd."""


def netcdf_encoding(group: str, dataset) -> dict[str, dict]:
    """xarray encoding of one InferenceData group: zlib on numeric variables but UNCOMPRESSED."""
    return {
        name: {"zlib": (group, name) not in UNCOMPRESSED}
        for name, values in dataset.variables.items()
        if np.issubdtype(values.dtype, np.number)
    }


def write_groups(path: str | os.PathLike, data: az.InferenceData, unlimited: str | None = None):
    """ArviZ's netCDF layout (a group per InferenceData group, h5netcdf), encoded by
    `netcdf_encoding`; `unlimited`: a dimension left growable in the groups that have it."""
    mode = "w"
    for group in data.groups():
        dataset = data[group]
        dataset.to_netcdf(
            path,
            mode=mode,
            group=group,
            engine="h5netcdf",
            encoding=netcdf_encoding(group, dataset),
            unlimited_dims=[unlimited] if unlimited in dataset.dims else None,
        )
        mode = "a"


def write_inference_data(path: str | os.PathLike, data: az.InferenceData) -> None:
    """Write InferenceData to netCDF atomically (`write_groups`)."""
    with atomic_write(path) as temporary:
        write_groups(str(temporary), data)


def constraint_arrays(constraints: list) -> dict[str, np.ndarray]:
    """The rows of each function's constraint as arrays for the run files: weights
    (F, slice, row, point), values and noise_std (F, slice, row), names (row,)."""
    first = constraints[0]
    for index, constraint in enumerate(constraints):
        if constraint.weights.shape != first.weights.shape or constraint.names != first.names:
            raise UsageError(
                f"model: function {index} has constraint rows {constraint!r}, function 0 has "
                f"{first!r}; a run needs the same rows for every function"
            )
    return {
        "weights": np.stack([c.weights.numpy() for c in constraints]),
        "values": np.stack([c.values.numpy() for c in constraints]),
        "noise_std": np.stack([c.noise_std.numpy() for c in constraints]),
        "names": np.array(first.names),
    }
