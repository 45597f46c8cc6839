"""The tutorials run top to bottom with small settings and convert to valid notebooks.

Each tutorial is a jupytext percent-format script. It runs as plain Python in a subprocess, in a
temporary working directory, with PROBCONS_TUTORIAL_SMALL=1 and its figures written under
PROBCONS_TUTORIAL_OUT; a failure names the cell that raised. They run in the default suite
(about a minute on one thread), so CI executes every tutorial.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
TUTORIAL_LIMIT_S = 120  # each tutorial, small settings, one thread
CELL_MARKER = re.compile(r"^# %%")


def _environment(out: Path) -> dict[str, str]:
    """Small settings, one thread, a headless backend, and this checkout first on the path."""
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    return {
        **os.environ,
        "PROBCONS_TUTORIAL_SMALL": "1",
        "PROBCONS_TUTORIAL_OUT": str(out),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": path,
    }


def _failing_cell(path: Path, stderr: str) -> str:
    """'cell k (line n): <code>' for the deepest frame in `path`; k counts all cells from 1."""
    lines = [int(n) for n in re.findall(rf'File "{re.escape(str(path))}", line (\d+)', stderr)]
    if not lines:
        return "outside the tutorial's own code"
    line = lines[-1]
    source = path.read_text().splitlines()
    cell = sum(1 for text in source[:line] if CELL_MARKER.match(text))
    return f"cell {cell} (line {line}): {source[line - 1].strip()}"


def test_there_are_six_tutorials_in_order():
    names = [path.name for path in TUTORIALS]
    assert names == [
        "01_quickstart.py",
        "02_stefan_shock.py",
        "03_boon_heat.py",
        "04_calibration.py",
        "05_your_own_grid.py",
        "06_your_own_pde.py",
    ]
    readme = (ROOT / "tutorials" / "README.md").read_text()
    positions = [readme.index(name) for name in names]
    assert positions == sorted(positions), "tutorials/README.md lists them out of order"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_runs_with_small_settings(path, tmp_path):
    out = tmp_path / "figures"
    try:
        result = subprocess.run(
            [sys.executable, str(path)],
            cwd=tmp_path,
            env=_environment(out),
            capture_output=True,
            text=True,
            timeout=TUTORIAL_LIMIT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name} ran longer than {TUTORIAL_LIMIT_S} s with small settings")
    if result.returncode != 0:
        pytest.fail(
            f"{path.name} failed in {_failing_cell(path, result.stderr)}\n"
            f"--- stdout (end) ---\n{result.stdout[-2000:]}\n"
            f"--- stderr (end) ---\n{result.stderr[-4000:]}"
        )
    figures = sorted(out.glob(f"{path.stem[:2]}_*.png"))
    assert figures, f"{path.name} wrote no figure into PROBCONS_TUTORIAL_OUT"
    assert all(figure.stat().st_size > 1000 for figure in figures)
    assert not list(tmp_path.glob("tutorials")), "wrote outside PROBCONS_TUTORIAL_OUT"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_converts_to_a_valid_notebook(path, tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and kinds.count("code") >= 3 and kinds.count("markdown") >= 3
    # The command tutorials/README.md gives, into a temporary folder.
    target = tmp_path / f"{path.stem}.ipynb"
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--to", "ipynb", "--output", str(target), str(path)],
        check=True,
        capture_output=True,
    )
    written = nbformat.read(target, as_version=4)
    nbformat.validate(written)
    assert len(written.cells) == len(notebook.cells)
    assert written.metadata["kernelspec"]["name"] == "python3"
