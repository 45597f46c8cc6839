"""One pass over a method's functions: per-function metrics, calibration and figure data.

Only one function's draws (n_draws, n_t, n_x) are in memory at a time. Per function f:
    MSE_f = mean_{t,x} (m - u)^2 (m the predictive mean: exact moments if stored, else the
    sample mean), MSE_f(t*) at the time of interest, CE_f = mean_t |sum_i w_i m[j, i] - U(t_j)|,
    LL_f = mean_{t,x} log N(u; m, v), CRPS_f = mean_{t,x} CRPS(draws, u) (scoringrules),
    coverage_f(L) of the sample central interval, width_f = mean 90 % interval width,
    boundary residual = mean_{t, rows} |B (m - u)| for the boundary operator B named by
    attrs['boundary_condition'], else mean |G_b m - b_b| over the stored boundary rows G_b
    (dirichlet_*, neumann_*, periodic) the posterior was conditioned on. No CE for a 2-D field
    stored flat (`is_flat_2d`): a sum over its positions is no conservation law.
Reported values are means over functions with standard errors (`mean_and_standard_error`);
with one function the standard error is NaN (shown as n/a), not 0.
Calibration by region: PIT coverage pooled over the points of a region, the regions being the
deciles of the method's own predictive variance over all points of all functions and, for a
field with a front, the band |x - front(t)| <= FRONT_BAND_CELLS dx around the true front at
each time ("near front") and the rest ("far from front").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from probcons.constraints import (
    conservation_constraint,
    dirichlet_constraint,
    neumann_constraint,
    periodic_constraint,
)
from probcons.errors import UsageError
from probcons.metrics import (
    central_interval_coverage,
    conservation_error,
    crps_ensemble,
    front_positions,
    gaussian_log_likelihood,
    mean_and_standard_error,
    sample_quantiles,
    sorted_draws,
)
from probcons.problems import PROBLEMS, Problem
from probcons.report.calibration import (
    RELIABILITY_LEVELS,
    binomial_standard_error,
    calibration_flag,
    coverage_from_pit,
    interval_width,
    pit_uniformity,
    randomized_pit,
)
from probcons.report.data import MethodData, is_flat_2d
from probcons.validation import check_positive_int

PIT_BINS = 20
PIT_VALUES = 1000  # PIT values (spread over functions and points) for the ECDF band
BAND_LEVEL = 0.9  # the interval shown in bands, widths and the calibration flag
BAND_QUANTILES = ((1 - BAND_LEVEL) / 2, (1 + BAND_LEVEL) / 2)
TABLE_COVERAGE_LEVELS = (0.5, 0.9)
BOUNDARY_CONDITIONS = ("dirichlet", "neumann", "periodic")
NEUMANN_ORDER = 2
SHOCK_PROBLEMS = ("stefan", "pme")
SAME_POSITION_RTOL = 1e-9  # true fronts closer than this (relative) count as one position
VARIANCE_DECILES = 10
FRONT_BAND_CELLS = 3  # "near front": |x - front(t)| <= FRONT_BAND_CELLS grid steps
BOUNDARY_ROW_PREFIXES = ("dirichlet_", "neumann_", "periodic")
FLAT_2D_NOTE = (
    "CE not computed: x holds a 2-D field's positions (channels x n x n, flattened), whose sum "
    "is no conservation law; the 2-D physics table has the run's own physics residuals"
)


def is_boundary_row(name: str) -> bool:
    """True for a stored constraint row of a boundary condition: dirichlet_*, neumann_*,
    periodic (a flattened row "name[j]" counts as its name)."""
    return str(name).split("[", 1)[0].startswith(BOUNDARY_ROW_PREFIXES)


@dataclass(frozen=True)
class RegionCoverage:
    """PIT coverage of the central intervals RELIABILITY_LEVELS over the points of one region.

    kind: "all", "variance" (a decile of the predictive variance; `variance_range` its
    smallest and largest variance) or "front" (near / far from the true front).
    """

    name: str
    kind: str
    n_points: int
    coverage: np.ndarray  # (n_levels,)
    variance_range: tuple[float, float] | None = None

    def at(self, level: float) -> float:
        """Coverage of the central interval of `level` (one of RELIABILITY_LEVELS)."""
        return float(self.coverage[int(np.argmin(np.abs(np.asarray(RELIABILITY_LEVELS) - level)))])


@dataclass
class Example:
    """Figure data for one function: mass band and profiles with bands at three times."""

    function: int
    parameter: float | None
    mass_truth: np.ndarray  # (n_t,)
    mass_truth_label: str
    mass_mean: np.ndarray  # (n_t,)
    mass_lower: np.ndarray
    mass_upper: np.ndarray
    time_indices: tuple[int, ...]
    profile_truth: np.ndarray  # (3, n_x)
    profile_mean: np.ndarray
    profile_lower: np.ndarray
    profile_upper: np.ndarray


@dataclass
class ShockPositions:
    """Posterior front positions at the time of interest, (n_functions, n_draws), and truth."""

    time: float
    positions: np.ndarray
    truth: np.ndarray  # (n_functions,)

    @property
    def common_truth(self) -> bool:
        """True when every function has the same true front (positions comparable as is)."""
        scale = max(1.0, float(np.abs(self.truth).max()))
        return bool(np.ptp(self.truth) <= SAME_POSITION_RTOL * scale)

    def pooled(self) -> tuple[np.ndarray, float]:
        """(values, reference): positions and the true front, or errors and 0 if truths differ."""
        if self.common_truth:
            return self.positions.reshape(-1), float(self.truth[0])
        return (self.positions - self.truth[:, None]).reshape(-1), 0.0


@dataclass
class MethodSummary:
    """Everything the report shows about one method of one run."""

    run: str
    method: str
    label: str
    attrs: dict
    t: np.ndarray
    x: np.ndarray
    n_functions: int
    n_draws: int
    moments: str  # "exact" or "samples"
    per_function: dict[str, np.ndarray]  # metric -> (n_functions,)
    mse_time: np.ndarray  # (n_functions, n_t)
    crps_time: np.ndarray
    pit_histogram: np.ndarray  # (PIT_BINS,) counts over all points
    pit_sample: np.ndarray  # (<= PIT_VALUES,) for the ECDF band
    reliability: np.ndarray  # (n_functions, n_levels) PIT coverage per function
    example: Example
    shock: ShockPositions | None
    notes: list[str] = field(default_factory=list)
    regions: list[RegionCoverage] = field(default_factory=list)
    parameters: list[float] | None = None  # per function, when stored

    @property
    def n_points(self) -> int:
        return self.n_functions * self.t.size * self.x.size

    def metric(self, name: str) -> tuple[float, float] | None:
        """(mean, standard error) over functions, or None if not computed for this run; the
        standard error is NaN for a single function (none can be estimated)."""
        values = self.per_function.get(name)
        if values is None:
            return None
        mean, error = mean_and_standard_error(torch.as_tensor(values, dtype=torch.float64))
        return float(mean), float(error) if np.size(values) > 1 else float("nan")

    def reliability_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(levels, coverage, standard error): SE the larger of over-functions and binomial."""
        levels = np.asarray(RELIABILITY_LEVELS)
        coverage = self.reliability.mean(axis=0)
        errors = np.empty_like(coverage)
        for k, level in enumerate(RELIABILITY_LEVELS):
            _, over_functions = mean_and_standard_error(torch.as_tensor(self.reliability[:, k]))
            binomial = binomial_standard_error(level, self.n_points)
            errors[k] = np.nanmax([float(over_functions), binomial])
        return levels, coverage, errors

    def calibration(self) -> str:
        """Flag from the 90 % PIT coverage: 'calibrated', 'over-confident', 'under-confident'."""
        levels, coverage, errors = self.reliability_curve()
        k = int(np.argmin(np.abs(levels - BAND_LEVEL)))
        return calibration_flag(float(coverage[k]), BAND_LEVEL, float(errors[k]))

    def pit_uniformity(self):
        return pit_uniformity(self.pit_sample)


