"""`train_anp`: the ANP's training run on the one engine, with the task its objective needs
(`trainer.ANPTask` for the ELBO and the marginal likelihood, `constrained.ConstrainedANPTask`
for the objectives on the conditioned posterior)."""

from __future__ import annotations

import os
from pathlib import Path

import probcons.training.engine as engine
from probcons import distributed
from probcons.backbones.anp import ANPConfig
from probcons.errors import UsageError
from probcons.training.constrained import ConstrainedANPTask
from probcons.training.trainer import (
    BEST,
    CONSTRAINED_OBJECTIVES,
    LAST,
    ANPTask,
    TrainingOptions,
    TrainingResult,
)


def train_anp(
    problem,
    out_dir: str | os.PathLike,
    config: ANPConfig | None = None,
    options: TrainingOptions | None = None,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> TrainingResult:
    """Train an ANP on `problem`; checkpoints in `out_dir` (best.pt, last.pt).

    resume: continue from out_dir/last.pt (same settings; epochs may grow; any world size).
    max_steps: stop after this many steps in this call (for tests and for interrupting on
    purpose). In a process group (torchrun) options.batch_size is the global batch, a multiple
    of the world size; only rank 0 validates, writes checkpoints and shows the progress bar.
    last.pt is the engine's checkpoint (extra: step, seconds, cpu_seconds, best_validation,
    history); best.pt holds the network, its validation scores and train_seconds, cpu_seconds.
    """
    options = options or TrainingOptions()
    config = config or ANPConfig(t_range=problem.t_range, x_range=problem.x_range)
    if tuple(config.t_range) != tuple(problem.t_range) or tuple(config.x_range) != tuple(
        problem.x_range
    ):
        raise UsageError(
            f"config: expected t_range={problem.t_range}, x_range={problem.x_range} of "
            f"{problem.name!r}, got {config.t_range}, {config.x_range}"
        )
    current = distributed.world()
    out = Path(out_dir)
    best_path, last_path = out / BEST, out / LAST
    task_type = ConstrainedANPTask if options.objective in CONSTRAINED_OBJECTIVES else ANPTask
    task = task_type(problem, config, options, best_path)
    out.mkdir(parents=True, exist_ok=True)
    model, step, clock = engine.train(
        task,
        options.seed,
        last_path,
        resume=resume,
        checkpoint_every=options.checkpoint_every,
        max_steps=max_steps,
        progress=progress,
        desc=f"train {problem.name}",
    )
    if current.is_main and not best_path.exists():  # stopped before the first validation
        task.save_best(model, step, clock, task.validation.evaluate(model.anp))
    best_validation, history = distributed.broadcast((task.best_validation, task.history))
    distributed.barrier()  # every rank returns once rank 0's checkpoints are written
    return TrainingResult(
        best_path, last_path, best_validation, clock.seconds, clock.cpu_seconds, step, history
    )
