"""Training and evaluation of FNO, FNO with boundary-data channels, and BOON on an OperatorProblem.

Three model kinds share widths, modes, layers, epochs and seeds:
- "fno":     u = FNO(a)
- "fno-bc":  u = FNO([a, g]) with the boundary data g as 2 m constant input channels
- "boon":    u = BoonFNO([a, g]) (same inputs as fno-bc), kernel-corrected, exact boundary solve
Loss: mean relative L2 over samples; Adam with weight decay, step decay of the learning rate,
and the gradient clipped to global 2-norm `grad_clip`. The clip is there for BOON: when a
layer's boundary block M passes near a singular matrix during training (condition numbers 1e3
to 3e4 for single steps), delta = -M^{-1} R K (...) and the gradient of that layer's pointwise
weight jump by 1e2 to 1e4, and Adam's second-moment estimate then slows that weight for the rest
of the run (measured on the wave problem; see the README's BOON section). FNO's gradient norm
stays below 3 and the clip does not change its accuracy.
BOON's kernel correction is also warmed up: over the first `correction_warmup` of the training
steps each layer computes L (v + s Psi delta) with s rising linearly from 1/N_w to 1 (s = 1, the
exact correction, from then on and at evaluation). Started at full strength, the anchor shifts
delta open an optimisation gap in the first epochs that the rest of the run does not close
(measured on Stokes' second problem; see the README's BOON section).

Under torchrun (K ranks, `probcons.distributed`) every rank draws the same shuffled order and
keeps its part of each mini-batch of b samples (torch.tensor_split: sizes differ by at most one;
a rank left without a sample runs one with weight 0); rank r's loss is sum_{i in r} l_i * K / b,
so DDP's gradient average (1/K) sum_r is the gradient of the single process's mean over the b
samples, and the weights follow a single process's run.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

import probcons.training.engine as engine
from probcons import distributed
from probcons.boon.correction import BoonFNO1d
from probcons.errors import UsageError
from probcons.operators.fno import FNO1d
from probcons.problems.operators import OperatorData, OperatorProblem
from probcons.training.engine import TrainingTask, step_decay
from probcons.validation import check_in_interval, check_positive_int

MODEL_KINDS = ("fno", "fno-bc", "boon")
BOUNDARY_BAND = 0.05  # fraction of the domain next to each end used by the band metrics


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters (the paper: modes 16, width 64, lr 1e-3, wd 1e-4, 500 epochs, decay x0.5).

    grad_clip: largest global 2-norm of the gradient per step (None: no clipping).
    correction_warmup: fraction of the training steps in [0, 1) over which BOON's kernel
    correction ramps up (0: full strength from the first step); see the module doc.
    """

    modes: int = 16
    width: int = 32
    layers: int = 4
    padding: int = 8
    projection_width: int = 64
    epochs: int = 200
    batch_size: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    decay_every: int = 50
    decay_factor: float = 0.5
    grad_clip: float | None = 1.0
    correction_warmup: float = 0.25

    def __post_init__(self) -> None:
        for name in (
            "modes",
            "width",
            "layers",
            "projection_width",
            "epochs",
            "batch_size",
            "decay_every",
        ):
            check_positive_int(getattr(self, name), name)
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise UsageError(f"padding: expected an integer >= 0, got {self.padding!r}")
        if (
            not self.learning_rate > 0
            or not self.weight_decay >= 0
            or not 0 < self.decay_factor <= 1
        ):
            raise UsageError(
                "learning_rate, weight_decay, decay_factor: expected > 0, >= 0 and in (0, 1],"
                f" got {self.learning_rate}, {self.weight_decay}, {self.decay_factor}"
            )
        if self.grad_clip is not None:
            check_in_interval(self.grad_clip, "grad_clip", 0, math.inf, include_low=False)
        check_in_interval(self.correction_warmup, "correction_warmup", 0, 1, include_high=False)

    def correction_strength(self, step: int, steps_per_epoch: int) -> float:
        """Strength s of BOON's kernel correction at optimizer step `step` (0-based): min(1,
        (step + 1) / N_w) with N_w = ceil(correction_warmup * epochs * steps_per_epoch)."""
        warmup_steps = math.ceil(self.correction_warmup * self.epochs * steps_per_epoch)
        return 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)


def check_kind(kind: str) -> str:
    if kind not in MODEL_KINDS:
        raise UsageError(f"kind: expected one of {MODEL_KINDS}, got {kind!r}")
    return kind


def boundary_channels(data: OperatorData, n_x: int) -> torch.Tensor:
    """(n, 2 m, n_x) constant channels holding each output time's [left, right] boundary datum."""
    if data.boundary is None:
        return data.inputs.new_zeros(len(data), 0, n_x)
    flat = data.boundary.reshape(len(data), -1)
    return flat[..., None].expand(-1, -1, n_x)


