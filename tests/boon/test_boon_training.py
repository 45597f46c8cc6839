"""BOON training on tiny problems: machine-level boundary error throughout, runner files, ensemble."""

import json

import pytest
import torch

from probcons.backbones.boon_ensemble import BoonEnsemble, conserve, heat_constraints
from probcons.boon.training import TrainingConfig, evaluate, train_model
from probcons.operator_runner import BACKBONES, run_operator_problem
from probcons.operators import load_operator
from probcons.problems.operators import OPERATOR_PROBLEMS, make_problem

torch.set_num_threads(1)

TINY = TrainingConfig(
    modes=6, width=8, layers=2, padding=4, projection_width=16, epochs=3, batch_size=8
)


@pytest.fixture(scope="module")
def heat():
    problem = make_problem("heat-neumann", n_x=33, n_times=3)
    generator = torch.Generator().manual_seed(0)
    return problem, problem.generate(24, generator), problem.generate(6, generator)


def test_boon_boundary_error_stays_at_machine_level_while_training(heat):
    problem, train, test = heat
    errors = []

    def record(epoch, model):
        model.eval()
        errors.append(evaluate(model, "boon", problem, test))
        model.train()

    train_model("boon", problem, train, TINY, seed=1, callback=record)
    assert len(errors) == TINY.epochs
    for metrics in errors:
        assert metrics["boundary_error"] < 1e-10
        assert metrics["boundary_error_f32"] < 1e-3  # differences over h = 1/32 in float32


def test_fno_trains_and_violates_the_condition(heat):
    problem, train, test = heat
    model, seconds = train_model("fno", problem, train, TINY, seed=1)
    metrics = evaluate(model, "fno", problem, test)
    assert seconds > 0 and metrics["boundary_error"] > 1e-3
    assert 0 <= metrics["error_share_left"] <= 1


@pytest.mark.parametrize("name", sorted(OPERATOR_PROBLEMS))
def test_every_problem_generates_well_posed_data_that_meets_its_condition(name):
    problem = make_problem(name, n_x=17, n_times=2)
    data = problem.generate(3, torch.Generator().manual_seed(2))
    assert data.inputs.shape == (3, 1, 17) and data.targets.shape == (3, 2, 17)
    residual = problem.condition.residual(data.targets, data.boundary)
    assert float(residual.abs().max()) < 1e-9


def test_runner_writes_metrics_and_loadable_checkpoint(tmp_path):
    result = run_operator_problem(
        "stokes",
        "boon-fno",
        tmp_path,
        seed=0,
        n_train=8,
        n_test=4,
        n_x=17,
        n_times=2,
        config=TINY,
        epochs=1,
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["metrics"]["boundary_error"] < 1e-10
    assert result["metrics"]["rel_l2"] == written["metrics"]["rel_l2"]
    assert load_operator(tmp_path / "model.pt").hyperparameters["width"] == TINY.width
    assert (tmp_path / "boundary.png").stat().st_size > 0


def test_runner_calibrates_the_boon_ensemble_on_held_out_samples(tmp_path):
    result = run_operator_problem(
        "heat-neumann",
        "boon-ensemble",
        tmp_path,
        n_train=8,
        n_test=4,
        n_x=17,
        n_times=2,
        config=TINY,
        epochs=1,
        members=2,
        figure=False,
    )
    metrics = result["metrics"]
    assert metrics["noise_variance"] > 1e-8  # raised above the floor by the held-out errors
    assert 0.0 <= metrics["coverage_90"] <= 1.0
    assert metrics["boundary_error"] < 1e-3  # float32 members, Neumann rows over h


def test_runner_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="problem"):
        run_operator_problem("navier-stokes", "fno", tmp_path)
    with pytest.raises(ValueError, match="backbone"):
        run_operator_problem("stokes", "unet", tmp_path)
    assert set(BACKBONES) == {"fno", "fno-bc", "boon-fno", "boon-ensemble"}


def test_probabilistic_boon_with_conservation_satisfies_both(heat):
    problem, train, test = heat
    ensemble = BoonEnsemble.train(problem, train, TINY, members=3, seed=0)
    for index, prediction in enumerate(ensemble.predict(test.subset(slice(0, 2)))):
        conservation, boundary = heat_constraints(problem, test, index)
        assert float(boundary.residual(prediction.mean).abs().max()) < 1e-3  # float32 members
        posterior = conserve(prediction, [conservation, boundary])
        assert float(conservation.residual(posterior.mean).abs().max()) < 1e-6
        assert float(boundary.residual(posterior.mean).abs().max()) < 1e-9
        draws = posterior.sample(4, torch.Generator().manual_seed(0))
        assert float(conservation.residual(draws).abs().max()) < 1e-6


