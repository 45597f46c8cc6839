"""The 2-D physics scores of a 2-D ensemble run (cavity, wave2d), read from its metrics.json.

A run whose method files mark x as a flattened 2-D field (`is_flat_2d`) stores each slice's
C n^2 positions along one axis. The report's pointwise scores hold on that axis; scores that
need the 2-D layout (walls, circulation, mass balance) are computed by the run on the
(t, C, n, n) field in float64 (`probcons.operator_runner.ensemble2d_scores`) and stored in
metrics.json as {method: {key: mean over test trajectories, key_se: standard error}}. This
module reads them back: the numbers `probcons run` prints, the same whether the report is
written by the run or later from the folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

METRICS_FILE = "metrics.json"
SCORE_COLUMNS = (  # (key in metrics.json, column header)
    ("rel_l2", "rel. L2"),
    ("crps", "CRPS (Gaussian)"),
    ("coverage_90", "Cov 90% (Gaussian)"),
    ("boundary_error", "Boundary error (f64)"),
)
PHYSICS_COLUMNS = {  # key in metrics.json -> (column header, meaning)
    "circulation_residual": (
        "Circulation residual",
        "max over predicted slices of |integral of omega + U L| of the cavity's predictive mean "
        "(vorticity omega = v_x - u_y, trapezoid weights): Stokes' theorem with the no-slip "
        "walls and the lid (speed U, side L) gives integral of omega = -U L, so the wall rows "
        "imply it; it is reported, not conditioned on",
    ),
    "balance_residual": (
        "Balance residual",
        "max over predicted slices of |M(t) - M(0)| of the 2-D wave's predictive mean, M the "
        "mass q^T U q on the solver's quadrature (q the left null vector of its wall-eliminated "
        "Laplacian), which the leapfrog solver with du/dn = 0 walls conserves exactly (M(0) "
        "from the initial state); probconserv conditions on it",
    ),
}
SCORES_TEXT = (
    "Scores of each method on the 2-D field (channels x n x n per slice), computed by the run in "
    "float64 and read from its metrics.json; mean (standard error) over test trajectories. "
    "rel. L2: ||m - u|| / ||u|| of the predictive mean m per predicted slice, mean over slices; "
    "CRPS (Gaussian): closed-form CRPS of the exact predictive mean and variance, mean over "
    "points (the Metrics table's CRPS and Cov are those of the stored draws); Cov 90% "
    "(Gaussian): fraction of points inside the Gaussian 90% central interval; Boundary error "
    "(f64): max over slices and wall rows of |row(m) - wall data|, the rows of the boundary "
    "condition of every channel (what BOON enforces and probconserv conditions on). The Metrics "
    "table reads each slice's positions as one axis, so it has no CE column: a sum over them is "
    "no conservation law."
)


@dataclass(frozen=True)
class Physics2dScores:
    """One run's 2-D scores: columns (key, header) and, per method, one (mean, standard error)
    per column (None where metrics.json lacks the key; the error NaN for one trajectory)."""

    columns: tuple[tuple[str, str], ...]
    rows: tuple[tuple[str, tuple[tuple[float | None, float | None], ...]], ...]

    @property
    def text(self) -> str:
        """What every column means, in one paragraph."""
        physics = [
            f"{PHYSICS_COLUMNS[key][0]}: {PHYSICS_COLUMNS[key][1]}."
            for key, _ in self.columns
            if key in PHYSICS_COLUMNS
        ]
        return " ".join([SCORES_TEXT, *physics])


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_physics2d(
    run_dir: str | os.PathLike, methods: list[str], n_functions: int, notes: list[str]
) -> Physics2dScores | None:
    """The 2-D scores of `methods` from `run_dir`/metrics.json, or None (with a line in `notes`)
    when the file is missing, unreadable or holds none of them. n_functions: the run's test
    trajectories (one: no standard error, shown as n/a as in the Metrics table)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        notes.append(f"2-D physics scores not shown: could not read {path.name} ({error})")
        return None
    found = {}
    for method in methods:
        entry = payload.get(method) if isinstance(payload, dict) else None
        if isinstance(entry, dict):
            found[method] = entry
    if not found:
        notes.append(f"2-D physics scores not shown: {path.name} has no entry for {methods}")
        return None
    physics = [key for key in PHYSICS_COLUMNS if any(key in entry for entry in found.values())]
    columns = SCORE_COLUMNS + tuple((key, PHYSICS_COLUMNS[key][0]) for key in physics)
    rows = []
    for method in methods:
        entry = found.get(method, {})
        cells = []
        for key, _ in columns:
            mean, error = _number(entry.get(key)), _number(entry.get(f"{key}_se"))
            if mean is not None and (error is None or n_functions == 1):
                error = float("nan")
            cells.append((mean, error))
        rows.append((method, tuple(cells)))
    return Physics2dScores(columns, tuple(rows))
