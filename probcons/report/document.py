"""`write_report`: one or several run directories -> report.md, report.html and PNG figures."""

from __future__ import annotations

import errno
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from probcons.errors import OutputError, UsageError
from probcons.report.calibration import FLAG_STANDARD_ERRORS
from probcons.report.data import MethodData, is_flat_2d, method_files, method_sort_key
from probcons.report.figures import (
    error_time_figure,
    mass_figure,
    pit_figure,
    profiles_figure,
    region_figure,
    reliability_figure,
    shock_figure,
    shock_statistics,
)
from probcons.report.physics2d import Physics2dScores, read_physics2d
from probcons.report.render import Block, Bullets, Heading, Image, Paragraph, Table, write_documents
from probcons.report.summary import (
    BAND_LEVEL,
    FRONT_BAND_CELLS,
    PIT_VALUES,
    TABLE_COVERAGE_LEVELS,
    MethodSummary,
    summarize_method,
)

REPORT_NAME = "report"
SUFFIXES = (".html", ".md", "")
UNTITLED_PROBLEMS = ("", "custom")  # problem names that say nothing: the folder names the run

TABLE_METRICS = (  # (key, column header)
    ("mse", "MSE"),
    ("mse_t", "MSE(t*)"),
    ("ce", "CE"),
    ("ll", "LL"),
    ("crps", "CRPS"),
    ("coverage_50", "Cov 50%"),
    ("coverage_90", "Cov 90%"),
    ("width_90", "Width 90%"),
    ("boundary_residual", "Boundary"),
    ("bound_violations", "Outside bounds"),
    ("site_residual", "Site residual"),
)

DEFINITIONS = (
    "Values are mean (standard error) over functions. MSE: squared error of the predictive "
    "mean over the grid; MSE(t*): at the time of interest; CE: mean over t of "
    "|sum_i w_i m(t, x_i) - U(t)| (trapezoid weights w, exact mass U); LL: mean pointwise "
    "Gaussian log density of the truth under the predictive mean and variance; CRPS: mean "
    "pointwise ensemble CRPS (scoringrules); Cov 50%/90%: fraction of points inside the "
    "central interval between sample quantiles (a calibrated ensemble of D draws covers about "
    "L (D - 1) / (D + 1) of them, 0.882 for L = 0.9 and D = 100); Width 90%: mean width of "
    "that interval (sharpness); Boundary: mean |B (m - u)| of the boundary operator B named by "
    "the run's boundary_condition attribute, else mean |G_b m - b_b| of the posterior mean over "
    "the stored boundary rows (dirichlet_*, neumann_*, periodic) the posterior was conditioned "
    "on; Outside bounds: fraction of draw points outside the run's bound sites "
    "(observe_bounds); Site residual: max over draws and rows of |h(u) - b| of the run's "
    "nonlinear sites; n/a: no standard error from a single function; "
    "PIT 90%: coverage of the 90% interval read off the randomized PIT, exact for any D; "
    f"Calibration: over-confident if PIT 90% < 0.9 - {FLAG_STANDARD_ERRORS:g} SE, "
    f"under-confident if > 0.9 + {FLAG_STANDARD_ERRORS:g} SE, SE the larger of the standard "
    "error over functions and the binomial one over all points; PIT uniform: whether the ECDF "
    "of PIT values at random points lies inside ArviZ's 95% simultaneous band (the band "
    "assumes independent values; neighbouring points are correlated, so read it as a guide)."
)


def _format(value: float | None, error: float | None = None) -> str:
    """'1.234e-03 (5.6e-05)' or '0.8819 (0.0039)'; '-' for a missing value, '0' for exact zero,
    '(n/a)' for a NaN standard error (one function)."""
    if value is None or math.isnan(value):
        return "-"
    scientific = value != 0 and math.isfinite(value) and not 1e-2 <= abs(value) < 1e4
    if value == 0:
        text = "0"
    else:
        text = f"{value:.3e}" if scientific else f"{value:.4g}"
    if error is not None and math.isfinite(error):
        text += f" ({error:.1e})" if scientific else f" ({error:.2g})"
    elif error is not None and math.isnan(error):
        text += " (n/a)"
    return text


