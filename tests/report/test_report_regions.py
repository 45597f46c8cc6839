"""Report for a scientist: calibration by region, titles and colours from the run, n/a
standard errors for one function, the boundary residual from stored boundary rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_report import make_run, summarize  # the synthetic run-directory builder

from probcons.posterior_files import posterior_inference_data, write_inference_data
from probcons.problems import get_problem
from probcons.report import MethodData, write_report
from probcons.report.calibration import RELIABILITY_LEVELS, randomized_pit
from probcons.report.document import _metrics_table, run_title
from probcons.report.figures import METHOD_COLORS, method_color
from probcons.report.summary import FRONT_BAND_CELLS, MethodSummarizer, is_boundary_row


def _section(markdown: str, heading: str) -> str:
    """The table lines of `markdown` from `heading` to the next heading."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("#")), len(lines))
    return "\n".join(line for line in lines[start:end] if line.startswith("|"))


def test_region_coverage_against_independent_pit_pooling(tmp_path):
    run = make_run(tmp_path / "run", methods={"probconserv": 1.0}, n_functions=3, n_x=41)
    summary = summarize(run / "probconserv.nc")
    regions = {region.name: region for region in summary.regions}
    deciles = [r for r in summary.regions if r.kind == "variance"]
    assert len(deciles) == 10 and {"all points", "near front", "far from front"} <= set(regions)
    # Recompute: the same PIT (same generator stream), variance deciles, front band.
    generator = torch.Generator().manual_seed(0)
    problem = get_problem("stefan")
    deviations, variances, near = [], [], []
    with MethodData(run / "probconserv.nc") as data:
        x = data.grid.x.numpy()
        step = float(np.min(np.diff(x)))
        for f in range(data.n_functions):
            truth = data.truth(f)
            pit = randomized_pit(data.draws(f), truth.to(torch.float32).double(), generator)
            torch.randperm(data.grid.size, generator=generator)  # the ECDF sample's draw
            deviations.append((pit - 0.5).abs().reshape(-1).numpy())
            variances.append(data.moments(f)[1].reshape(-1).numpy().astype(np.float32))
            front = np.array([problem.front_position(t, data.parameter(f)) for t in data.grid.t])
            near.append((np.abs(x[None] - front[:, None]) <= FRONT_BAND_CELLS * step).reshape(-1))
    deviation, variance, near = map(np.concatenate, (deviations, variances, near))
    for k, level in enumerate(RELIABILITY_LEVELS):
        assert regions["all points"].coverage[k] == pytest.approx(
            summary.reliability[:, k].mean(), abs=1e-12
        )
        assert regions["near front"].coverage[k] == pytest.approx(
            np.mean(deviation[near] <= level / 2), abs=1e-12
        )
        assert regions["far from front"].coverage[k] == pytest.approx(
            np.mean(deviation[~near] <= level / 2), abs=1e-12
        )
    assert regions["near front"].n_points == near.sum()
    order = np.argsort(variance, kind="stable")
    assert sum(r.n_points for r in deciles) == variance.size
    lowest = order[: deciles[0].n_points]
    assert deciles[0].at(0.9) == pytest.approx(np.mean(deviation[lowest] <= 0.45), abs=1e-12)
    assert deciles[0].variance_range[1] <= deciles[-1].variance_range[0]


def test_runner_region_table_matches_files_and_front_differs(tmp_path):
    from probcons.runner import RunSettings, run

    out = tmp_path / "stefan-anp"
    settings = RunSettings(
        "stefan", backbone="anp", n_functions=2, grid=(21, 21), draws=20, out=out
    )
    run(settings, progress=False, report=True)
    in_memory = (out / "report.md").read_text()
    from_files = write_report([out], tmp_path / "again.md")["markdown"].read_text()
    heading = "### Calibration by region"
    assert heading in in_memory and "| probconserv | near front |" in in_memory
    assert _section(in_memory, heading) == _section(from_files, heading)
    assert _section(in_memory, "## Metrics") == _section(from_files, "## Metrics")
    assert (
        in_memory.splitlines()[0]
        == "# probcons calibration report: stefan, anp backbone, u_star = 0.6"
    )
    with MethodData(out / "probconserv.nc") as data:
        summary = summarize(data.path)
    regions = {region.name: region for region in summary.regions}
    pooled, near = regions["all points"], regions["near front"]
    assert near.n_points < pooled.n_points
    assert abs(near.at(0.9) - pooled.at(0.9)) > 0.05