def _problem(name: str) -> Problem | None:
    """The library's Problem called `name`, or None (a user's own model)."""
    return PROBLEMS.get(name)


def _profile_times(n_t: int, time_index: int) -> tuple[int, ...]:
    """Three distinct time indices: a quarter of the way, the time of interest, the last."""
    chosen = sorted({(n_t - 1) // 4, time_index, n_t - 1})
    for candidate in np.linspace(0, n_t - 1, 3).round().astype(int):
        if len(chosen) >= min(3, n_t):
            break
        if int(candidate) not in chosen:
            chosen = sorted({*chosen, int(candidate)})
    return tuple(chosen)


def _boundary_operator(attrs: dict, grid):
    """The run's boundary operator B (a LinearConstraint) from attrs['boundary_condition']."""
    text = str(attrs.get("boundary_condition", "")).strip().lower()
    if not text:
        return None, None
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in BOUNDARY_CONDITIONS]
    if unknown:
        return None, f"unknown boundary_condition {unknown} (known: {BOUNDARY_CONDITIONS})"
    parts = []
    for kind in kinds:
        if kind == "dirichlet":
            parts.append(dirichlet_constraint(grid, left=0.0, right=0.0))
        elif kind == "neumann":
            parts.append(neumann_constraint(grid, left=0.0, right=0.0, order=NEUMANN_ORDER))
        else:
            parts.append(periodic_constraint(grid))
    return parts[0].stack(*parts[1:]), None


def _front_band_times(problem, grid, parameters, shock_setup):
    """Per function, the true front position (n_t,) at each time from the Problem, or None
    (then found from the truth at each time); None when the field has no front."""
    if shock_setup is None:
        return None
    if problem is None or parameters is None:
        return [None] * len(shock_setup)
    cache: dict[float, np.ndarray] = {}
    fronts = []
    for p in parameters:
        if p not in cache:
            positions = [problem.front_position(float(t), p) for t in grid.t]
            cache[p] = np.array([np.nan if x is None else float(x) for x in positions])
        fronts.append(cache[p])
    return fronts


def _shock_setup(problem, grid, attrs: dict, parameters, n_functions: int, time_index, notes):
    """Per-function (true position, threshold) at the time of interest, or None."""
    time = float(grid.t[time_index])
    name = str(attrs.get("problem", ""))
    fallback = attrs.get("front_threshold")
    if problem is not None and parameters is not None:
        setup = []
        for p in parameters:
            position, threshold = problem.front_position(time, p), problem.front_threshold(p)
            if position is None or threshold is None:
                return None
            setup.append((float(position), float(threshold)))
        return setup
    if fallback is not None:
        return [(None, float(fallback))] * n_functions
    if name in SHOCK_PROBLEMS:
        notes.append("shock positions skipped: constant_data.parameter is not available")
    return None


class MethodSummarizer:
    """Builds a `MethodSummary` from one function at a time, functions in order 0, 1, ...

    `summarize_method` feeds it a file; `probcons run` feeds it the draws it holds in memory
    (rounded to the file's float32), so the report needs neither to read the files back nor
    to sort the draws again. Arguments describe the method file: its grid and attributes, the
    number of functions and draws, the per-function parameters (None if not stored), and
    whether a CE can be computed (constraint rows or mass stored), and the names of the stored
    constraint rows (`constraint_rows`, the order of the residual's last axis), whose boundary
    rows give the boundary residual; `bounds` (lower, upper) of the run's bound sites (the
    fraction of draw points outside them is reported), and whether per-function nonlinear-site
    residuals come with each function (`site_residuals`).
    """

    def __init__(
        self,
        run: str,
        method: str,
        label: str | None,
        *,
        grid,
        attrs: dict,
        n_functions: int,
        n_draws: int,
        parameters: list[float] | None,
        has_ce: bool,
        constraint_rows: tuple[str, ...] | None = None,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        site_residuals: bool = False,
        example_function: int = 0,
        pit_values: int = PIT_VALUES,
        seed: int = 0,
    ) -> None:
        check_positive_int(pit_values, "pit_values")
        if isinstance(example_function, bool) or not isinstance(example_function, int):
            raise UsageError(f"example_function: expected an integer, got {example_function!r}")
        self.run, self.method, self.label = run, method, label or method
        self.grid, self.attrs, self.n_functions, self.n_draws = grid, attrs, n_functions, n_draws
        self.parameters = parameters
        self.notes: list[str] = []
        self.generator = torch.Generator().manual_seed(seed)
        time_of_interest = float(attrs.get("time_of_interest", grid.t[grid.n_t // 2]))
        self.time_index = grid.time_index(time_of_interest)
        self.weights = grid.trapezoid_weights()
        self.boundary, boundary_note = _boundary_operator(attrs, grid)
        if boundary_note:
            self.notes.append(boundary_note)
        problem = _problem(str(attrs.get("problem", "")))
        self.shock_setup = _shock_setup(
            problem, grid, attrs, parameters, n_functions, self.time_index, self.notes
        )
        self.fronts = _front_band_times(problem, grid, parameters, self.shock_setup)
        self.boundary_rows = None
        if self.boundary is None and constraint_rows is not None:
            rows = [k for k, name in enumerate(constraint_rows) if is_boundary_row(name)]
            self.boundary_rows = torch.tensor(rows, dtype=torch.long) if rows else None
        self.example_function = min(max(example_function, 0), n_functions - 1)
        self.profile_times = _profile_times(grid.n_t, self.time_index)
        self.per_point_pit = max(1, math.ceil(pit_values / n_functions))
        names = ["mse", "mse_t", "ll", "crps", "coverage_50", "coverage_90", "width_90"]
        if is_flat_2d(attrs):
            self.notes.append(FLAT_2D_NOTE)
        elif has_ce:
            names.append("ce")
        else:
            self.notes.append("CE not computed: constant_data has neither constraint rows nor mass")
        if self.boundary is not None or self.boundary_rows is not None:
            names.append("boundary_residual")
        self.bounds = bounds
        if bounds is not None:
            names.append("bound_violations")
        if site_residuals:
            names.append("site_residual")
        self.per_function = {name: np.empty(n_functions) for name in names}
        # Per point, for the regions: the index of the smallest RELIABILITY_LEVELS interval
        # that covers it (len(levels) if none), the predictive variance, near the front or not.
        self.halves = np.asarray(RELIABILITY_LEVELS, dtype=np.float64) / 2
        self.level_index = np.empty((n_functions, grid.size), dtype=np.uint8)
        self.variance = np.empty((n_functions, grid.size), dtype=np.float32)
        self.near_front = (
            None if self.fronts is None else np.empty((n_functions, grid.size), dtype=bool)
        )
        self.mse_time = np.empty((n_functions, grid.n_t))
        self.crps_time = np.empty((n_functions, grid.n_t))
        self.reliability = np.empty((n_functions, len(RELIABILITY_LEVELS)))
        self.histogram = np.zeros(PIT_BINS)
        self.pit_sample: list[np.ndarray] = []
        self.shock_positions: list[np.ndarray] = []
        self.shock_truth: list[float] = []
        self.example: Example | None = None
        self.exact_moments = True
        self.added = 0

    def add(
        self,
        draws: torch.Tensor,
        truth: torch.Tensor,
        moments: tuple[torch.Tensor, torch.Tensor] | None = None,
        mass: torch.Tensor | None = None,
        residual: torch.Tensor | None = None,
        ordered: torch.Tensor | None = None,
        site_residual: float | None = None,
    ) -> None:
        """The next function: draws (n_draws, n_t, n_x) float64 as stored, truth (n_t, n_x),
        exact moments (mean, variance) or None, mass (n_t,) or None, the constraint residual
        G m - b of the mean or None; ordered: `draws` sorted along the draws, if at hand;
        site_residual: max |h(u) - b| of the nonlinear sites over the draws, if any."""
        f = self.added
        grid, per_function = self.grid, self.per_function
        time_index = self.time_index
        if ordered is None:
            ordered = sorted_draws(draws)
        if moments is None:
            mean, variance = draws.mean(dim=0), draws.var(dim=0)
            self.exact_moments = False
        else:
            mean, variance = moments
            self.exact_moments = True
        squared_error = (mean - truth) ** 2
        self.mse_time[f] = squared_error.mean(dim=-1).numpy()
        per_function["mse"][f] = float(squared_error.mean())
        per_function["mse_t"][f] = self.mse_time[f, time_index]
        per_function["ll"][f] = float(gaussian_log_likelihood(mean, variance, truth).mean())
        crps = torch.as_tensor(crps_ensemble(ordered, truth, presorted=True))
        self.crps_time[f] = crps.mean(dim=-1).numpy()
        per_function["crps"][f] = float(crps.mean())
        for level in TABLE_COVERAGE_LEVELS:
            covered = central_interval_coverage(ordered, truth, level, presorted=True)
            per_function[f"coverage_{round(100 * level)}"][f] = float(covered.double().mean())
        per_function["width_90"][f] = float(
            interval_width(ordered, BAND_LEVEL, presorted=True).mean()
        )
        if "ce" in per_function:
            if residual is not None:  # the rows the run conditioned on
                per_function["ce"][f] = float(residual.abs().mean())
            elif mass is not None:
                constraint = conservation_constraint(grid, mass)
                per_function["ce"][f] = conservation_error(mean, constraint)
        if self.boundary is not None:
            per_function["boundary_residual"][f] = float(
                self.boundary.apply(mean - truth).abs().mean()
            )
        elif self.boundary_rows is not None:
            per_function["boundary_residual"][f] = (
                float("nan")
                if residual is None
                else float(residual[..., self.boundary_rows].abs().mean())
            )

        if self.bounds is not None:
            lower, upper = self.bounds
            outside = (draws < lower) | (draws > upper)
            per_function["bound_violations"][f] = float(outside.double().mean())
        if "site_residual" in per_function:
            per_function["site_residual"][f] = (
                float("nan") if site_residual is None else site_residual
            )

        # Ties between draws and truth are judged at the draws' storage precision (float32).
        rounded_truth = truth.to(torch.float32).to(torch.float64)
        pit = randomized_pit(draws, rounded_truth, self.generator)
        self.reliability[f] = coverage_from_pit(pit).numpy()
        self.histogram += np.histogram(pit.numpy(), bins=PIT_BINS, range=(0.0, 1.0))[0]
        chosen = torch.randperm(grid.size, generator=self.generator)
        chosen = chosen[: min(self.per_point_pit, grid.size)]
        self.pit_sample.append(pit.reshape(-1)[chosen].numpy())
        deviation = (pit.reshape(-1) - 0.5).abs().numpy()
        self.level_index[f] = np.searchsorted(self.halves, deviation, side="left")
        self.variance[f] = variance.reshape(-1).numpy()
        if self.near_front is not None:
            self.near_front[f] = self._near_front(f, truth).reshape(-1)

        if self.shock_setup is not None:
            true_position, threshold = self.shock_setup[f]
            profiles = draws[:, time_index, :]
            if true_position is None:
                true_position = float(
                    front_positions(truth[time_index][None], grid.x, threshold)[0]
                )
            positions = front_positions(profiles, grid.x, threshold)
            self.shock_positions.append(torch.as_tensor(positions, dtype=torch.float64).numpy())
            self.shock_truth.append(true_position)

        if f == self.example_function:
            self.example = self._example(f, draws, ordered, truth, mean, mass)
        self.added += 1

    def _near_front(self, f: int, truth: torch.Tensor) -> np.ndarray:
        """(n_t, n_x) True where |x - front(t)| <= FRONT_BAND_CELLS dx, front the true one."""
        front = self.fronts[f]
        if front is None:  # no Problem: the truth's own front at each time
            threshold = self.shock_setup[f][1]
            front = front_positions(truth, self.grid.x, threshold).numpy()
        x = self.grid.x.numpy()
        step = float(np.min(np.diff(x))) if x.size > 1 else 0.0
        with np.errstate(invalid="ignore"):
            return np.abs(x[None, :] - front[:, None]) <= FRONT_BAND_CELLS * step

    def _regions(self) -> list[RegionCoverage]:
        """Coverage over all points, per variance decile and near / far from the front."""
        n_levels = len(RELIABILITY_LEVELS)
        index = self.level_index.reshape(-1)

        def region(name, kind, mask=None, variance_range=None) -> RegionCoverage | None:
            chosen = index if mask is None else index[mask]
            if chosen.size == 0:
                return None
            counts = np.bincount(chosen, minlength=n_levels + 1)
            coverage = np.cumsum(counts)[:n_levels] / chosen.size
            return RegionCoverage(name, kind, int(chosen.size), coverage, variance_range)

        regions = [region("all points", "all")]
        variance = self.variance.reshape(-1)
        order = np.argsort(variance, kind="stable")
        decile = np.empty(variance.size, dtype=np.int64)
        decile[order] = np.arange(variance.size) * VARIANCE_DECILES // variance.size
        for k in range(VARIANCE_DECILES):
            mask = decile == k
            if mask.any():
                span = (float(variance[mask].min()), float(variance[mask].max()))
                regions.append(region(f"variance decile {k + 1}", "variance", mask, span))
        if self.near_front is not None:
            near = self.near_front.reshape(-1)
            regions.append(region("near front", "front", near))
            regions.append(region("far from front", "front", ~near))
        return [r for r in regions if r is not None]

    def _example(self, f, draws, ordered, truth, mean, mass) -> Example:
        weights, profile_times = self.weights, list(self.profile_times)
        draw_mass = draws @ weights  # (n_draws, n_t)
        if mass is not None:
            mass_truth, mass_label = mass.numpy(), "U(t) (exact)"
        else:
            mass_truth, mass_label = (truth @ weights).numpy(), "trapezoid of the truth"
        quantiles = torch.tensor(BAND_QUANTILES, dtype=torch.float64)
        mass_band = torch.quantile(draw_mass, quantiles, dim=0)
        profile_band = sample_quantiles(ordered[:, profile_times, :], quantiles)
        return Example(
            function=f,
            parameter=None if self.parameters is None else self.parameters[f],
            mass_truth=mass_truth,
            mass_truth_label=mass_label,
            mass_mean=(mean @ weights).numpy(),
            mass_lower=mass_band[0].numpy(),
            mass_upper=mass_band[1].numpy(),
            time_indices=self.profile_times,
            profile_truth=truth[profile_times].numpy(),
            profile_mean=mean[profile_times].numpy(),
            profile_lower=profile_band[0].numpy(),
            profile_upper=profile_band[1].numpy(),
        )

    def summary(self) -> MethodSummary:
        """The MethodSummary once every function was added."""
        if self.added != self.n_functions:
            raise UsageError(
                f"functions: expected {self.n_functions} functions added, got {self.added}"
            )
        notes = list(self.notes)
        shock = None
        if self.shock_setup is not None:
            shock = ShockPositions(
                float(self.grid.t[self.time_index]),
                np.stack(self.shock_positions),
                np.asarray(self.shock_truth),
            )
        if not self.exact_moments:
            notes.append("LL and MSE use the sample mean and variance (no exact moments stored)")
        return MethodSummary(
            run=self.run,
            method=self.method,
            label=self.label,
            attrs=self.attrs,
            t=self.grid.t.numpy(),
            x=self.grid.x.numpy(),
            n_functions=self.n_functions,
            n_draws=self.n_draws,
            moments="exact" if self.exact_moments else "samples",
            per_function=self.per_function,
            mse_time=self.mse_time,
            crps_time=self.crps_time,
            pit_histogram=self.histogram,
            pit_sample=np.concatenate(self.pit_sample),
            reliability=self.reliability,
            example=self.example,
            shock=shock,
            notes=notes,
            regions=self._regions(),
            parameters=self.parameters,
        )


def summarize_method(
    data: MethodData,
    run: str,
    label: str | None = None,
    *,
    example_function: int = 0,
    pit_values: int = PIT_VALUES,
    seed: int = 0,
) -> MethodSummary:
    """Stream over the functions of one method file and collect what the report shows."""
    parameters = (
        [data.parameter(f) for f in range(data.n_functions)] if data.has_parameter else None
    )
    summarizer = MethodSummarizer(
        run,
        data.method,
        label,
        grid=data.grid,
        attrs=data.attrs,
        n_functions=data.n_functions,
        n_draws=data.n_draws,
        parameters=parameters,
        has_ce=data.has_constraint or data.has_mass,
        constraint_rows=data.constraint_rows,
        bounds=data.bounds(),
        site_residuals=data.has_site_residual,
        example_function=example_function,
        pit_values=pit_values,
        seed=seed,
    )
    for f in range(data.n_functions):
        draws = data.draws(f)
        mean = None if not data.has_moments else data.moments(f)
        residual = None if mean is None else data.constraint_residual(f, mean[0])
        if mean is None and data.has_constraint:
            residual = data.constraint_residual(f, draws.mean(dim=0))
        summarizer.add(
            draws, data.truth(f), mean, data.mass(f), residual, site_residual=data.site_residual(f)
        )
        del draws
    return summarizer.summary()
