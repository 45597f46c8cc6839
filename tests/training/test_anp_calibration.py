"""benchmarks/anp_calibration.py: the three variance models of a shipped checkpoint, scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from probcons.backbones.anp import ANPBackbone
from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.problems import get_problem

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "models" / "checkpoints" / "pme-anp.pt"


@pytest.fixture(scope="module")
def calibration(benchmark_script):
    return benchmark_script("anp_calibration")


def test_variance_models_take_the_stored_calibration(calibration):
    models = calibration.VarianceModels.load(CHECKPOINT, 2)
    extra = load_checkpoint(CHECKPOINT)["extra"]
    assert (models.backbone.variance_scale, models.backbone.context_exponent) == (1.0, 0.0)
    assert models.settings == {
        "as trained": (1.0, 0.0),
        "scalar": (extra["calibration"]["scalar_scale"], 0.0),
        "context": (
            extra["calibration"]["context_scale"],
            extra["calibration"]["context_fit_exponent"],
        ),
    }


def test_scores_per_model_and_third(calibration):
    problem = get_problem("pme")
    functions = calibration.ValidationFunctions.build(problem, 3, 21, 17)
    scores = calibration.score_models(calibration.VarianceModels.load(CHECKPOINT, 2), functions)
    assert set(scores) == set(calibration.MODELS)
    for subsets in scores.values():
        assert subsets["all"]["n"] == 3
        assert sum(subsets[s]["n"] for s in calibration.SUBSETS[1:]) == 3
        assert 0 <= subsets["all"]["coverage_90_probconserv"] <= 1
    # the same draws, different variances: the log-likelihoods differ
    assert scores["as trained"]["all"]["ll_unconstrained"] != pytest.approx(
        scores["context"]["all"]["ll_unconstrained"]
    )
    table = calibration.table("pme", {"anp": scores})
    assert table.count("| anp |") == len(calibration.MODELS)


@pytest.mark.parametrize("model", ["scalar", "context"])
def test_one_decoder_pass_rescaled_is_the_calibrated_backbone(calibration, model):
    """The script scores each variance model from one decoder pass: that must be exactly the
    prediction of a backbone built with the model's (s0, gamma)."""
    models = calibration.VarianceModels.load(CHECKPOINT, 3)
    scale, exponent = models.settings[model]
    problem = get_problem("pme")
    functions = calibration.ValidationFunctions.build(problem, 1, 9, 11)
    arguments = (problem, functions.parameters[0], functions.contexts[0], functions.grid)
    draws = models.backbone.decoder_draws(*arguments, torch.Generator().manual_seed(4))
    rescaled = draws.mixture(scale * draws.context_factor**exponent)
    calibrated = ANPBackbone(
        models.backbone.network, n_samples=3, variance_scale=scale, context_exponent=exponent
    ).predict(*arguments, torch.Generator().manual_seed(4))
    assert torch.equal(rescaled.means, calibrated.means)
    assert torch.equal(rescaled.variances, calibrated.variances)
    assert not torch.allclose(rescaled.variances, draws.mixture().variances)


def test_thirds_of_the_training_range(calibration):
    assert calibration.third(1.0, (1.0, 4.0)) == "low third"
    assert calibration.third(2.5, (1.0, 4.0)) == "middle third"
    assert calibration.third(4.0, (1.0, 4.0)) == "high third"


def test_a_checkpoint_without_context_calibration_is_named(calibration, tmp_path):
    payload = load_checkpoint(CHECKPOINT)
    extra = dict(payload["extra"])
    extra["calibration"] = {k: v for k, v in extra["calibration"].items() if k != "context_scale"}
    old = tmp_path / "old.pt"
    save_checkpoint(old, payload["state"], payload["hyperparameters"], extra)
    with pytest.raises(ValueError, match="checkpoint: .*no context calibration"):
        calibration.VarianceModels.load(old, 2)


def test_an_unknown_problem_names_the_argument(calibration, capsys):
    with pytest.raises(SystemExit) as exit_info:
        calibration.parse_arguments(["--problems", "stefan,heat"])
    assert exit_info.value.code == 2
    assert "--problems: expected names from stefan, diffusion, pme, got 'heat'" in (
        capsys.readouterr().err
    )