def test_calibrated_noise_variance_recovers_the_missing_variance():
    from probcons.backbones.boon_ensemble import calibrated_noise_variance

    generator = torch.Generator().manual_seed(3)
    members = torch.randn(4, 200, 50, generator=generator, dtype=torch.float64) * 0.1
    spread = members.var(0, unbiased=True)
    missing = 0.05
    noise = torch.randn(200, 50, generator=generator, dtype=torch.float64)
    targets = members.mean(0) + (spread + missing).sqrt() * noise
    found = calibrated_noise_variance(members, targets)
    assert abs(found / missing - 1) < 0.05
    # brute force over a grid of log s: the bounded search finds the same maximiser
    grid = torch.logspace(-4, 0, 2001, dtype=torch.float64)
    squared = (members.mean(0) - targets) ** 2
    nll = torch.stack([((spread + s).log() + squared / (spread + s)).sum() for s in grid])
    assert abs(found / float(grid[nll.argmin()]) - 1) < 0.01


def test_over_dispersed_ensemble_keeps_the_floor_and_bad_shapes_raise():
    from probcons.backbones.boon_ensemble import calibrated_noise_variance

    members = torch.tensor([[0.0, 0.0], [2.0, -2.0], [-2.0, 2.0]], dtype=torch.float64)[..., None]
    targets = torch.zeros(2, 1, dtype=torch.float64)
    assert calibrated_noise_variance(members, targets, floor=1e-6) == 1e-6
    with pytest.raises(ValueError, match="members"):
        calibrated_noise_variance(members[:1], targets)
    with pytest.raises(ValueError, match="floor"):
        calibrated_noise_variance(members, targets, floor=0.0)


def test_insulator_figure_reads_the_neumann_data(heat, tmp_path):
    from probcons.boon.figures import boundary_derivatives, plot_insulator

    problem, _, test = heat
    derivatives = boundary_derivatives(problem, test.targets)
    assert torch.allclose(derivatives, test.boundary, atol=1e-9)
    path = tmp_path / "insulator.png"
    plot_insulator(problem, test, {"truth again": test.targets}, path)
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="problem"):
        boundary_derivatives(make_problem("stokes", n_x=17, n_times=2), test.targets)


def test_the_overwrite_only_ablation_trains_and_stays_exact(heat):
    problem, train, test = heat
    full, _ = train_model("boon", problem, train, TINY, seed=0)
    ablation, _ = train_model("boon", problem, train, TINY, seed=0, correct_layers=False)
    assert full.correct_layers and not ablation.correct_layers
    assert evaluate(ablation, "boon", problem, test)["boundary_error"] < 1e-10


def gradient_norms_seen_by_adam(monkeypatch, heat, config):
    """Global gradient 2-norm at every optimizer step of a BOON training run."""
    norms = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        grads = [
            p.grad for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(self, *args, **kwargs)

    problem, train, _ = heat
    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", recording_step)
        train_model("boon", problem, train, config, seed=1)
    return norms


def test_gradients_are_clipped_to_the_configured_norm(monkeypatch, heat):
    from dataclasses import replace

    free = gradient_norms_seen_by_adam(monkeypatch, heat, replace(TINY, grad_clip=None))
    clip = 0.5 * min(free)
    clipped = gradient_norms_seen_by_adam(monkeypatch, heat, replace(TINY, grad_clip=clip))
    assert len(free) == len(clipped) == TINY.epochs * 3
    assert max(clipped) <= clip * (1 + 1e-5)
    assert clipped[0] == pytest.approx(clip, rel=1e-5)  # the same first gradient, clipped
    for bad in (0, -1.0, float("inf"), True, "1"):
        with pytest.raises(ValueError, match="grad_clip"):
            replace(TINY, grad_clip=bad)


def test_correction_warmup_ramps_the_strength_linearly_then_holds_one():
    from dataclasses import replace

    config = replace(TINY, epochs=4, correction_warmup=0.5)  # 12 steps, N_w = 6
    strengths = [config.correction_strength(step, 3) for step in range(12)]
    assert strengths == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6] + [1.0] * 7)
    off = replace(config, correction_warmup=0.0)
    assert [off.correction_strength(step, 3) for step in range(12)] == [1.0] * 12
    for bad in (-0.1, 1.0, 2, True, "0.2", None):
        with pytest.raises(ValueError, match="correction_warmup"):
            replace(TINY, correction_warmup=bad)


def test_training_applies_the_warmup_and_returns_the_exact_correction(monkeypatch, heat):
    from dataclasses import replace

    from probcons.boon.correction import CorrectedFourierLayer

    seen = []
    forward = CorrectedFourierLayer.forward

    def recording_forward(self, v, n=None, strength=1.0):
        if self.training:
            seen.append(strength)
        return forward(self, v, n, strength)

    problem, train, test = heat
    config = replace(TINY, correction_warmup=0.5)  # 3 epochs of 3 steps: N_w = 5
    with monkeypatch.context() as patch:
        patch.setattr(CorrectedFourierLayer, "forward", recording_forward)
        model, _ = train_model("boon", problem, train, config, seed=1)
    assert seen[:: TINY.layers] == seen[1 :: TINY.layers]  # every layer, the same strength
    seen = seen[:: TINY.layers]
    assert seen == pytest.approx([config.correction_strength(step, 3) for step in range(9)])
    assert seen[0] == pytest.approx(0.2) and seen[-1] == 1.0
    assert model.correction_strength == 1.0
    assert evaluate(model, "boon", problem, test)["boundary_error"] < 1e-10