def sees_boundary_data(kind: str, problem: OperatorProblem) -> bool:
    """fno-bc and BOON get the boundary data as input channels where they vary between samples.

    Data that are the same for every sample (heat's heater, the wave's zero flux) carry no
    information, and 2 m constant channels only dilute the lift's initial weights.
    """
    return kind != "fno" and problem.condition.has_data and problem.boundary_varies


def input_channels(model: nn.Module) -> int:
    """Input channels of an FNO or of the FNO inside a BOON-FNO."""
    return (model.operator if isinstance(model, BoonFNO1d) else model).in_channels


def model_inputs(kind: str, data: OperatorData, in_channels: int | None = None) -> torch.Tensor:
    """What `kind` sees: a alone (fno, or a model with a's channels only) or a and the boundary
    channels (fno-bc, boon)."""
    if kind == "fno" or in_channels == data.inputs.shape[1]:
        return data.inputs
    return torch.cat([data.inputs, boundary_channels(data, data.inputs.shape[-1])], dim=1)


def build_model(
    kind: str, problem: OperatorProblem, config: TrainingConfig, correct_layers: bool = True
) -> nn.Module:
    """An untrained model of `kind` for `problem` (float32); correct_layers=False gives BOON
    without the kernel correction of its layers (the final boundary solve alone, an ablation)."""
    check_kind(kind)
    n_boundary = 2 * problem.n_times if sees_boundary_data(kind, problem) else 0
    operator = FNO1d(
        1 + n_boundary,
        problem.n_times,
        modes=config.modes,
        width=config.width,
        layers=config.layers,
        padding=config.padding,
        coordinates=problem.coordinates,
        projection_width=config.projection_width,
    )
    if kind != "boon":
        return operator
    return BoonFNO1d(operator, problem.condition, correct_layers=correct_layers)


