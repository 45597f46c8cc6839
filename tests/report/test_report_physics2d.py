"""The report of a run whose files hold a flat 2-D field: its 2-D physics table comes from
metrics.json, it shows no CE, and a 1-D run's report has neither change."""

from __future__ import annotations

import json
import math

from test_report import make_run, summarize  # the synthetic run-directory builder

from probcons.report import write_report
from probcons.report.data import FLAT_2D_LAYOUT
from probcons.report.document import _format
from probcons.report.summary import FLAT_2D_NOTE

FLAT_2D = {"field_layout": FLAT_2D_LAYOUT, "channels": 1, "n": 4}  # x: 1 x 4 x 4 positions
SCORES = {  # as operator_runner.ensemble2d_scores -> metrics.summarize writes them
    "unconstrained": {
        "rel_l2": 0.5691,
        "rel_l2_se": 0.012,
        "crps": 0.148,
        "crps_se": 0.004,
        "coverage_90": 0.948,
        "coverage_90_se": 0.01,
        "boundary_error": 3.5e-14,
        "boundary_error_se": 1e-15,
        "balance_residual": 0.033,
        "balance_residual_se": 0.002,
    },
    "probconserv": {
        "rel_l2": 0.643,
        "rel_l2_se": 0.015,
        "crps": 0.17,
        "crps_se": 0.005,
        "coverage_90": 0.839,
        "coverage_90_se": 0.02,
        "boundary_error": 2.6e-14,
        "boundary_error_se": 1e-15,
        "balance_residual": 2.9e-16,
        "balance_residual_se": 1e-17,
    },
}
METHODS = {"unconstrained": 1.0, "probconserv": 1.0}


def section(markdown: str, heading: str) -> list[str]:
    """The lines of `markdown` from `heading` to the next heading of the same or higher level."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    level = heading.split()[0]
    end = next(
        (
            k
            for k in range(start + 1, len(lines))
            if lines[k].startswith("#") and len(lines[k].split()[0]) <= len(level)
        ),
        len(lines),
    )
    return lines[start:end]


def rows(lines: list[str]) -> list[list[str]]:
    """Table lines as lists of cells, the separator dropped."""
    return [
        [cell.strip() for cell in line.strip("|").split(" | ")]
        for line in lines
        if line.startswith("|") and not line.startswith("|---")
    ]


def flat_2d_run(directory, n_functions: int = 3):
    run = make_run(
        directory,
        methods=METHODS,
        n_functions=n_functions,
        n_draws=20,
        n_t=3,
        n_x=16,
        attrs=FLAT_2D,
    )
    payload = {"problem": "wave2d", "backbone": "boon-ensemble", "methods": list(METHODS)}
    (run / "metrics.json").write_text(json.dumps({**payload, **SCORES}))
    return run


def test_one_d_run_has_no_2d_table_and_keeps_its_ce_and_mass(tmp_path):
    written = write_report([make_run(tmp_path / "stefan", methods=METHODS)])
    markdown = written["markdown"].read_text()
    assert "2-D physics" not in markdown
    assert "CE" in rows(section(markdown, "## Metrics"))[0]
    assert "mass" in written and FLAT_2D_NOTE not in markdown


def test_flat_2d_run_shows_the_metrics_json_scores_and_no_ce(tmp_path):
    written = write_report([flat_2d_run(tmp_path / "wave")])
    markdown = written["markdown"].read_text()
    table = rows(section(markdown, "## 2-D physics"))
    header = table[0]
    assert header == [
        "method",
        "rel. L2",
        "CRPS (Gaussian)",
        "Cov 90% (Gaussian)",
        "Boundary error (f64)",
        "Balance residual",
    ]
    keys = ("rel_l2", "crps", "coverage_90", "boundary_error", "balance_residual")
    for row in table[1:]:
        scores = SCORES[row[0]]
        assert row[1:] == [_format(scores[key], scores[f"{key}_se"]) for key in keys]
    assert [row[0] for row in table[1:]] == list(METHODS)
    assert "Balance residual: max over predicted slices of |M(t) - M(0)|" in markdown
    assert "Circulation residual" not in markdown
    assert "CE" not in rows(section(markdown, "## Metrics"))[0]
    assert FLAT_2D_NOTE in markdown and "mass" not in written  # no whole-field "mass" figure
    assert "1 channel(s) x 4 x 4 nodes, flat" in markdown


def test_flat_2d_report_from_summaries_in_memory_equals_the_one_from_files(tmp_path):
    run = flat_2d_run(tmp_path / "wave")
    from_files = write_report([run], tmp_path / "files.md")["markdown"].read_text()
    summaries = [summarize(run / f"{method}.nc") for method in METHODS]
    in_memory = write_report([run], tmp_path / "memory.md", summaries=summaries)
    in_memory = in_memory["markdown"].read_text()
    for heading in ("## Metrics", "## 2-D physics"):
        assert rows(section(in_memory, heading)) == rows(section(from_files, heading))


def test_flat_2d_run_with_one_trajectory_or_without_metrics_json(tmp_path):
    single = flat_2d_run(tmp_path / "single", n_functions=1)
    markdown = write_report([single])["markdown"].read_text()
    cell = rows(section(markdown, "## 2-D physics"))[2][-1]
    assert cell == _format(SCORES["probconserv"]["balance_residual"], math.nan)
    assert cell.endswith("(n/a)")  # no standard error from one trajectory, as in Metrics
    (single / "metrics.json").unlink()
    markdown = write_report([single])["markdown"].read_text()
    lines = section(markdown, "## 2-D physics")
    assert not rows(lines) and any("could not read metrics.json" in line for line in lines)
