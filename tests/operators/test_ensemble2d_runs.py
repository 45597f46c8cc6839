"""2-D ensemble runs (cavity, wave2d) in the common run folder: CLI, metrics.json, `<method>.nc`,
and `probcons report` reading the folder."""

import json

import pytest
import torch

from probcons.boon.training import TrainingConfig
from probcons.boon.training2d import TrainingConfig2d, load_model2d
from probcons.cli import main
from probcons.errors import UsageError
from probcons.operator_runner import run_operator_problem
from probcons.problems import operators2d
from probcons.report.data import MethodData
from probcons.report.document import _format

torch.set_num_threads(1)

TINY = TrainingConfig2d(
    modes=3, width=4, layers=2, padding=2, projection_width=8, epochs=1, batch_size=4
)
EXACT = 1e-10


def table(markdown: str, heading: str) -> list[list[str]]:
    """The first table after `heading`: header, then rows, each a list of cells."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|---"):
            continue
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
        elif rows:
            break
    return rows


@pytest.fixture
def small_problems(monkeypatch):
    """make_problem2d on 12 x 12 nodes and 3 steps, so that a CLI run takes seconds."""
    original = operators2d.make_problem2d

    def small(name, n=50, **options):
        return original(name, n=12, n_steps=3, t_end=0.24)

    monkeypatch.setattr("probcons.operator_runner.make_problem2d", small)


def test_cli_runs_a_boon_ensemble_on_the_cavity_and_the_report_reads_it(
    small_problems, tmp_path, capsys
):
    out = tmp_path / "cavity-boon-ensemble"
    code = main(
        [
            "run",
            "cavity",
            "--backbone",
            "boon-ensemble",
            "--epochs",
            "1",
            "--n-train",
            "2",
            "--n-test",
            "2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code in (0, None)
    result = json.loads((out / "metrics.json").read_text())
    assert result["methods"] == ["unconstrained", "probconserv"]
    assert result["sizes"]["members"] == 4 and result["sizes"]["n_validation"] == 2
    for method in result["methods"]:
        assert result[method]["boundary_error"] < EXACT  # BOON's walls, before and after
        assert result[method]["circulation_residual"] < EXACT
    # conditioning on the walls removes the calibrated noise there: CRPS can only fall
    assert result["probconserv"]["crps"] <= result["unconstrained"]["crps"]
    assert result["probconserv"]["rel_l2"] == pytest.approx(result["unconstrained"]["rel_l2"])
    model, kind, problem = load_model2d(out / "member_0.pt")
    assert kind == "boon" and problem.name == "cavity"
    with MethodData(out / "probconserv.nc") as data:
        assert data.grid.shape == (3, 2 * 144) and data.n_functions == 2
    written_by_run = (out / "report.md").read_text()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) in (0, None)
    markdown = (out / "report.md").read_text()
    assert "cavity" in markdown
    physics = table(markdown, "## 2-D physics")
    assert physics == table(written_by_run, "## 2-D physics")  # the run's report, the folder's
    header = physics[0]
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in physics[1:]}
    assert header[-1] == "Circulation residual" and list(rows) == result["methods"]
    scores = result["probconserv"]
    cell = rows["probconserv"]["Circulation residual"]
    assert float(cell.split()[0]) <= EXACT
    assert cell == _format(scores["circulation_residual"], scores["circulation_residual_se"])
    assert rows["probconserv"]["rel. L2"] == _format(scores["rel_l2"], scores["rel_l2_se"])
    assert "CE" not in table(markdown, "## Metrics")[0]  # no whole-field sum posing as a CE
    assert "Circulation residual: max over predicted slices" in markdown


def test_fno_ensemble_on_the_wave_is_conditioned_on_walls_and_balance(small_problems, tmp_path):
    result = run_operator_problem(
        "wave2d",
        "fno-ensemble",
        tmp_path / "w",
        seed=1,
        n_train=2,
        n_test=2,
        config=TINY,
        members=2,
        draws=3,
        figure=False,
        report=False,
    )
    before, after = result["unconstrained"], result["probconserv"]
    assert before["boundary_error"] > 1e-6 and before["balance_residual"] > 1e-8
    assert after["boundary_error"] < EXACT and after["balance_residual"] < EXACT
    assert sorted(p.name for p in (tmp_path / "w").glob("*.nc")) == [
        "probconserv.nc",
        "unconstrained.nc",
    ]


def test_the_marginal_covariance_runs_from_the_cli_and_is_refused_elsewhere(
    small_problems, tmp_path, capsys
):
    result = run_operator_problem(
        "cavity",
        "fno-ensemble",
        tmp_path / "m",
        n_train=2,
        n_test=2,
        config=TINY,
        members=2,
        draws=2,
        figure=False,
        report=False,
        ensemble_covariance="marginal",
    )
    assert result["ensemble_covariance"] == "marginal"
    assert result["probconserv"]["boundary_error"] < EXACT
    with pytest.raises(UsageError, match="ensemble_covariance"):
        run_operator_problem(
            "heat-neumann", "boon-ensemble", tmp_path / "h", ensemble_covariance="marginal"
        )
    for argv in (
        ["run", "stefan", "--ensemble-covariance", "marginal", "--out", str(tmp_path / "s")],
        ["run", "cavity", "--ensemble-covariance", "local", "--out", str(tmp_path / "c")],
    ):
        assert main(argv) == 2
        assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()
    assert "ensemble" in capsys.readouterr().err


def test_2d_runs_refuse_a_1d_config_and_one_member(tmp_path):
    with pytest.raises(UsageError, match="config: expected a TrainingConfig2d for cavity"):
        run_operator_problem("cavity", "boon-ensemble", tmp_path / "a", config=TrainingConfig())
    with pytest.raises(UsageError, match="members: expected at least 2 for fno-ensemble, got 1"):
        run_operator_problem(
            "wave2d", "fno-ensemble", tmp_path / "b", n_train=1, n_test=1, config=TINY, members=1
        )