def predict(model: nn.Module, kind: str, data: OperatorData, batch_size: int = 100) -> torch.Tensor:
    """Model output (n, m, n_x) in the model's dtype, without gradients."""
    dtype = next(model.parameters()).dtype
    inputs = model_inputs(kind, data, input_channels(model)).to(dtype)
    boundary = None if data.boundary is None else data.boundary.to(dtype)
    outputs = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            block = slice(start, start + batch_size)
            if kind == "boon":
                g = None if boundary is None else boundary[block]
                outputs.append(model(inputs[block], g))
            else:
                outputs.append(model(inputs[block]))
    return torch.cat(outputs)


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||prediction - target|| / ||target|| over all channels and nodes, (n,)."""
    difference = (prediction - target).flatten(1).norm(dim=1)
    return difference / target.flatten(1).norm(dim=1)


class OperatorTask(TrainingTask):
    """Epochs over a fixed training set of n samples, in mini-batches of b: each epoch a new
    order from the task's `shuffle` generator; step decay of the learning rate per epoch,
    lr_e = learning_rate * decay_factor^floor(e / decay_every); Adam's weight decay and the
    gradient clip of `config`. Under torchrun each mini-batch is split over the ranks
    (`distributed.split_minibatch`). Subclasses give `build` and `batch_loss`.

    callback(epoch, model) after each epoch, on every rank.
    """

    def __init__(self, config: TrainingConfig, n_samples: int, seed: int, callback=None):
        self.config = config
        self.n_samples = n_samples
        self.callback = callback
        self.steps_per_epoch = math.ceil(n_samples / config.batch_size)
        self.weight_decay = config.weight_decay
        self.grad_clip = config.grad_clip
        self.shuffle = torch.Generator().manual_seed(seed)
        self.order: torch.Tensor | None = None
        self.world = distributed.world()

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def learning_rate(self, step: int) -> float:
        config = self.config
        epoch = step // self.steps_per_epoch
        return step_decay(config.learning_rate, epoch // config.decay_every, config.decay_factor)

    def loss(self, network: nn.Module, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        position = step % self.steps_per_epoch
        if position == 0:
            self.order = torch.randperm(self.n_samples, generator=self.shuffle)
        begin = position * self.config.batch_size
        index, weight = distributed.split_minibatch(
            self.order[begin : begin + self.config.batch_size], self.world
        )
        errors = self.batch_loss(network, step, index)
        return distributed.minibatch_loss(errors, weight), {
            "loss_sum": float(errors.detach().sum()) if weight != 0.0 else 0.0
        }

    @abstractmethod
    def batch_loss(self, network: nn.Module, step: int, index: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (b,) of the samples `index` at optimizer step `step`."""

    def end_epoch(self, model: nn.Module, epoch: int, logs: dict[str, float]) -> dict | None:
        """Called after the last step of `epoch`; returns progress-bar values."""
        return None

    def after_step(self, model, step, logs, clock):
        if step % self.steps_per_epoch:
            return None
        shown = self.end_epoch(model, step // self.steps_per_epoch - 1, logs)
        if self.callback is not None:
            self.callback(step // self.steps_per_epoch - 1, model)
            model.train()  # the callback may have evaluated it
        return shown

    def state_dict(self) -> dict:
        return {"shuffle": self.shuffle.get_state(), "order": self.order}

    def load(self, state: dict, extra: dict) -> None:
        self.shuffle.set_state(state["shuffle"])
        self.order = state["order"]


class OperatorTask1d(OperatorTask):
    """Model u = model(a[, g]) of `kind`; per-sample loss the relative L2 error; BOON's kernel
    correction ramped up over the first steps (`TrainingConfig.correction_strength`)."""

    def __init__(
        self,
        kind: str,
        problem: OperatorProblem,
        train: OperatorData,
        config: TrainingConfig,
        seed: int = 0,
        callback=None,
        correct_layers: bool = True,
    ):
        super().__init__(config, len(train), seed, callback)
        self.kind, self.problem, self.data = check_kind(kind), problem, train
        self.correct_layers = correct_layers

    def build(self) -> nn.Module:
        model = build_model(self.kind, self.problem, self.config, self.correct_layers)
        self.inputs = model_inputs(self.kind, self.data, input_channels(model)).float()
        self.targets = self.data.targets.float()
        self.boundary = None if self.data.boundary is None else self.data.boundary.float()
        return model

    def hyperparameters(self) -> dict:
        return {
            "kind": self.kind,
            "problem": self.problem.name,
            "config": config_dict(self.config),
            "correct_layers": self.correct_layers,
        }

    def batch_loss(self, network, step, index):
        if self.kind == "boon":
            model = distributed.unwrap(network)
            model.correction_strength = self.config.correction_strength(step, self.steps_per_epoch)
            boundary = None if self.boundary is None else self.boundary[index]
            output = network(self.inputs[index], boundary)
        else:
            output = network(self.inputs[index])
        return relative_l2(output, self.targets[index])


def train_model(
    kind: str,
    problem: OperatorProblem,
    train: OperatorData,
    config: TrainingConfig,
    seed: int = 0,
    callback=None,
    correct_layers: bool = True,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[nn.Module, float]:
    """Train a new model of `kind`; returns (model, seconds). callback(epoch, model) after each epoch.
    correct_layers: as in `build_model`. checkpoint: a file written after every epoch and
    resumed from when it exists (`probcons.training.engine`). progress: a tqdm bar named `desc`.

    In a process group (torchrun) each mini-batch of config.batch_size samples is split over the
    ranks and the returned model (the same on every rank) is the unwrapped module; the callback
    runs on every rank (write files from rank 0 only: `distributed.world().is_main`).
    """
    task = OperatorTask1d(kind, problem, train, config, seed, callback, correct_layers)
    model, _, clock = engine.train(
        task,
        seed,
        checkpoint,
        resume=True,
        checkpoint_every=task.steps_per_epoch,
        progress=progress,
        desc=desc,
    )
    if kind == "boon":
        model.correction_strength = 1.0
    return model.eval(), clock.seconds


def boundary_error(
    model: nn.Module, kind: str, problem: OperatorProblem, data: OperatorData, dtype
) -> float:
    """max |R u - g| over samples, channels and rows, with the model cast to `dtype`."""
    original = next(model.parameters()).dtype
    model.to(dtype)
    try:
        prediction = predict(model, kind, data).to(torch.float64)
    finally:
        model.to(original)
    return float(problem.condition.residual(prediction, data.boundary).abs().max())


def evaluate(model: nn.Module, kind: str, problem: OperatorProblem, test: OperatorData) -> dict:
    """rel_l2, rel_l2_interior, share of squared error near each end, boundary errors (f64, f32)."""
    prediction = predict(model, kind, test).to(torch.float64)
    target = test.targets
    x = problem.x
    length = float(x[-1] - x[0])
    left = x <= x[0] + BOUNDARY_BAND * length
    right = x >= x[-1] - BOUNDARY_BAND * length
    interior = ~(left | right)
    squared = (prediction - target) ** 2
    total = float(squared.sum())
    return {
        "rel_l2": float(relative_l2(prediction, target).mean()),
        "rel_l2_interior": float(
            relative_l2(prediction[..., interior], target[..., interior]).mean()
        ),
        "error_share_left": float(squared[..., left].sum()) / total if total > 0 else 0.0,
        "error_share_right": float(squared[..., right].sum()) / total if total > 0 else 0.0,
        "boundary_error": boundary_error(model, kind, problem, test, torch.float64),
        "boundary_error_f32": boundary_error(model, kind, problem, test, torch.float32),
    }


def config_dict(config: TrainingConfig) -> dict:
    return asdict(config)