def test_title_and_colours_come_from_the_run(tmp_path):
    run = make_run(tmp_path / "folder-name", methods={"probconserv": 1.0, "mine": 1.0})
    markdown = write_report([run])["markdown"].read_text()
    first = markdown.splitlines()[0]
    assert first == "# probcons calibration report: stefan, synthetic backbone, u_star = 0.6"
    custom = make_run(tmp_path / "my-run", methods={"m": 1.0}, attrs={"problem": "custom"})
    summaries = [summarize(custom / "m.nc")]
    assert run_title(summaries, "my-run") == "my-run"
    assert method_color("unconstrained") == METHOD_COLORS["unconstrained"]
    assert method_color("HardC") == METHOD_COLORS["hardc"]
    colours = {method_color(name) for name in ("unconstrained", "hardc", "probconserv")}
    assert len(colours) == 3 and method_color("mine") == method_color("mine")
    assert method_color("mine") not in colours


def test_single_function_standard_errors_read_n_a(tmp_path):
    run = make_run(tmp_path / "one", methods={"probconserv": 1.0}, n_functions=1)
    summary = summarize(run / "probconserv.nc")
    mean, error = summary.metric("mse")
    assert np.isfinite(mean) and np.isnan(error)
    row = _metrics_table([summary], False).rows[0]
    assert all(cell.endswith("(n/a)") for cell in row[1:9]), row
    several = summarize(make_run(tmp_path / "two", methods={"p": 1.0}, n_functions=2) / "p.nc")
    assert "(n/a)" not in " ".join(_metrics_table([several], False).rows[0])


def _run_with_rows(directory: Path, names: tuple[str, ...]) -> tuple[Path, np.ndarray]:
    """A `probcons run` file whose stored rows are `names` (one stencil each per time)."""
    problem = get_problem("diffusion")
    grid = problem.grid(6, 11)
    rng = np.random.default_rng(3)
    n_functions, n_draws = 2, 10
    truth = rng.standard_normal((n_functions, *grid.shape))
    mean = truth + 0.1 * rng.standard_normal(truth.shape)
    samples = mean[:, None] + 0.1 * rng.standard_normal((n_functions, n_draws, *grid.shape))
    weights = np.zeros((n_functions, grid.n_t, len(names), grid.n_x))
    for k, name in enumerate(names):
        weights[:, :, k, 0 if "left" in name else -1] = 1.0
        if name == "mass":
            weights[:, :, k, :] = 1.0 / grid.n_x
    values = rng.standard_normal((n_functions, grid.n_t, len(names)))
    constraint = {
        "weights": weights,
        "values": values,
        "noise_std": np.zeros_like(values),
        "names": np.array(names),
    }
    attrs = {"problem": "diffusion", "backbone": "gp", "method": "probconserv", "sigma_G": 0.0}
    data = posterior_inference_data(
        samples,
        truth,
        mean,
        np.full(truth.shape, 0.01),
        np.ones(n_functions),
        np.ones((n_functions, grid.n_t)),
        grid,
        attrs,
        constraint,
    )
    directory.mkdir(parents=True)
    write_inference_data(directory / "probconserv.nc", data)
    residual = np.einsum("fjki,fji->fjk", weights, mean) - values
    return directory, residual


def test_boundary_residual_from_stored_boundary_rows(tmp_path):
    names = ("mass", "dirichlet_left", "neumann_right")
    run, residual = _run_with_rows(tmp_path / "bc", names)
    summary = summarize(run / "probconserv.nc")
    expected = np.abs(residual[:, :, 1:]).mean(axis=(1, 2))
    np.testing.assert_allclose(summary.per_function["boundary_residual"], expected, rtol=1e-12)
    assert "Boundary" in write_report([run])["markdown"].read_text()
    plain, _ = _run_with_rows(tmp_path / "mass-only", ("mass",))
    assert summarize(plain / "probconserv.nc").metric("boundary_residual") is None
    assert [is_boundary_row(n) for n in ("periodic", "dirichlet_left[3]", "mass[2]")] == [
        True,
        True,
        False,
    ]


def test_summarizer_takes_constraint_rows_in_memory(tmp_path):
    run, _ = _run_with_rows(tmp_path / "bc", ("mass", "periodic"))
    with MethodData(run / "probconserv.nc") as data:
        assert data.constraint_rows == ("mass", "periodic")
        summarizer = MethodSummarizer(
            "bc",
            data.method,
            None,
            grid=data.grid,
            attrs=data.attrs,
            n_functions=data.n_functions,
            n_draws=data.n_draws,
            parameters=None,
            has_ce=True,
            constraint_rows=data.constraint_rows,
        )
        for f in range(data.n_functions):
            mean = data.moments(f)
            residual = data.constraint_residual(f, mean[0])
            summarizer.add(data.draws(f), data.truth(f), mean, None, residual)
        in_memory = summarizer.summary()
    from_file = summarize(run / "probconserv.nc")
    assert in_memory.metric("boundary_residual") == from_file.metric("boundary_residual")
