"""benchmarks/main_job.py: a --quick run prints its table and writes the JSON record."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def main_job(benchmark_script):
    return benchmark_script("main_job")


def test_quick_run_writes_every_key(main_job, tmp_path, capsys):
    out = tmp_path / "main_job.json"
    main_job.main(["--quick", "--threads", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "machine:" in printed and "| decode |" in printed and "plain Woodbury" in printed
    result = json.loads(out.read_text())
    assert {"command", "quick", "machine", "targets", "startup", "job", "floors"} <= set(result)
    assert result["quick"] is True
    assert {"cpu", "cores_visible", "torch_threads", "torch", "numpy"} <= set(result["machine"])
    assert set(result["startup"]) == {"help_s", "import_s"}
    job = result["job"]
    assert set(job["phases_s"]) == set(main_job.PHASES)
    assert sum(job["phases_s"].values()) == pytest.approx(job["wall_s"], rel=1e-6)
    assert "| probconserv |" in job["table"]
    assert set(result["floors"]) == {"decode_s", "sampling_s"}
    for row in result["sampling"]:
        assert {"n", "draws", "ours_s", "randn_s", "ratio"} <= set(row)
    lowrank = result["lowrank"]
    assert {"ours_s", "plain_s", "time_ratio", "ours_peak_mb", "plain_peak_mb"} <= set(lowrank)
    assert lowrank["relative_difference"] < 1e-10  # the plain Woodbury update agrees


def test_bad_arguments_are_refused(main_job):
    with pytest.raises(SystemExit):
        main_job.parse_arguments(["--threads", "0"])
