"""The one training loop: a task, Adam with a learning-rate schedule, checkpoints, resume, DDP.

A `TrainingTask` says what is trained: `build()` an untrained module, `loss(network, step)` on
the task's batch of optimizer step `step` (0-based; the task draws it from its own generators),
`learning_rate(step)`, and the hyperparameters a checkpoint carries. `train` runs, for
s = first .. stop - 1,

    lr <- task.learning_rate(s);  g <- grad loss(network, s);  g <- clip(g, grad_clip);  Adam step

then `task.after_step(model, s + 1, logs, clock)` (ramps, validation, epoch ends), and writes a
checkpoint every `checkpoint_every` steps and at `stop`. The checkpoint (`probcons.checkpoint`,
loaded with weights_only) is

    state: {task.weights_key: weights, "optimizer": Adam's state, **task.state_dict(),
            "rng_torch": torch's global random state (only if task.uses_global_rng)}
    hyperparameters: task.hyperparameters()
    extra: {"step": steps done, "seconds": wall, "cpu_seconds": process CPU, **task.extra(...)}

and `train(..., resume=True)` restores all of it, so a resumed run is the uninterrupted one
(bit-identical in one process): the random streams, the batch order and the optimizer moments
are those it had at the checkpoint.

Under torchrun (K ranks, `probcons.distributed`) the module is wrapped in DDP; every rank draws
the same global batch from the same generators and `task.loss` keeps this rank's part, so the
averaged gradient is the single process's. Rank 0 alone writes checkpoints and shows progress;
a checkpoint holds one global state and resumes under any K.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probcons import distributed
from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.errors import UsageError


def cosine_decay(initial: float, progress: float, floor: float) -> float:
    """initial * (floor + (1 - floor) (1 + cos(pi progress)) / 2), progress in [0, 1]."""
    return initial * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_decay(initial: float, decays: int, factor: float) -> float:
    """initial * factor^decays, multiplied in `decays` steps (as a chained StepLR does)."""
    value = initial
    for _ in range(decays):
        value *= factor
    return value


class Clock:
    """Wall and process-CPU seconds of training, summed over resumed sessions."""

    def __init__(self, seconds: float = 0.0, cpu_seconds: float = 0.0) -> None:
        self.seconds, self.cpu_seconds = seconds, cpu_seconds
        self.restart()

    def restart(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        """Add the time since the last reading; (seconds, cpu_seconds) so far."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.seconds += wall - self._wall
        self.cpu_seconds += cpu - self._cpu
        self._wall, self._cpu = wall, cpu
        return self.seconds, self.cpu_seconds


class TrainingTask(ABC):
    """What `train` needs: a module, the loss of a step's batch, a schedule, checkpoint data.

    Class attributes: weights_key (the state entry holding the weights), data_parallel
    (False: every rank trains a run of its own, with no DDP and no collectives), uses_global_rng
    (whether the loss draws from torch's global generator, which checkpoints then hold),
    weight_decay (Adam's L2 term) and grad_clip (largest global 2-norm of the gradient, None:
    no clipping; applied after DDP's all-reduce, to the global gradient).
    """

    weights_key: str = "model"
    data_parallel: bool = True
    uses_global_rng: bool = False
    weight_decay: float = 0.0
    grad_clip: float | None = None

    @property
    @abstractmethod
    def total_steps(self) -> int:
        """Optimizer steps of the whole run."""

    @abstractmethod
    def build(self) -> nn.Module:
        """An untrained module (from torch's global random state, seeded by `train`)."""

    @abstractmethod
    def loss(self, network: nn.Module, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss of this rank, logged values) on the batch of step `step`; `network` is
        the built module, wrapped in DDP in a process group (`distributed.unwrap` gives it)."""

    @abstractmethod
    def learning_rate(self, step: int) -> float:
        """Adam's step size at optimizer step `step` (0-based)."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Plain data that says what is trained; a checkpoint resumes only a run that has them."""

    def weights(self, model: nn.Module) -> nn.Module:
        """The module whose parameters are optimized and saved (default: the built one)."""
        return model

    def check_loss(self, loss: torch.Tensor, step: int) -> None:
        """Raise on a loss that training must not continue from (default: accept any)."""
        return None

    def after_step(
        self, model: nn.Module, step: int, logs: dict[str, float], clock: Clock
    ) -> dict[str, str] | None:
        """Called on every rank after `step` steps are done; returns progress-bar values."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Tensors of the task's own state (generators, orders) for the checkpoint."""
        return {}

    def extra(self, model: nn.Module, step: int) -> dict[str, Any]:
        """Plain data for the checkpoint's extra after `step` steps."""
        return {}

    def load(self, state: dict[str, Any], extra: dict[str, Any]) -> None:
        """Restore what `state_dict` and `extra` saved."""
        return None

    def check_resumable(self, hyperparameters: dict[str, Any], path: Path) -> None:
        """Raise unless a checkpoint of these hyperparameters continues this run."""
        if hyperparameters != self.hyperparameters():
            raise UsageError(
                f"checkpoint: {str(path)!r} was written for another run (hyperparameters "
                f"{hyperparameters}, expected {self.hyperparameters()})"
            )


