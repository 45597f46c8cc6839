"""The training engine: schedules, checkpoint layout, resume equal to an uninterrupted run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.errors import UsageError
from probcons.training import engine


class Regression(engine.TrainingTask):
    """Least squares y = w x + noise on fresh batches from the task's generator."""

    uses_global_rng = True
    grad_clip = 10.0

    def __init__(self, steps: int = 6, width: int = 3):
        self.steps, self.width = steps, width
        self.generator = torch.Generator().manual_seed(5)

    @property
    def total_steps(self) -> int:
        return self.steps

    def build(self) -> nn.Module:
        return nn.Linear(self.width, 1)

    def loss(self, network, step):
        x = torch.randn(4, self.width, generator=self.generator)
        y = x.sum(1, keepdim=True) + 0.1 * torch.randn(4, 1)  # global stream too
        loss = ((network(x) - y) ** 2).mean()
        return loss, {"loss": float(loss.detach())}

    def learning_rate(self, step: int) -> float:
        return engine.cosine_decay(0.1, step / self.steps, 0.1)

    def hyperparameters(self) -> dict:
        return {"width": self.width}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load(self, state, extra) -> None:
        self.generator.set_state(state["generator"])


def test_schedules():
    assert engine.cosine_decay(2.0, 0.0, 0.1) == pytest.approx(2.0)
    assert engine.cosine_decay(2.0, 1.0, 0.1) == pytest.approx(0.2)
    assert engine.cosine_decay(2.0, 0.5, 0.0) == pytest.approx(1.0)
    assert engine.step_decay(1.0, 3, 0.5) == 0.125
    assert engine.step_decay(1e-3, 0, 0.3) == 1e-3


def test_checkpoint_layout(tmp_path):
    path = tmp_path / "run.pt"
    engine.train(Regression(), seed=1, checkpoint=path, checkpoint_every=2)
    payload = load_checkpoint(path)
    assert set(payload["state"]) == {"model", "optimizer", "generator", "rng_torch"}
    assert payload["hyperparameters"] == {"width": 3}
    assert payload["extra"]["step"] == 6
    assert math.isfinite(payload["extra"]["seconds"])


def test_resume_equals_uninterrupted(tmp_path):
    whole, steps, _ = engine.train(Regression(), seed=1)
    assert steps == 6
    path = tmp_path / "run.pt"
    _, first, _ = engine.train(Regression(), seed=1, checkpoint=path, max_steps=4)
    torch.manual_seed(123)  # the caller's global stream is restored from the checkpoint
    resumed, done, _ = engine.train(Regression(), seed=1, checkpoint=path, resume=True)
    assert (first, done) == (4, 6)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_resume_refuses_another_run(tmp_path):
    path = tmp_path / "run.pt"
    engine.train(Regression(), seed=1, checkpoint=path, max_steps=2)
    with pytest.raises(UsageError, match="checkpoint"):
        engine.train(Regression(width=2), seed=1, checkpoint=path, resume=True)


def test_isolate_seed_leaves_the_global_stream():
    class Local(Regression):
        uses_global_rng = False

        def loss(self, network, step):
            x = torch.randn(4, self.width, generator=self.generator)
            return ((network(x) - x.sum(1, keepdim=True)) ** 2).mean(), {}

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    engine.train(Local(), seed=1, isolate_seed=True)
    assert torch.equal(torch.rand(3), expected)


def test_resume_reads_the_wall_seconds_of_an_anp_checkpoint_from_before_the_engine(tmp_path):
    """ANP last.pt files written by the trainer's own loop name the wall seconds train_seconds."""
    path = tmp_path / "run.pt"
    engine.train(Regression(), seed=1, checkpoint=path, max_steps=4)
    payload = load_checkpoint(path)
    extra = dict(payload["extra"])
    extra["train_seconds"] = extra.pop("seconds") + 100.0
    save_checkpoint(path, payload["state"], payload["hyperparameters"], extra)
    _, done, clock = engine.train(Regression(), seed=1, checkpoint=path, resume=True)
    assert done == 6 and clock.seconds >= 100.0
