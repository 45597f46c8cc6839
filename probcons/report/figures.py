"""Report figures as matplotlib `Figure` objects (Agg canvas; pyplot's global state untouched).

Each function takes `MethodSummary` objects and returns a Figure, or None when the data it
needs is absent (the report then prints a note instead).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from probcons.report.summary import (
    BAND_LEVEL,
    PIT_BINS,
    TABLE_COVERAGE_LEVELS,
    MethodSummary,
    ShockPositions,
)

PANEL_SIZE = (4.0, 3.0)  # inches per panel
SINGLE_PANEL_SIZE = (6.0, 4.5)
LOG_SCALE_RATIO = 10.0  # log y-axis when the curves span more than this factor
MARGINS = (0.75, 0.15, 0.55, 0.35)  # left, right, bottom, top, inches
GAPS = (0.75, 0.8)  # between panels: horizontal, vertical, inches
SUPTITLE_HEIGHT = 0.3
BAND_ALPHA = 0.25
MAX_COLUMNS = 4
SHOCK_BINS = 30
METHOD_COLORS = {  # the same method has the same colour in every figure of every report
    "unconstrained": "C0",
    "hardc": "C1",
    "probconserv": "C2",
    "softc": "C4",
}
FALLBACK_COLORS = ("C3", "C5", "C6", "C7", "C8", "C9")
RUN_LINESTYLES = ("-", "--", ":", "-.")  # one per run where several share a figure
REGION_MARKERS = {0.5: "s", 0.9: "o"}


def _figure(
    rows: int,
    columns: int,
    sharey: bool = False,
    suptitle: bool = False,
    panel_size: tuple[float, float] = PANEL_SIZE,
) -> tuple[Figure, np.ndarray]:
    """Panels of `panel_size` on fixed margins (no layout engine: it doubles the drawing time)."""
    width, height = panel_size[0] * columns, panel_size[1] * rows
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    left, right, bottom, top = MARGINS
    top += SUPTITLE_HEIGHT if suptitle else 0.0
    panel_width = (width - left - right - (columns - 1) * GAPS[0]) / columns
    panel_height = (height - bottom - top - (rows - 1) * GAPS[1]) / rows
    figure.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=GAPS[0] / panel_width,
        hspace=GAPS[1] / panel_height,
    )
    axes = figure.subplots(rows, columns, squeeze=False, sharey=sharey)
    return figure, axes


def method_color(method: str) -> str:
    """A fixed colour per method name; other names get a stable one from a CRC of the name."""
    name = method.lower()
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    return FALLBACK_COLORS[zlib.crc32(name.encode()) % len(FALLBACK_COLORS)]


def _run_linestyle(summaries: Sequence[MethodSummary], summary: MethodSummary) -> str:
    runs = list(dict.fromkeys(s.run for s in summaries))
    return RUN_LINESTYLES[runs.index(summary.run) % len(RUN_LINESTYLES)]


def _grid_shape(n: int) -> tuple[int, int]:
    columns = min(n, MAX_COLUMNS)
    return math.ceil(n / columns), columns


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for axis in axes.reshape(-1)[used:]:
        axis.set_visible(False)


def reliability_figure(summaries: Sequence[MethodSummary]) -> Figure:
    """Empirical coverage of central intervals (from the PIT) against nominal, +- 2 SE."""
    figure, axes = _figure(1, 1, panel_size=SINGLE_PANEL_SIZE)
    axis = axes[0, 0]
    axis.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="ideal")
    for summary in summaries:
        levels, coverage, errors = summary.reliability_curve()
        axis.errorbar(
            levels,
            coverage,
            yerr=2 * errors,
            marker="o",
            markersize=3,
            capsize=2,
            color=method_color(summary.method),
            linestyle=_run_linestyle(summaries, summary),
            label=f"{summary.label} ({summary.calibration()})",
        )
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal level", ylabel="empirical coverage")
    axis.set_title("Reliability of central intervals")
    axis.legend(fontsize="small")
    return figure


def pit_figure(summaries: Sequence[MethodSummary]) -> Figure:
    """Per method: PIT histogram (top) and ECDF - uniform CDF with ArviZ's 95 % band (bottom)."""
    figure, axes = _figure(2, len(summaries))
    for index, summary in enumerate(summaries):
        color = method_color(summary.method)
        top, bottom = axes[0, index], axes[1, index]
        counts = summary.pit_histogram
        edges = np.linspace(0.0, 1.0, PIT_BINS + 1)
        density = counts / max(counts.sum(), 1) * PIT_BINS
        top.stairs(density, edges, fill=True, color=color, alpha=0.6)
        top.axhline(1.0, color="0.3", linestyle="--", linewidth=1)
        top.set(xlim=(0, 1), xlabel="PIT", ylabel="density")
        top.set_title(f"{summary.label}: PIT, all points", fontsize="medium")
        band = summary.pit_uniformity()
        bottom.fill_between(
            band.eval_points,
            band.lower,
            band.upper,
            step="post",
            color="0.8",
            label=f"{round(100 * band.probability)} % simultaneous band",
        )
        bottom.step(band.eval_points, band.difference, where="post", color=color, label="ECDF")
        bottom.axhline(0.0, color="0.3", linewidth=0.8)
        verdict = "inside band" if band.inside else "outside band"
        bottom.set(xlim=(0, 1), xlabel="PIT", ylabel="ECDF - uniform CDF")
        bottom.set_title(f"{band.n_values} points: {verdict}", fontsize="medium")
        bottom.legend(fontsize="x-small", loc="lower center")
    return figure