TEMPORARY_NAME = len(".") + len(".html.") + 8 + len(".tmp")
"""Bytes the hidden temporary file of `probcons.io.atomic_write` adds to the report's stem:
`.STEM.html.XXXXXXXX.tmp`."""


def _output_paths(run_dirs: list[Path], out: str | os.PathLike | None) -> tuple[Path, Path]:
    if out is None:
        resolved = [directory.resolve() for directory in run_dirs]
        folder = run_dirs[0] if len(run_dirs) == 1 else Path(os.path.commonpath(resolved))
        base = folder / REPORT_NAME
    else:
        base = Path(out)
        if base.suffix not in SUFFIXES or base.name in ("", ".html", ".md"):
            raise UsageError(
                f"out: expected a file path ending in .html, .md or no suffix, got {str(out)!r}"
            )
        base = base.with_suffix("")
    _check_report_folder(base, out)
    return base.with_suffix(".html"), base.with_suffix(".md")


def _check_report_folder(base: Path, out) -> None:
    """Refuse a report whose folder lies under a file, or whose name is longer than NAME_MAX."""
    ancestor = base.absolute().parent
    while True:
        try:
            is_dir = ancestor.is_dir()
            exists = is_dir or ancestor.exists()
        except OSError:
            is_dir = exists = False
        if exists or ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    name = "out" if out is not None else "run_dirs"
    if exists and not is_dir:
        raise UsageError(
            f"{name}: expected a report path under a directory, got {str(base)!r} "
            f"({str(ancestor)!r} is a file)"
        )
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    parts = base.absolute().relative_to(ancestor).parts
    for index, part in enumerate(parts):
        allowed = limit - TEMPORARY_NAME if index == len(parts) - 1 else limit
        if len(os.fsencode(part)) > allowed:
            raise UsageError(
                f"{name}: expected path components of at most {allowed} bytes (NAME_MAX "
                f"{limit} of the file system, less {limit - allowed} for the hidden temporary "
                f"name), got {len(os.fsencode(part))} bytes in {part[:20] + '...'!r}"
            )


def _run_labels(run_dirs: list[Path]) -> list[str]:
    labels, seen = [], {}
    for directory in run_dirs:
        name = directory.resolve().name or "run"
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return labels


def run_title(summaries: list[MethodSummary], run: str) -> str:
    """'problem, backbone backbone, name = value' from the run's attributes; the folder name
    `run` when they do not name a problem."""
    attrs = summaries[0].attrs
    problem = str(attrs.get("problem", "")).strip()
    if problem in UNTITLED_PROBLEMS:
        return run
    parts = [problem]
    backbone = str(attrs.get("backbone", "")).strip()
    if backbone:
        parts.append(f"{backbone} backbone")
    parameters = summaries[0].parameters
    if parameters:
        name = attrs.get("parameter_name", "parameter")
        low, high = min(parameters), max(parameters)
        value = f"{low:.4g}" if low == high else f"{low:.4g} ... {high:.4g}"
        parts.append(f"{name} = {value}")
    return ", ".join(parts)


def _region_table(summaries: list[MethodSummary]) -> Table:
    """Per method and region: points, variance range, PIT coverage of the table's levels."""
    levels = TABLE_COVERAGE_LEVELS
    header = ("method", "region", "points", "variance")
    header += tuple(f"Cov {round(100 * level)}%" for level in levels)
    rows = []
    for summary in summaries:
        for region in summary.regions:
            span = region.variance_range
            rows.append(
                (
                    summary.method,
                    region.name,
                    str(region.n_points),
                    "" if span is None else f"{_format(span[0])} ... {_format(span[1])}",
                    *(_format(region.at(level)) for level in levels),
                )
            )
    return Table(header, tuple(rows))


REGION_TEXT = (
    "Coverage of the 50% and 90% central intervals read off the randomized PIT, pooled over "
    "the points of each region: all points; the deciles of the method's own predictive "
    "variance over every grid point of every function (decile 1 the most certain points, "
    "where a field that is exactly 0 sits); for a field with a front, the points within "
    f"{FRONT_BAND_CELLS} grid steps of the true front at each time (near front) and the rest "
    "(far from front). A method reads under-confident overall when its certain points are "
    "over-covered; the decile and front rows show where it is calibrated."
)


