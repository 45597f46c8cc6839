"""Calibration of the conditioned predictive by number of contexts: c(k), its fits, its use."""

import argparse
import math

import pytest
import torch
from training_builders import tiny_anp_config

from probcons.backbones.anp import ANPBackbone, AttentiveNeuralProcess
from probcons.backbones.context_scale import ContextCountScales
from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.problems import get_problem, sample_contexts
from probcons.training.calibration import calibrate_checkpoint, store_calibration
from probcons.training.command import add_calibrate_arguments, calibrate_command
from probcons.training.conditioned_calibration import (
    calibrate_conditioned,
    fit_coverage_scale,
)
from probcons.training.constrained_scores import conditioned_slices, slice_scores
from probcons.training.trainer import Z_90

SMALL = dict(counts=(1, 4), n_functions=3, samples=3, slices=2, points=11)


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny untrained Stefan ANP written as a training checkpoint."""
    problem = get_problem("stefan")
    torch.manual_seed(5)
    config = tiny_anp_config(problem)
    network = AttentiveNeuralProcess(config).network
    path = tmp_path / "tiny.pt"
    hyper = {"problem": "stefan", "anp": config.to_dict(), "training": {"seed": 2}}
    save_checkpoint(path, {"network": network.state_dict()}, hyper, {})
    return path


def test_count_scales_interpolate_in_log_log_and_hold_beyond_the_ends():
    scales = ContextCountScales((1, 4, 16), (40.0, 4.0, 0.5))
    assert [scales(k) for k in (1, 4, 16)] == [40.0, 4.0, 0.5]
    assert scales(100) == 0.5
    # halfway in log k between two counts: the geometric mean of their scales
    assert scales(2) == pytest.approx(math.sqrt(40.0 * 4.0), rel=1e-12)
    assert scales(8) == pytest.approx(math.sqrt(4.0 * 0.5), rel=1e-12)
    assert ContextCountScales.from_dict(scales.to_dict()) == scales
    for counts, values, name in (
        ((10, 1), (1.0, 1.0), "counts"),
        ((0, 1), (1.0, 1.0), "counts"),
        ((1, 2), (1.0, -1.0), "scales"),
        ((1, 2), (1.0,), "counts, scales"),
    ):
        with pytest.raises(UsageError, match=name):
            ContextCountScales(counts, values)
    with pytest.raises(UsageError, match="k"):
        scales(0)


def test_coverage_scale_is_the_least_covering_scale():
    generator = torch.Generator().manual_seed(1)
    means = torch.randn(4, 500, generator=generator, dtype=torch.float64)
    variances = torch.rand(4, 500, generator=generator, dtype=torch.float64) + 0.1
    targets = 3 * torch.randn(500, generator=generator, dtype=torch.float64)
    scale = fit_coverage_scale(means, variances, targets)

    def coverage(c):
        total = c * variances.mean(0) + means.var(0, unbiased=False)
        return float(((targets - means.mean(0)).abs() <= Z_90 * total.sqrt()).double().mean())

    assert coverage(scale) >= 0.9 > coverage(scale * (1 - 1e-9))
    # one Gaussian with the right shape and a wrong size: the fit recovers the variance ratio
    truth = 2.0 * torch.randn(200_000, generator=generator, dtype=torch.float64)
    one = fit_coverage_scale(torch.zeros(1, truth.numel()), torch.ones(1, truth.numel()), truth)
    assert one == pytest.approx(4.0, rel=0.02)
    with pytest.raises(UsageError, match="means, variances, targets"):
        fit_coverage_scale(means, variances, targets[:3])


@pytest.mark.parametrize("fit", ["coverage", "likelihood"])
def test_the_stored_scales_calibrate_the_conditioned_predictive(checkpoint, fit):
    calibration = calibrate_conditioned(checkpoint, **SMALL, fit=fit)
    extra = load_checkpoint(checkpoint)["extra"]
    assert extra["count_scales"] == {"counts": [1, 4], "scales": list(calibration.scales)}
    assert extra["conditioned_calibration"]["fit"] == fit
    problem = get_problem("stefan")
    plain = ANPBackbone.from_checkpoint(checkpoint, n_samples=3, count_scales=None)
    calibrated = ANPBackbone.from_checkpoint(checkpoint, n_samples=3)
    assert calibrated.count_scales == calibration.count_scales
    for k, scale in zip(SMALL["counts"], calibration.scales, strict=True):
        seed = calibration.seed
        held_out = conditioned_slices(plain, problem, 3, k, 2, 11, seed)
        again = conditioned_slices(calibrated, problem, 3, k, 2, 11, seed)
        # a scale on the decoder's variance moves no conditioned mean and scales the variances
        assert torch.allclose(again.means, held_out.means, rtol=0, atol=1e-12)
        assert torch.allclose(again.variances, scale * held_out.variances, rtol=1e-10)
        assert again.conservation <= 1e-10
        after = slice_scores(again)
        assert after == pytest.approx(calibration.after[str(k)], rel=1e-9)
        if fit == "coverage":
            assert after["coverage_90"] >= 0.9
        else:  # the likelihood's maximiser: no neighbouring scale does better
            for nearby in (0.9, 1.1):
                assert slice_scores(held_out, scale * nearby)["nll"] >= after["nll"] - 1e-9


def test_predict_scales_by_the_number_of_contexts(checkpoint):
    problem = get_problem("stefan")
    scales = ContextCountScales((1, 100), (9.0, 0.25))
    plain = ANPBackbone.from_checkpoint(checkpoint, n_samples=2, count_scales=None)
    scaled = ANPBackbone.from_checkpoint(checkpoint, n_samples=2, count_scales=scales)
    grid = Grid(torch.tensor([0.1, 0.2], dtype=torch.float64), torch.linspace(0, 1, 5))
    contexts = sample_contexts(problem, 0.6, torch.Generator().manual_seed(0))
    for keep in (1, len(contexts.u)):
        subset = type(contexts)(contexts.t[:keep], contexts.x[:keep], contexts.u[:keep])
        draws = [torch.Generator().manual_seed(3) for _ in range(2)]
        base = plain.predict(problem, 0.6, subset, grid, draws[0])
        other = scaled.predict(problem, 0.6, subset, grid, draws[1])
        assert torch.equal(other.means, base.means)
        assert torch.allclose(other.variances, scales(keep) * base.variances, rtol=1e-12)


def test_an_unconditioned_calibration_replaces_the_count_scales(checkpoint):
    calibrate_conditioned(checkpoint, **SMALL)
    store_calibration(checkpoint, calibrate_checkpoint(checkpoint, n_functions=4, samples=2))
    extra = load_checkpoint(checkpoint)["extra"]
    assert "count_scales" not in extra and "conditioned_calibration" not in extra
    assert ANPBackbone.from_checkpoint(checkpoint).count_scales is None


def test_the_command_calibrates_and_refuses_bad_counts(checkpoint, capsys):
    parser = add_calibrate_arguments(argparse.ArgumentParser())
    before = checkpoint.read_bytes()
    common = [str(checkpoint), "--conditioned", "--functions", "2", "--samples", "2"]
    for counts in ("10,1", "1,x", "0,3"):
        with pytest.raises(UsageError, match="counts"):
            calibrate_command(parser.parse_args(common + ["--counts", counts]))
    assert checkpoint.read_bytes() == before  # nothing written
    assert calibrate_command(parser.parse_args(common + ["--counts", "1,2", "--dry-run"])) == 0
    assert checkpoint.read_bytes() == before
    assert calibrate_command(parser.parse_args(common + ["--counts", "1,2"])) == 0
    assert "k = 2: c" in capsys.readouterr().out
    assert load_checkpoint(checkpoint)["extra"]["count_scales"]["counts"] == [1, 2]