def _mean_band(axis, t, values: np.ndarray, color: str, label: str) -> None:
    mean = values.mean(axis=0)
    error = values.std(axis=0, ddof=1) / math.sqrt(values.shape[0]) if values.shape[0] > 1 else 0
    axis.plot(t, mean, color=color, label=label)
    axis.fill_between(t, mean - 2 * error, mean + 2 * error, color=color, alpha=BAND_ALPHA)


def error_time_figure(summaries: Sequence[MethodSummary]) -> Figure:
    """CRPS(t) and MSE(t): mean over functions with +- 2 SE bands, one curve per method."""
    figure, axes = _figure(1, 2)
    for summary in summaries:
        for axis, values in zip(axes[0], (summary.crps_time, summary.mse_time), strict=True):
            _mean_band(axis, summary.t, values, method_color(summary.method), summary.label)
    for axis, name in zip(axes[0], ("CRPS", "MSE"), strict=True):
        curves = np.concatenate(
            [getattr(s, f"{name.lower()}_time").mean(axis=0) for s in summaries]
        )
        positive = curves[curves > 0]
        if positive.size and positive.max() > LOG_SCALE_RATIO * positive.min():
            axis.set_yscale("log", nonpositive="mask")
        else:
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        axis.set(xlabel="t", ylabel=name)
        axis.set_title(f"{name} against time", fontsize="medium")
        axis.legend(fontsize="small")
    return figure


def mass_figure(summaries: Sequence[MethodSummary]) -> Figure:
    """Mass U(t): truth, each method's mean and 90 % band, for the example function."""
    figure, axes = _figure(1, 1, panel_size=SINGLE_PANEL_SIZE)
    axis = axes[0, 0]
    example = summaries[0].example
    axis.plot(
        summaries[0].t, example.mass_truth, color="k", linewidth=2, label=example.mass_truth_label
    )
    for summary in summaries:
        color, example = method_color(summary.method), summary.example
        axis.plot(summary.t, example.mass_mean, color=color, linestyle="--", label=summary.label)
        axis.fill_between(
            summary.t, example.mass_lower, example.mass_upper, color=color, alpha=BAND_ALPHA
        )
    axis.set(xlabel="t", ylabel="mass  sum_i w_i u(t, x_i)")
    axis.set_title(
        f"Mass, function {example.function}: mean and {round(100 * BAND_LEVEL)} % band",
        fontsize="medium",
    )
    axis.legend(fontsize="small")
    return figure


def profiles_figure(summaries: Sequence[MethodSummary]) -> Figure:
    """Rows: methods; columns: three times. Mean, 90 % band, truth overlaid."""
    times = summaries[0].example.time_indices
    figure, axes = _figure(len(summaries), len(times), sharey=True)
    for row, summary in enumerate(summaries):
        color, example = method_color(summary.method), summary.example
        for column, time_index in enumerate(times):
            axis = axes[row, column]
            axis.fill_between(
                summary.x,
                example.profile_lower[column],
                example.profile_upper[column],
                color=color,
                alpha=BAND_ALPHA,
                label=f"{round(100 * BAND_LEVEL)} % band",
            )
            axis.plot(summary.x, example.profile_mean[column], color=color, label="mean")
            axis.plot(
                summary.x,
                example.profile_truth[column],
                color="k",
                linestyle="--",
                linewidth=1,
                label="truth",
            )
            axis.set_title(f"{summary.label}, t = {summary.t[time_index]:.3g}", fontsize="medium")
            axis.set(xlabel="x", ylabel="u" if column == 0 else None)
    axes[0, 0].legend(fontsize="x-small")
    return figure