def _run_metadata(summaries: list[MethodSummary]) -> Bullets:
    first = summaries[0]
    attrs = first.attrs
    axes = "t x x"
    if is_flat_2d(attrs):
        n = attrs.get("n", "?")
        axes = f"t x positions: {attrs.get('channels', '?')} channel(s) x {n} x {n} nodes, flat"
    items = [
        f"problem: {attrs.get('problem', '?')}; backbone: {attrs.get('backbone', '?')}",
        f"{first.n_functions} functions, grid {first.t.size} x {first.x.size} ({axes}), "
        f"time of interest t* = {_format(float(attrs.get('time_of_interest', float('nan'))))}",
    ]
    for summary in summaries:
        sigma = summary.attrs.get("sigma_G", float("nan"))
        items.append(
            f"{summary.method}: {summary.n_draws} draws per function, sigma_G = "
            f"{_format(float(sigma))}, mean and variance from {summary.moments}"
        )
    if first.example.parameter is not None:
        name = attrs.get("parameter_name", "parameter")
        items.append(
            f"figures of one function use function {first.example.function} "
            f"({name} = {first.example.parameter:.4g})"
        )
    return Bullets(tuple(items))


def _metrics_table(summaries: list[MethodSummary], several_runs: bool) -> Table:
    shown = [
        (key, header)
        for key, header in TABLE_METRICS
        if any(s.metric(key) is not None for s in summaries)
    ]
    header = (("run",) if several_runs else ()) + ("method",) + tuple(h for _, h in shown)
    header += ("PIT 90%", "Calibration", "PIT uniform")
    rows = []
    for summary in summaries:
        cells = ([summary.run] if several_runs else []) + [summary.method]
        for key, _ in shown:
            value = summary.metric(key)
            cells.append("-" if value is None else _format(*value))
        levels, coverage, errors = summary.reliability_curve()
        k = int(np.argmin(np.abs(levels - BAND_LEVEL)))
        cells += [
            _format(float(coverage[k]), float(errors[k])),
            summary.calibration(),
            "yes" if summary.pit_uniformity().inside else "no",
        ]
        rows.append(tuple(cells))
    return Table(header, tuple(rows))


def _shock_table(summaries: list[MethodSummary]) -> Table | None:
    with_shock = [s for s in summaries if s.shock is not None]
    if not with_shock:
        return None
    rows = []
    for summary in with_shock:
        stats = shock_statistics(summary.shock)
        what = "position" if summary.shock.common_truth else "position - truth"
        rows.append(
            (
                summary.method,
                what,
                _format(stats["truth"]),
                _format(stats["mean"]),
                f"[{_format(stats['lower'])}, {_format(stats['upper'])}]",
                str(stats["count"]),
            )
        )
    header = ("method", "quantity", "truth", "posterior mean", "90% interval", "draws")
    return Table(header, tuple(rows))


def _physics2d_table(scores: Physics2dScores) -> Table:
    """One row per method: the run's 2-D scores, mean (standard error) over trajectories."""
    header = ("method",) + tuple(header for _, header in scores.columns)
    rows = tuple(
        (method, *(_format(mean, error) for mean, error in cells)) for method, cells in scores.rows
    )
    return Table(header, rows)


def _physics2d_blocks(runs: list[tuple[Path, str, list[MethodSummary]]]) -> list[Block]:
    """The "2-D physics" section: a table per run whose method files hold a flat 2-D field."""
    blocks: list[Block] = []
    several = len(runs) > 1
    for directory, run, summaries in runs:
        if not any(is_flat_2d(summary.attrs) for summary in summaries):
            continue
        notes: list[str] = []
        methods = [summary.method for summary in summaries]
        scores = read_physics2d(directory, methods, summaries[0].n_functions, notes)
        if several:
            blocks.append(Heading(3, f"Run {run}"))
        if scores is not None:
            blocks += [_physics2d_table(scores), Paragraph(scores.text)]
        if notes:
            blocks.append(Bullets(tuple(notes)))
    return [Heading(2, "2-D physics"), *blocks] if blocks else []


def _summarize_run(
    directory: Path, run: str, several: bool, notes: list[str], **options
) -> list[MethodSummary]:
    summaries = []
    for path in method_files(directory):
        try:
            data = MethodData(path)
        except ValueError as error:
            notes.append(f"{run}: skipped {path.name}: {error}")
            continue
        with data:
            label = f"{run}/{data.method}" if several else data.method
            summaries.append(summarize_method(data, run, label, **options))
    return summaries