def _payload(task, model, optimizer, step, clock) -> tuple[dict, dict]:
    state = {
        task.weights_key: task.weights(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        **task.state_dict(),
    }
    if task.uses_global_rng:
        state["rng_torch"] = torch.get_rng_state()
    extra = {
        "step": step,
        "seconds": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
        **task.extra(model, step),
    }
    return state, extra


def train(
    task: TrainingTask,
    seed: int,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    max_steps: int | None = None,
    progress: bool = False,
    isolate_seed: bool = False,
    **bar: Any,
) -> tuple[nn.Module, int, Clock]:
    """Train `task` with Adam; returns (module, steps done, clock), module in training mode.

    seed: torch's global seed before `task.build()` (isolate_seed: inside a forked random
    state, so the caller's global stream is untouched). checkpoint: file written by rank 0
    every `checkpoint_every` steps (default: only at the end) and at the last step of this
    call; resume: continue from it when it exists. max_steps: stop after this many steps in
    this call. progress: a tqdm bar over steps (rank 0 only) with tqdm arguments `bar`.
    """
    current = distributed.world()
    if isolate_seed:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = task.build()
    else:
        torch.manual_seed(seed)
        model = task.build()
    weights = task.weights(model)
    optimizer = torch.optim.Adam(
        weights.parameters(), lr=task.learning_rate(0), weight_decay=task.weight_decay
    )
    step, clock = 0, Clock()
    path = None if checkpoint is None else Path(checkpoint)
    if resume and path is not None and path.is_file():
        payload = load_checkpoint(path)
        task.check_resumable(payload["hyperparameters"], path)
        state, extra = payload["state"], payload["extra"]
        weights.load_state_dict(state[task.weights_key])
        optimizer.load_state_dict(state["optimizer"])
        if task.uses_global_rng:
            torch.set_rng_state(state["rng_torch"])
        task.load(state, extra)
        step = int(extra["step"])
        seconds = extra.get("seconds", extra.get("train_seconds"))  # ANP last.pt before the engine
        clock = Clock(float(seconds), float(extra.get("cpu_seconds", 0.0)))
    if (
        task.data_parallel and distributed.broadcast(step) != step
    ):  # a rank that does not see rank 0's checkpoint
        raise UsageError(
            f"resume: rank {current.rank} found step {step} in {str(path)!r}, rank 0 another; "
            "put the checkpoint on a file system every node sees"
        )
    total = task.total_steps
    stop = total if max_steps is None else min(total, step + max_steps)
    every = checkpoint_every or max(total, 1)
    network = distributed.wrap(model) if task.data_parallel else model
    model.train()
    progress_bar = distributed.progress_bar(
        total=total, initial=step, disable=not progress, unit="step", **bar
    )
    clock.restart()
    try:
        while step < stop:
            for group in optimizer.param_groups:
                group["lr"] = task.learning_rate(step)
            optimizer.zero_grad(set_to_none=True)
            loss, logs = task.loss(network, step)
            task.check_loss(loss, step)
            loss.backward()
            if task.grad_clip is not None:
                nn.utils.clip_grad_norm_(weights.parameters(), task.grad_clip)
            optimizer.step()
            step += 1
            shown = task.after_step(model, step, logs, clock)
            progress_bar.update(1)
            if shown:
                progress_bar.set_postfix(shown, refresh=False)
            if path is not None and (step % every == 0 or step == stop):
                clock.lap()
                if current.is_main or not task.data_parallel:
                    state, extra = _payload(task, model, optimizer, step, clock)
                    save_checkpoint(path, state, task.hyperparameters(), extra)
    finally:
        progress_bar.close()
    clock.lap()
    return model, step, clock
