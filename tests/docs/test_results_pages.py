"""The generated tables of docs/results/*.md equal what benchmarks/results_pages.py makes from
benchmarks/results/*.json, the generator rewrites only its marked regions, and the published
numbers in benchmarks/published/ say where each comes from (or why a cell is missing)."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "results_pages.py"
DOCS = ROOT / "docs" / "results"
PUBLISHED = ROOT / "benchmarks" / "published"
MARKER = re.compile(r"<!-- generated: ([a-z0-9-]+) -->")
PAGES = (
    "gpme.md",
    "end-to-end.md",
    "boon.md",
    "boon-2d.md",
    "boon-2d-ensemble.md",
    "calibration.md",
    "main-job.md",
    "paper-comparison.md",
    "anp-training.md",
    "conditioning-at-scale.md",
    "beyond-linear.md",
)
REGION = re.compile(r"<!-- generated: ([a-z0-9-]+) -->\n(.*?)<!-- end generated -->", re.S)


def generate(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def copied_pages(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    for page in PAGES:
        shutil.copy(DOCS / page, folder / page)
    return folder


def test_committed_pages_equal_their_json():
    result = generate("--check")
    assert result.returncode == 0, result.stderr + result.stdout


def test_every_result_page_has_generated_tables():
    for page in PAGES:
        assert MARKER.search((DOCS / page).read_text()), f"{page} has no generated region"


def test_a_changed_cell_is_found_and_only_the_regions_are_rewritten(copied_pages):
    page = copied_pages / "boon-2d.md"
    committed = page.read_text()
    prose_before, _, rest = committed.partition("<!-- generated: boon2d -->")
    _, _, prose_after = rest.partition("<!-- end generated -->")
    edited = committed.replace("| cavity | BOON | 0.064 |", "| cavity | BOON | 0.065 |")
    assert edited != committed
    page.write_text(edited)
    (copied_pages / "notes.md").write_text("not a results page\n")
    check = generate("--check", "--docs", str(copied_pages))
    assert check.returncode == 1
    assert "boon-2d.md: boon2d" in check.stderr and "gpme" not in check.stderr
    assert page.read_text() == edited  # --check writes nothing
    rewrite = generate("--docs", str(copied_pages))
    assert rewrite.returncode == 0, rewrite.stderr
    assert page.read_text() == committed
    again = page.read_text()
    assert again.startswith(prose_before) and again.endswith(prose_after)
    assert (copied_pages / "notes.md").read_text() == "not a results page\n"


def test_a_page_without_its_marker_is_an_error(copied_pages):
    page = copied_pages / "main-job.md"
    text = page.read_text()
    page.write_text(text.replace("<!-- generated: main-job -->", "<!-- generated: main-jobs -->"))
    try:
        result = generate("--check", "--docs", str(copied_pages))
    finally:
        page.write_text(text)
    assert result.returncode != 0
    assert "main-jobs" in result.stderr + result.stdout


def test_every_generated_region_names_its_json_command_machine_and_protocol():
    for page in PAGES:
        text = (DOCS / page).read_text()
        for match in re.finditer(
            r"<!-- generated: ([a-z0-9-]+) -->\n(.*?)<!-- end generated -->", text, re.S
        ):
            name, body = match[1], match[2]
            assert "benchmarks/results/" in body and ".json" in body, (page, name)
            assert "written by `" in body and "machine: " in body, (page, name)
            if page in (
                "gpme.md",
                "end-to-end.md",
                "main-job.md",
                "calibration.md",
                "anp-training.md",
                "conditioning-at-scale.md",
            ):
                assert "protocol" in body, (page, name)


def test_every_result_json_is_read_by_a_region_or_says_why_not():
    """A JSON under benchmarks/results is named by the provenance line of some generated region,
    or listed in the script's NOT_GENERATED with the reason."""
    spec = importlib.util.spec_from_file_location("results_pages", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    named = set()
    for page in DOCS.glob("*.md"):
        for _, body in REGION.findall(page.read_text()):
            named |= set(re.findall(r"benchmarks/results/([a-z0-9_]+\.json)", body))
    stored = {path.name for path in (ROOT / "benchmarks" / "results").glob("*.json")}
    listed = set(script.NOT_GENERATED)
    assert not stored - named - listed, stored - named - listed  # neither read nor explained
    assert not listed & named, listed & named  # read by a region, yet listed as not read
    assert all(reason.strip() for reason in script.NOT_GENERATED.values())


def _cells(table: dict):
    for method, row in table["rows"].items():
        for metric, cell in row.items():
            yield method, metric, cell


def test_published_numbers_say_where_they_come_from():
    probconserv = json.loads((PUBLISHED / "probconserv.json").read_text())
    boon = json.loads((PUBLISHED / "boon.json").read_text())
    for paper in (probconserv, boon):
        assert paper["paper"] and paper["transcribed_from"]
        for table in paper["tables"]:
            assert "table" in table and "page" in table, table
            if table["page"] is None and table.get("rows") is not None:
                assert table["page_reason"]
            if table.get("rows") is None:
                assert table["reason"], table
    table_1 = next(t for t in probconserv["tables"] if t["table"] == 1)
    assert table_1["problem"] == "diffusion" and table_1["note"].endswith("t* = 0.5")
    for method, metric, cell in _cells(table_1):
        assert cell["mean"] is not None, (method, metric)
        assert cell["se"] is not None or cell["se_reason"], (method, metric)
    # REFERENCE section 3, Table 1, as transcribed (units: CE x1e-3, MSE x1e-4)
    assert table_1["rows"]["probconserv-anp"]["ll"] == {"mean": 2.74, "se": 0.02}
    assert table_1["rows"]["anp"]["mse"] == {"mean": 1.71, "se": 0.41}
    assert table_1["units"] == {"ce": 0.001, "ll": 1, "mse": 0.0001}
    missing = {t["problem"] for t in probconserv["tables"] if t["rows"] is None}
    assert missing == {"pme", "stefan"}


def test_paper_protocol_json_reproduces_the_whole_grid_rows_of_gpme_json():
    """The paper-protocol recomputation uses the same predictions as gpme.json: with the same
    functions its whole-grid MSE and LL equal gpme.json's rows (CE aside: round-off there)."""
    recomputed = json.loads((ROOT / "benchmarks/results/paper_protocol.json").read_text())
    stored = json.loads((ROOT / "benchmarks/results/gpme.json").read_text())
    compared = 0
    for problem, entries in recomputed.items():
        for key, entry in entries.items():
            for method, values in entry["methods"].items():
                row = stored[problem][key][method]
                if row["protocol"]["n_functions"] != entry["protocol"]["n_functions"]:
                    continue
                assert values["mse"] == pytest.approx(row["mse"], rel=1e-6), (problem, key, method)
                assert values["ll"] == pytest.approx(row["ll"], rel=1e-6, abs=1e-6)
                assert values["paper_mse"] == pytest.approx(row["mse_t"], rel=1e-6)
                compared += 1
    assert compared > 0