def write_report(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    example_function: int = 0,
    pit_values: int = PIT_VALUES,
    seed: int = 0,
    summaries: Sequence[MethodSummary] | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write report.md, report.html (self-contained) and PNGs comparing the methods of runs.

    run_dirs: run directories holding `<method>.nc` files (the `probcons run` schema).
    out: the report file (.html, .md or no suffix; both documents are written beside each
        other, PNGs in `<stem>_figures/`); default `report.html` in the run directory, or in
        the common parent of several.
    summaries: the methods of a single run directory already summarized (a `MethodSummarizer`
        per method, fed the draws as the files hold them and made with these example_function,
        pit_values and seed, as `probcons run` does); the files are then not read again.
    labels: the runs' names in the report (default: the directories' names), e.g. the final
        name of a run still in its staging folder.
    Returns {"html": ..., "markdown": ..., <figure name>: PNG path}.
    """
    started = time.perf_counter()
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not isinstance(run_dirs, Sequence) or len(run_dirs) == 0:
        raise UsageError(f"run_dirs: expected a non-empty list of directories, got {run_dirs!r}")
    directories = [Path(directory) for directory in run_dirs]
    point = point_run_metrics(directories[0]) if len(directories) == 1 else None
    if point is not None and summaries is None:
        return write_point_report(directories[0], point, out)
    for directory in directories:
        method_files(directory)  # raises ValueError for a missing or empty directory
    if isinstance(example_function, bool) or not isinstance(example_function, int):
        raise UsageError(f"example_function: expected an integer, got {example_function!r}")
    html_path, markdown_path = _output_paths(directories, out)
    figure_dir = html_path.parent / f"{html_path.stem}_figures"
    several = len(directories) > 1
    if labels is None:
        labels = _run_labels(directories)
    elif len(labels) != len(directories) or not all(isinstance(x, str) and x for x in labels):
        raise UsageError(f"labels: expected {len(directories)} non-empty run names, got {labels!r}")
    options = {"example_function": example_function, "pit_values": pit_values, "seed": seed}

    notes: list[str] = []
    runs = []
    if summaries is not None:
        if several:
            raise UsageError(
                f"summaries: expected one run directory with them, got {len(directories)}"
            )
        if not summaries or not all(isinstance(s, MethodSummary) for s in summaries):
            raise UsageError("summaries: expected a non-empty list of MethodSummary")
        given = sorted(summaries, key=lambda summary: method_sort_key(summary.method))
        runs.append(
            (directories[0], labels[0], [replace(summary, run=labels[0]) for summary in given])
        )
    for directory, run in zip(directories, labels, strict=True):
        if summaries is not None:
            continue
        method_summaries = _summarize_run(directory, run, several, notes, **options)
        if method_summaries:
            runs.append((directory, run, method_summaries))
        else:
            notes.append(f"{run}: no readable method file")
    if not runs:
        raise UsageError(f"run_dirs: no readable <method>.nc file in {[str(d) for d in run_dirs]}")
    everything = [summary for _, _, summaries in runs for summary in summaries]

    title = "probcons calibration report: " + "; ".join(
        run_title(summaries, run) for _, run, summaries in runs
    )
    blocks: list[Block] = [Heading(1, title), Heading(2, "Metrics")]
    blocks += [_metrics_table(everything, several), Paragraph(DEFINITIONS)]
    blocks += _physics2d_blocks(runs)
    blocks += [
        Heading(2, "Reliability"),
        Image(
            "reliability",
            "Coverage of central intervals (10 ... 90 %) against nominal, "
            "from the randomized PIT; bars: +- 2 SE",
            reliability_figure(everything),
        ),
    ]
    for _, run, summaries in runs:
        prefix = f"{run}_" if several else ""
        flat_2d = is_flat_2d(summaries[0].attrs)
        named = run_title(summaries, run)
        heading = f"Run {run}" if named == run else f"Run {run}: {named}"
        blocks += [Heading(2, heading), _run_metadata(summaries)]
        blocks.append(
            Image(
                f"{prefix}pit",
                "PIT histogram (all points) and ECDF difference with the 95 % "
                "simultaneous band (ArviZ), one column per method",
                pit_figure(summaries),
            )
        )
        blocks.append(
            Image(
                f"{prefix}error_time",
                "CRPS and MSE against time, mean over functions +- 2 SE",
                error_time_figure(summaries),
            )
        )
        if not flat_2d:  # a sum over a flat 2-D field's positions is no mass
            blocks.append(
                Image(
                    f"{prefix}mass",
                    "Mass against time: truth, each method's mean and 90 % band",
                    mass_figure(summaries),
                )
            )
        along = " along the flat positions (channel-major)" if flat_2d else ""
        blocks.append(
            Image(
                f"{prefix}profiles",
                f"Solution profiles{along} with 90 % bands at three times, truth dashed",
                profiles_figure(summaries),
            )
        )
        blocks += [
            Heading(3, "Calibration by region"),
            Paragraph(REGION_TEXT),
            _region_table(summaries),
            Image(
                f"{prefix}regions",
                "Coverage of the 50 % and 90 % central intervals by predictive-variance decile "
                "and near / far from the front (dotted: nominal)",
                region_figure(summaries),
            ),
        ]
        figure = shock_figure(summaries)
        if figure is not None:
            blocks += [Heading(3, "Shock position"), _shock_table(summaries)]
            blocks.append(
                Image(
                    f"{prefix}shock",
                    "Posterior shock positions per method against the true position",
                    figure,
                )
            )
        run_notes = sorted({note for summary in summaries for note in summary.notes})
        if run_notes:
            blocks += [Heading(3, "Notes"), Bullets(tuple(run_notes))]
    if notes:
        blocks += [Heading(2, "Skipped"), Bullets(tuple(notes))]
    from probcons import __version__

    elapsed = time.perf_counter() - started
    blocks.append(Paragraph(f"Written by probcons {__version__}; analysis took {elapsed:.1f} s."))
    return _write(blocks, title, html_path, markdown_path, figure_dir)


def _write(blocks, title, html_path: Path, markdown_path: Path, figure_dir: Path):
    try:
        return write_documents(blocks, title, html_path, markdown_path, figure_dir)
    except OSError as error:  # disk full, busy, name too long, permission: one line in the CLI
        reason = os.strerror(error.errno) if error.errno else " ".join(str(error).split())
        raise OutputError(error.errno or errno.EIO, reason, str(html_path)) from error


def point_run_metrics(run_dir: Path) -> dict | None:
    """metrics.json of a run of a deterministic backbone (no `<method>.nc`: a point prediction
    has no distribution), or None when `run_dir` is not one."""
    path = Path(run_dir) / "metrics.json"
    if not Path(run_dir).is_dir() or any(Path(run_dir).glob("*.nc")) or not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    point = isinstance(payload, dict) and isinstance(payload.get("metrics"), dict)
    return payload if point and "backbone" in payload else None


def write_point_report(run_dir, payload: dict, out=None) -> dict[str, Path]:
    """report.md / report.html of a deterministic backbone's run: its point metrics over the
    test set (no calibration: there is no predictive distribution) and its settings."""
    html_path, markdown_path = _output_paths([Path(run_dir)], out)
    title = f"probcons report: {payload.get('problem', Path(run_dir).name)}, {payload['backbone']}"
    rows = tuple(
        (name, f"{value:.4g}")
        for name, value in payload["metrics"].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    )
    settings = [
        f"{key}: {payload[key]}" for key in ("problem", "backbone", "seed") if key in payload
    ]
    settings += [f"{key}: {value}" for key, value in (payload.get("sizes") or {}).items()]
    blocks: list[Block] = [
        Heading(1, title),
        Paragraph(
            "A deterministic backbone gives one prediction per input and no predictive "
            "distribution, so this report has no calibration, CRPS or coverage: it lists the "
            "point metrics over the test set (rel_l2: relative L2 error; boundary_error: the "
            "boundary condition's residual). For a distribution, run the problem with "
            "--backbone boon-ensemble."
        ),
        Table(("metric", "value"), rows),
        Heading(2, "Settings"),
        Bullets(tuple(settings)),
    ]
    figure_dir = html_path.parent / f"{html_path.stem}_figures"
    return _write(blocks, title, html_path, markdown_path, figure_dir)
