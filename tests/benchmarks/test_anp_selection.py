"""benchmarks/anp_selection.py: validation scores of a shipped checkpoint on a small grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from probcons.checkpoint import load_checkpoint
from probcons.problems import get_problem

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "checkpoints" / "pme-anp.pt"


@pytest.fixture(scope="module")
def selection(benchmark_script):
    return benchmark_script("anp_selection")


def test_scores_of_a_shipped_checkpoint(selection):
    functions = selection.ValidationFunctions.build(get_problem("pme"), 2, 21, 17)
    backbone = selection.load_candidate(CHECKPOINT, "pme", 2)
    scores = selection.score_checkpoint(backbone, functions, CHECKPOINT.name)
    hyperparameters = load_checkpoint(CHECKPOINT)["hyperparameters"]
    beta = hyperparameters["training"]["likelihood_beta"]
    assert len(scores["mse_probconserv_per_function"]) == len(functions.parameters)
    assert scores["label"].startswith(f"beta {beta:g}, ")
    assert scores["val_nll"] == pytest.approx(load_checkpoint(CHECKPOINT)["extra"]["val_nll"])
    assert -1 <= scores["corr_error_sd"] <= 1
    for method in selection.METHODS:
        assert scores[f"mse_{method}"] > 0
    # the ANP's mean is not conservative, so the exact projection must move it
    assert scores["mse_hardc"] != scores["mse_unconstrained"]


def test_validation_parameters_come_from_the_training_range(selection):
    problem = get_problem("pme")
    generator = torch.Generator().manual_seed(selection.VALIDATION_SEED)
    parameters = problem.sample_parameters(12, generator)
    low, high = problem.train_range
    assert bool(((parameters >= low) & (parameters <= high)).all())
    assert not set(parameters.tolist()) & {1.0, 3.0, 6.0}


def test_a_missing_checkpoint_names_the_argument(selection, capsys):
    with pytest.raises(SystemExit) as exit_info:
        selection.parse_arguments(["--problem", "pme", "no-such-file.pt"])
    assert exit_info.value.code == 2
    assert "checkpoints: 'no-such-file.pt' is not a file" in capsys.readouterr().err


def test_paired_ratio_is_a_geometric_mean_with_the_share_better(selection):
    ratio, better = selection.paired_ratio([1.0, 4.0, 2.0], [2.0, 1.0, 2.0])
    assert ratio == pytest.approx((0.5 * 4.0 * 1.0) ** (1 / 3))
    assert better == pytest.approx(1 / 3)


@pytest.mark.parametrize("case", ["other problem", "not a checkpoint"])
def test_a_checkpoint_that_does_not_fit_names_the_argument(selection, tmp_path, capsys, case):
    if case == "other problem":
        arguments = ["--problem", "stefan", str(CHECKPOINT)]
        expected = "was trained on 'pme', expected --problem 'stefan'"
    else:
        path = tmp_path / "notes.pt"
        path.write_text("not a checkpoint")
        arguments = ["--problem", "pme", str(path)]
        expected = "is not an ANP checkpoint"
    with pytest.raises(SystemExit) as exit_info:
        selection.main([*arguments, "--no-write"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("anp_selection.py: error: checkpoints: ") and expected in error
    assert error.count("\n") == 1 and "Traceback" not in error
