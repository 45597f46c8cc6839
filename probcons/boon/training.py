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
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from probcons import distributed
from probcons.boon.correction import BoonFNO1d
from probcons.boon.problems import OperatorData, OperatorProblem
from probcons.errors import UsageError
from probcons.operators.fno import FNO1d
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


def train_model(
    kind: str,
    problem: OperatorProblem,
    train: OperatorData,
    config: TrainingConfig,
    seed: int = 0,
    callback=None,
    correct_layers: bool = True,
) -> tuple[nn.Module, float]:
    """Train a new model of `kind`; returns (model, seconds). callback(epoch, model) after each epoch.
    correct_layers: as in `build_model`.

    In a process group (torchrun) each mini-batch of config.batch_size samples is split over the
    ranks and the returned model (the same on every rank) is the unwrapped module; the callback
    runs on every rank (write files from rank 0 only: `distributed.world().is_main`).
    """
    current = distributed.world()
    torch.manual_seed(seed)
    model = build_model(kind, problem, config, correct_layers)
    inputs = model_inputs(kind, train, input_channels(model)).float()
    targets = train.targets.float()
    boundary = None if train.boundary is None else train.boundary.float()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, config.decay_every, config.decay_factor)
    network = distributed.wrap(model)
    shuffle = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train), generator=shuffle)
        for begin in range(0, len(train), config.batch_size):
            index, weight = distributed.split_minibatch(
                order[begin : begin + config.batch_size], current
            )
            if kind == "boon":
                step = epoch * steps_per_epoch + begin // config.batch_size
                model.correction_strength = config.correction_strength(step, steps_per_epoch)
                output = network(inputs[index], None if boundary is None else boundary[index])
            else:
                output = network(inputs[index])
            loss = distributed.minibatch_loss(relative_l2(output, targets[index]), weight)
            optimizer.zero_grad()
            loss.backward()
            if config.grad_clip is not None:  # after DDP's all-reduce: the global gradient
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
        schedule.step()
        if callback is not None:
            callback(epoch, model)
    if kind == "boon":
        model.correction_strength = 1.0
    return model.eval(), time.perf_counter() - start


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