def shock_statistics(shock: ShockPositions) -> dict[str, float]:
    """Mean, 5 % and 95 % quantiles of the pooled positions (or errors) and the reference."""
    values, reference = shock.pooled()
    values = values[np.isfinite(values)]
    if values.size == 0:
        nan = float("nan")
        return {"mean": nan, "lower": nan, "upper": nan, "truth": reference, "count": 0}
    lower, upper = np.quantile(values, [(1 - BAND_LEVEL) / 2, (1 + BAND_LEVEL) / 2])
    return {
        "mean": float(values.mean()),
        "lower": float(lower),
        "upper": float(upper),
        "truth": reference,
        "count": int(values.size),
    }


def shock_figure(summaries: Sequence[MethodSummary]) -> Figure | None:
    """Histogram of posterior front positions per method against the true position."""
    with_shock = [s for s in summaries if s.shock is not None]
    if not with_shock:
        return None
    rows, columns = _grid_shape(len(with_shock))
    figure, axes = _figure(rows, columns, suptitle=True)
    pooled = [s.shock.pooled()[0] for s in with_shock]
    finite = np.concatenate([values[np.isfinite(values)] for values in pooled])
    span = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if span[0] == span[1]:
        span = (span[0] - 0.5, span[1] + 0.5)
    for index, summary in enumerate(with_shock):
        axis = axes.reshape(-1)[index]
        shock = summary.shock
        values = pooled[index][np.isfinite(pooled[index])]
        stats = shock_statistics(shock)
        color = method_color(summary.method)
        axis.hist(values, bins=SHOCK_BINS, range=span, color=color, alpha=0.7)
        axis.axvline(stats["truth"], color="k", linewidth=2, label="truth")
        axis.axvline(stats["mean"], color=color, linestyle="--", label="posterior mean")
        what = "front position x" if shock.common_truth else "front position - truth"
        axis.set(xlabel=what, ylabel="draws")
        axis.set_title(
            f"{summary.label}: mean {stats['mean']:.4g}, "
            f"{round(100 * BAND_LEVEL)} % [{stats['lower']:.4g}, {stats['upper']:.4g}]",
            fontsize="small",
        )
        axis.legend(fontsize="x-small")
    _hide_unused(axes, len(with_shock))
    figure.suptitle(f"Shock position at t = {with_shock[0].shock.time:.3g}", fontsize="medium")
    return figure


def region_figure(summaries: Sequence[MethodSummary]) -> Figure:
    """PIT coverage of the 50 % and 90 % intervals per predictive-variance decile (left) and
    near / far from the front against all points (right, when the field has a front)."""
    with_front = any(r.kind == "front" for s in summaries for r in s.regions)
    figure, axes = _figure(1, 2 if with_front else 1)
    deciles, fronts = axes[0, 0], axes[0, -1] if with_front else None
    names = ("all points", "near front", "far from front")
    width = 0.8 / max(len(summaries), 1)
    for index, summary in enumerate(summaries):
        color = method_color(summary.method)
        linestyle = _run_linestyle(summaries, summary)
        by_variance = [r for r in summary.regions if r.kind == "variance"]
        positions = np.arange(1, len(by_variance) + 1)
        for level in TABLE_COVERAGE_LEVELS:
            deciles.plot(
                positions,
                [r.at(level) for r in by_variance],
                color=color,
                linestyle=linestyle,
                marker=REGION_MARKERS.get(level, "o"),
                markersize=4,
                label=f"{summary.label} {round(100 * level)} %",
            )
        if fronts is not None:
            regions = {r.name: r for r in summary.regions}
            shown = [k for k, name in enumerate(names) if name in regions]
            offsets = np.asarray(shown) - 0.4 + width * (index + 0.5)
            for level in TABLE_COVERAGE_LEVELS:
                fronts.plot(
                    offsets,
                    [regions[names[k]].at(level) for k in shown],
                    color=color,
                    linestyle="none",
                    marker=REGION_MARKERS.get(level, "o"),
                    label=f"{summary.label} {round(100 * level)} %",
                )
    for axis in axes[0]:
        for level in TABLE_COVERAGE_LEVELS:
            axis.axhline(level, color="0.4", linestyle=":", linewidth=1)
        axis.set(ylim=(0, 1.02), ylabel="PIT coverage")
    deciles.set(xlabel="predictive-variance decile (1: smallest variance)")
    deciles.set_xticks(np.arange(1, 11))
    deciles.set_title("Coverage by variance decile", fontsize="medium")
    deciles.legend(fontsize="x-small", ncol=2)
    if fronts is not None:
        fronts.set_xticks(np.arange(len(names)), names)
        fronts.set_xlim(-0.5, len(names) - 0.5)
        fronts.set_title("Coverage near / far from the front", fontsize="medium")
    return figure
