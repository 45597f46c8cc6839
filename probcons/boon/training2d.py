"""Training and rollout evaluation of FNO, FNO with boundary-data channels, and BOON in 2-D.

Every model makes one time step in increment form, u_{k+1} = u_k + f(a) with a the input states
(newest first), so the three kinds differ only in f's inputs and in the boundary treatment:
- "fno":     f = FNO2d(a)
- "fno-bc":  f = FNO2d([a, b]), b (C channels) the target's boundary data written on the boundary
             nodes (Dirichlet values; Neumann data at the anchor nodes), zero inside
- "boon":    BoonFNO2d([a, b]) (same inputs as fno-bc), kernel-corrected layers alternating
             x-sides / y-sides, exact output solve on all four sides
The last projection starts at zero (the identity step). Loss (teacher forcing): mean over samples
of the one-step error relative to the step's change, ||u - u_{k+1}|| / ||u_{k+1} - u_k||; Adam
with weight decay and a step decay of the learning rate. Evaluation rolls each test trajectory out from its first
`history` states to the last step, feeding predictions back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import probcons.training.engine as engine
from probcons import distributed
from probcons.boon.correction2d import BoonFNO2d
from probcons.boon.training import (
    OperatorTask,
    TrainingConfig,
    check_kind,
    config_dict,
    relative_l2,
)
from probcons.checkpoint import load_checkpoint
from probcons.errors import UsageError
from probcons.operators.fno import FNO2d
from probcons.problems.operators2d import OperatorProblem2d, Trajectories2d

BOUNDARY_BAND = 0.05  # fraction of the side next to each wall left out of the interior metric


@dataclass(frozen=True)
class TrainingConfig2d(TrainingConfig):
    """Reduced sizes for CPU (the paper's 3-D FNO: modes 8, width 20, 500 epochs); the fields
    and their checks are those of the 1-D `TrainingConfig`."""

    modes: int = 8
    width: int = 12
    layers: int = 4
    padding: int = 4
    projection_width: int = 32
    epochs: int = 10
    batch_size: int = 10
    learning_rate: float = 5e-3
    weight_decay: float = 1e-4
    decay_every: int = 3
    decay_factor: float = 0.5
    grad_clip: float | None = None  # the 2-D benchmark was measured without clipping
    correction_warmup: float = 0.0  # BoonFNO2d has no warm-up of its layer corrections

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.correction_warmup != 0:
            raise UsageError(
                "correction_warmup: the 2-D BOON corrects its layers at full strength from the"
                f" first step; expected 0, got {self.correction_warmup!r}"
            )


class IncrementFNO2d(nn.Module):
    """u = a[:, :out] + operator(a): the unconstrained one-step models."""

    def __init__(self, operator: FNO2d) -> None:
        super().__init__()
        self.operator = operator

    @property
    def hyperparameters(self) -> dict:
        return {**self.operator.hyperparameters, "skip": True}

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        out = self.operator(a)
        return a[:, : out.shape[1]] + out


def boundary_field(problem: OperatorProblem2d, targets: torch.Tensor) -> torch.Tensor:
    """(B, C, n, n): the boundary data of `targets` on the anchor nodes, zero elsewhere."""
    field = torch.zeros_like(targets)
    data = problem.boundary_data(targets)
    if data is None:
        return field
    for axis, values in enumerate(data):
        condition = problem.condition.along(axis)
        _, anchors = condition.rows(problem.n)
        for k, anchor in enumerate(anchors):
            if axis == 0:
                field[:, :, anchor, :] = values[:, :, k, :]
            else:
                field[:, :, :, anchor] = values[:, :, k, :]
    return field


def build_model2d(kind: str, problem: OperatorProblem2d, config: TrainingConfig2d) -> nn.Module:
    """An untrained one-step model of `kind` for `problem` (float32)."""
    check_kind(kind)
    c = problem.channels
    operator = FNO2d(
        problem.history * c + (0 if kind == "fno" else c),
        c,
        modes=(config.modes, config.modes),
        width=config.width,
        layers=config.layers,
        padding=config.padding,
        projection_width=config.projection_width,
    )
    with torch.no_grad():  # start from the identity step u_{k+1} = u_k
        operator.project_out.weight.zero_()
        operator.project_out.bias.zero_()
    if kind == "boon":
        return BoonFNO2d(operator, problem.condition, skip=True)
    return IncrementFNO2d(operator)


def step(
    model: nn.Module, kind: str, problem: OperatorProblem2d, a: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """One step from inputs a (B, history C, n, n); `target` only supplies the boundary data."""
    if kind == "fno":
        return model(a)
    inputs = torch.cat([a, boundary_field(problem, target).to(a.dtype)], dim=1)
    if kind == "fno-bc":
        return model(inputs)
    data = problem.boundary_data(target)
    return model(inputs, None if data is None else tuple(d.to(a.dtype) for d in data))


def step_loss(
    prediction: torch.Tensor, target: torch.Tensor, current: torch.Tensor
) -> torch.Tensor:
    """Per-sample error relative to the step's own change, ||u - u_{k+1}|| / ||u_{k+1} - u_k||, (B,)."""
    return relative_l2(prediction - current, target - current)


class OperatorTask2d(OperatorTask):
    """One-step model of `kind` on the teacher-forced pairs of `train`; per-sample loss
    `step_loss`; the epoch's mean loss is logged (summed over ranks) and checkpointed."""

    def __init__(
        self,
        kind: str,
        problem: OperatorProblem2d,
        train: Trajectories2d,
        config: TrainingConfig2d,
        seed: int = 0,
        callback=None,
    ):
        inputs, targets = problem.step_pairs(train)
        super().__init__(config, len(inputs), seed, callback)
        self.kind, self.problem = check_kind(kind), problem
        self.inputs, self.targets = inputs.float(), targets.float()
        self.epoch_sum, self.epoch_loss = 0.0, None

    def build(self) -> nn.Module:
        return build_model2d(self.kind, self.problem, self.config)

    def hyperparameters(self) -> dict:
        return {"kind": self.kind, "problem": self.problem.name, "config": config_dict(self.config)}

    def batch_loss(self, network, step_index, index):
        targets = self.targets[index]
        output = step(network, self.kind, self.problem, self.inputs[index], targets)
        return step_loss(output, targets, self.inputs[index, : self.problem.channels])

    def after_step(self, model, step, logs, clock):
        self.epoch_sum += logs["loss_sum"]  # this rank's samples
        return super().after_step(model, step, logs, clock)

    def end_epoch(self, model, epoch, logs):
        total = self.epoch_sum
        if self.world.is_distributed:  # the sum over all ranks' samples (a collective)
            total = distributed.average({"loss": total})["loss"] * self.world.size
        self.epoch_sum, self.epoch_loss = 0.0, total / self.n_samples
        return {"loss": f"{self.epoch_loss:.3e}"}

    def extra(self, model, step):
        return {"loss": self.epoch_loss}


def train_model2d(
    kind: str,
    problem: OperatorProblem2d,
    train: Trajectories2d,
    config: TrainingConfig2d,
    seed: int = 0,
    callback=None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
) -> tuple[nn.Module, float]:
    """Train a new one-step model of `kind` on all teacher-forced pairs; returns (model, seconds).

    callback(epoch, model) after each epoch; progress shows a tqdm bar over steps; checkpoint:
    a file written atomically after every epoch (`probcons.training.engine`: weights, optimizer,
    shuffle state, seconds so far) and resumed from when it exists. seconds counts training only.
    In a process group (torchrun) each mini-batch is split over the ranks
    (`distributed.split_minibatch`); rank 0 alone writes the checkpoint and shows progress.
    """
    task = OperatorTask2d(kind, problem, train, config, seed, callback)
    model, _, clock = engine.train(
        task,
        seed,
        checkpoint,
        resume=True,
        checkpoint_every=task.steps_per_epoch,
        progress=progress,
        desc=f"{problem.name} {kind}",
    )
    return model.eval(), clock.seconds


def rollout(
    model: nn.Module,
    kind: str,
    problem: OperatorProblem2d,
    data: Trajectories2d,
    dtype: torch.dtype | None = None,
    batch_size: int = 50,
) -> torch.Tensor:
    """Autoregressive prediction (n, n_steps + 1, C, n, n) float64 from the first `history` states.

    The model runs in `dtype` (default: its own; cast back afterwards).
    """
    original = next(model.parameters()).dtype
    dtype = original if dtype is None else dtype
    model.to(dtype)
    h = problem.history
    out = data.states.clone()
    try:
        with torch.no_grad():
            for begin in range(0, len(data), batch_size):
                block = slice(begin, begin + batch_size)
                states = [s.to(dtype) for s in data.states[block, :h].unbind(1)]
                for k in range(h - 1, problem.n_steps):
                    a = torch.cat(states[::-1][:h], dim=1)
                    target = data.states[block, k + 1].to(dtype)
                    nxt = step(model, kind, problem, a, target)
                    out[block, k + 1] = nxt.to(torch.float64)
                    states = states[1:] + [nxt]
    finally:
        model.to(original)
    return out


def evaluate2d(
    model: nn.Module, kind: str, problem: OperatorProblem2d, test: Trajectories2d
) -> tuple[dict, torch.Tensor]:
    """Metrics of the rollout and the float64-state prediction (n, n_steps + 1, C, n, n).

    rel_l2_per_step[k]: mean over samples of the relative L2 at t_{k+1} (steps that are predicted);
    rel_l2: their mean; rel_l2_interior: the same away from the walls (BOUNDARY_BAND);
    boundary_error / _f32: max |R u - g| over all predicted steps, model cast to float64 / float32.
    """
    prediction = rollout(model, kind, problem, test, torch.float64)
    first = problem.history
    predicted, truth = prediction[:, first:], test.states[:, first:]
    per_step = torch.stack(
        [relative_l2(predicted[:, k], truth[:, k]).mean() for k in range(predicted.shape[1])]
    )
    nodes = problem.nodes
    inside = (nodes > BOUNDARY_BAND) & (nodes < 1 - BOUNDARY_BAND)
    interior = torch.stack(
        [
            relative_l2(
                predicted[:, k][..., inside, :][..., inside],
                truth[:, k][..., inside, :][..., inside],
            ).mean()
            for k in range(predicted.shape[1])
        ]
    )

    def boundary_error(states: torch.Tensor) -> float:
        flat = states.reshape(-1, *states.shape[-3:])
        return problem.condition.residual_max(flat, problem.boundary_data(truth))

    prediction32 = rollout(model, kind, problem, test, torch.float32)
    metrics = {
        "rel_l2": float(per_step.mean()),
        "rel_l2_interior": float(interior.mean()),
        "rel_l2_final": float(per_step[-1]),
        "boundary_error": boundary_error(predicted),
        "boundary_error_f32": boundary_error(prediction32[:, first:]),
        "rel_l2_per_step": [float(e) for e in per_step],
    }
    return metrics, prediction


def load_model2d(path: str | Path) -> tuple[nn.Module, str, OperatorProblem2d]:
    """(model, kind, problem) from a `run_operator_problem2d` model.pt (weights_only load).

    The problem is rebuilt with the saved name, n, n_steps and t_end (its default solver setup).
    """
    from probcons.problems.operators2d import make_problem2d

    saved = load_checkpoint(path)
    extra = saved["extra"]
    problem = make_problem2d(
        extra["problem"], n=extra["n"], n_steps=extra["n_steps"], t_end=extra["t_end"]
    )
    model = build_model2d(extra["kind"], problem, TrainingConfig2d(**extra["config"]))
    model.load_state_dict(saved["state"])
    return model.eval(), extra["kind"], problem
