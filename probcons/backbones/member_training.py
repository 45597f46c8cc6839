"""Train the members of an ensemble: one after another by default, in parallel processes on request.

A `MemberTask` says how to build one untrained member and how to compute its loss on a fresh
random batch. `train_member` trains member k on the training engine (`probcons.training.engine`, task
`MemberRun`) with Adam and a cosine learning-rate decay

    lr(s) = lr_0 (f + (1 - f) (1 + cos(pi s / S)) / 2),  s = 0 .. S - 1, f = final fraction,

from its own seeds (initial weights and batches differ between members), shows a tqdm bar, and
writes `member-kk.pt` atomically every `checkpoint_every` steps: weights, optimizer state and the
batch generator's state, so `resume=True` continues an interrupted member exactly where it
stopped. `train_members` runs members sequentially (workers = 1) or in `workers` spawned processes
(`concurrent.futures` with the spawn start method). `export_members` bundles the finished members
into one checkpoint file; `load_ensemble_backbone` and `load_or_train_ensemble` rebuild a backbone.
The task interface and the member files themselves are in `probcons.backbones.members`, which the
backbones import; this module sits above them and knows every ensemble backbone.

Under torchrun (K ranks, `probcons.distributed`) the members are spread one per process instead:
rank r trains members r, r + K, r + 2 K, ... and writes their files (one writer per file), only
rank 0 shows its bars, and every rank returns once all members are done. Each member depends on
its own seeds only, so the files are those of a single process and resume under any K.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

import probcons.training.engine as engine
from probcons import distributed
from probcons.backbones.ensemble import DeepEnsembleBackbone, DeepEnsembleTask, EnsembleConfig
from probcons.backbones.fno_ensemble import (
    FNOEnsembleBackbone,
    FNOEnsembleConfig,
    FNOEnsembleTask,
)
from probcons.backbones.members import (
    BACKBONE_KINDS,
    MemberTask,
    load_members,
    member_path,
    restore_members,
)
from probcons.checkpoint import save_checkpoint
from probcons.errors import UsageError
from probcons.resources import checkpoint_path, shipped_checkpoints
from probcons.training.engine import TrainingTask, cosine_decay
from probcons.validation import check_nonnegative, check_positive_int

SEED_STRIDE = 1_000_003
"""Member k of seed s uses seeds s * SEED_STRIDE + 2 k (weights) and + 2 k + 1 (batches)."""
VALIDATION_SEED = 2**31 - 1
"""Seed of the fixed batch on which every member's final loss is reported."""
DEFAULT_RUN_ROOT = Path("checkpoints")
"""Member files of a training run go to checkpoints/<problem>-<backbone>/ unless told otherwise."""
SHIPPED_CHECKPOINTS = shipped_checkpoints()
"""Bundled ensembles: <problem>-<backbone>.pt in the installed models/checkpoints."""
BACKBONE_CLASSES = {"ensemble": DeepEnsembleBackbone, "fno-ensemble": FNOEnsembleBackbone}
"""The backbone of each kind in BACKBONE_KINDS."""
RESUMABLE_OPTIONS = ("checkpoint_every", "threads")
"""Training options that may change between an interrupted run and its resumption."""


@dataclass(frozen=True)
class MemberTrainingOptions:
    """How each member is trained (stored in every member checkpoint).

    steps: optimizer steps per member; batch_size: functions per step; learning_rate: initial
    Adam step, decayed by a cosine to final_fraction of it; weight_decay: Adam's L2 term;
    checkpoint_every: steps between checkpoints; seed: base seed of the ensemble; threads: torch
    threads per training process.
    """

    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    final_fraction: float = 0.05
    weight_decay: float = 0.0
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "threads"):
            check_positive_int(getattr(self, name), name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"seed: expected an integer >= 0, got {self.seed!r}")
        if not float(self.learning_rate) > 0 or not math.isfinite(float(self.learning_rate)):
            raise UsageError(f"learning_rate: expected a number > 0, got {self.learning_rate!r}")
        if not 0 <= float(self.final_fraction) <= 1:
            raise UsageError(
                f"final_fraction: expected a number in [0, 1], got {self.final_fraction!r}"
            )
        check_nonnegative(self.weight_decay, "weight_decay")

    def learning_rate_at(self, step: int) -> float:
        """Cosine decay from learning_rate to final_fraction * learning_rate over `steps`."""
        return cosine_decay(self.learning_rate, step / max(self.steps - 1, 1), self.final_fraction)

    def identity(self) -> dict[str, Any]:
        """The options that must match when a member is resumed."""
        return {k: v for k, v in asdict(self).items() if k not in RESUMABLE_OPTIONS}


DEFAULT_OPTIONS = {
    "ensemble": MemberTrainingOptions(steps=4000, batch_size=16),
    "fno-ensemble": MemberTrainingOptions(steps=1000, batch_size=8),
}
"""Training options of the shipped ensembles (a few minutes per member on one core)."""


def task_from_hyperparameters(backbone: str, hyperparameters: dict[str, Any]) -> MemberTask:
    """Rebuild the task of a checkpoint: backbone 'ensemble' or 'fno-ensemble'."""
    if backbone == "ensemble":
        return DeepEnsembleTask.from_hyperparameters(hyperparameters)
    if backbone == "fno-ensemble":
        return FNOEnsembleTask.from_hyperparameters(hyperparameters)
    raise UsageError(f"backbone: expected one of {BACKBONE_KINDS}, got {backbone!r}")


def member_seeds(seed: int, index: int) -> tuple[int, int]:
    """(initial-weight seed, batch seed) of member `index`."""
    return seed * SEED_STRIDE + 2 * index, seed * SEED_STRIDE + 2 * index + 1


def _check_task(task: Any) -> MemberTask:
    if not isinstance(task, MemberTask):
        raise UsageError(f"task: expected a MemberTask, got {type(task).__name__}")
    return task


def _check_options(options: Any) -> MemberTrainingOptions:
    if options is None:
        return MemberTrainingOptions()
    if not isinstance(options, MemberTrainingOptions):
        raise UsageError(
            f"options: expected a MemberTrainingOptions or None, got {type(options).__name__}"
        )
    return options


@torch.no_grad()
def validation_loss(task: MemberTask, model: nn.Module, batch_size: int) -> float:
    """The task's loss on one fixed batch (seed VALIDATION_SEED), the same for every member."""
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    model.eval()
    value = float(task.loss(model, batch_size, generator))
    model.train()
    return value


class MemberRun(TrainingTask):
    """Member `index` of `task` as a training-engine task: a fresh batch per step from the
    member's batch generator, the cosine schedule of `options`, and a member file whose extra
    holds the mean loss of every checkpoint interval (`history`), `done` and, once done, the
    `validation_loss`."""

    data_parallel = False  # under torchrun each rank trains members of its own

    def __init__(self, task: MemberTask, index: int, options: MemberTrainingOptions):
        self.task, self.index, self.options = task, index, options
        self.weight_decay = options.weight_decay
        self.generator = torch.Generator().manual_seed(member_seeds(options.seed, index)[1])
        self.history: list[float] = []
        self.interval: list[float] = []

    @property
    def total_steps(self) -> int:
        return self.options.steps

    def build(self) -> nn.Module:
        return self.task.build()

    def loss(self, network, step):
        loss = self.task.loss(network, self.options.batch_size, self.generator)
        return loss, {"loss": float(loss.detach())}

    def learning_rate(self, step: int) -> float:
        return self.options.learning_rate_at(step)

    def check_loss(self, loss, step):
        if not torch.isfinite(loss):
            raise UsageError(
                f"training: member {self.index} reached a non-finite loss at step {step}; "
                "lower learning_rate"
            )

    def after_step(self, model, step, logs, clock):
        self.interval.append(logs["loss"])
        if step % self.options.checkpoint_every == 0 or step == self.options.steps:
            self.history.append(sum(self.interval) / len(self.interval))
            self.interval = []
        return {"loss": f"{logs['loss']:.4g}"}

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "backbone": self.task.backbone,
            "task": self.task.hyperparameters(),
            "training": asdict(self.options),
            "member": self.index,
        }

    def check_resumable(self, hyperparameters, path):
        expected = {"backbone": self.task.backbone, "task": self.task.hyperparameters()}
        found = {"backbone": hyperparameters.get("backbone"), "task": hyperparameters.get("task")}
        if found != expected:
            raise UsageError(
                f"resume: {str(path)!r} holds a member of {found}, not of {expected}; "
                "choose another directory"
            )
        stored = {
            k: v
            for k, v in hyperparameters.get("training", {}).items()
            if k not in RESUMABLE_OPTIONS
        }
        if stored != self.options.identity():
            raise UsageError(
                f"resume: {str(path)!r} was trained with options {stored}, got "
                f"{self.options.identity()}; resume with the same options or choose another "
                "directory"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def extra(self, model, step):
        done = step == self.options.steps
        extra = {"done": done, "history": list(self.history)}
        if done:
            extra["validation_loss"] = validation_loss(self.task, model, self.options.batch_size)
        return extra

    def load(self, state, extra):
        self.generator.set_state(state["generator"])
        self.history = list(extra["history"])


def train_member(
    task: MemberTask,
    index: int,
    directory: str | Path,
    options: MemberTrainingOptions | None = None,
    resume: bool = False,
    progress: bool = True,
    position: int | None = None,
) -> Path:
    """Train member `index` of `task` into directory/member-kk.pt; returns that path.

    A finished member file is left as it is when `resume` is true; an unfinished one continues
    from its last checkpoint (the same batches and weights as an uninterrupted run). Initial
    weights come from a forked random state seeded with the member's weight seed.
    """
    task = _check_task(task)
    options = _check_options(options)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise UsageError(f"index: expected an integer >= 0, got {index!r}")
    path = member_path(directory, index)
    if path.exists() and not resume:
        raise UsageError(
            f"directory: {str(path)!r} exists; pass resume=True (--resume) to continue it "
            "or choose another directory"
        )
    engine.train(
        MemberRun(task, index, options),
        member_seeds(options.seed, index)[0],
        path,
        resume=True,
        checkpoint_every=options.checkpoint_every,
        progress=progress,
        isolate_seed=True,
        desc=f"{task.problem_name} {task.backbone} member {index}",
        position=position,
        leave=position is None,
    )
    return path


def _initialise_worker(threads: int, lock) -> None:
    torch.set_num_threads(threads)
    tqdm.set_lock(lock)


def train_members(
    task: MemberTask,
    directory: str | Path,
    members: int = 5,
    options: MemberTrainingOptions | None = None,
    workers: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Train members 0 .. members - 1 of `task` into `directory`; returns their checkpoint paths.

    workers = 1 trains them one after another in this process; workers > 1 trains up to that
    many at once in spawned processes, each with `options.threads` torch threads and its own
    progress bar. In a process group of K ranks (torchrun) rank r trains members r, r + K, ...
    (`workers` is then ignored). The results do not depend on `workers` or K.
    """
    task = _check_task(task)
    options = _check_options(options)
    check_positive_int(members, "members")
    check_positive_int(workers, "workers")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    current = distributed.world()
    if current.is_distributed:
        for k in range(current.rank, members, current.size):
            train_member(task, k, directory, options, resume, progress and current.is_main)
        distributed.barrier()  # every member file is written before any rank returns
        return [member_path(directory, k) for k in range(members)]
    if workers == 1 or members == 1:
        return [train_member(task, k, directory, options, resume, progress) for k in range(members)]
    context = multiprocessing.get_context("spawn")
    lock = context.RLock()
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, members),
        mp_context=context,
        initializer=_initialise_worker,
        initargs=(options.threads, lock),
    ) as pool:
        futures = [
            pool.submit(train_member, task, k, directory, options, resume, progress, k)
            for k in range(members)
        ]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def export_members(directory: str | Path, path: str | Path) -> Path:
    """Bundle the finished members of `directory` into one checkpoint file (no optimizer state)."""
    backbone, task, states, extra = load_members(directory)
    if Path(directory).is_file():
        raise UsageError(f"directory: expected a run directory, got the file {str(directory)!r}")
    path = Path(path)
    if path.suffix != ".pt":
        raise UsageError(f"path: expected a file name ending in .pt, got {str(path)!r}")
    save_checkpoint(
        path,
        {"members": states},
        {"backbone": backbone, "task": task, "members": len(states)},
        extra,
    )
    return path


def shipped_checkpoint(problem: str, backbone: str) -> Path:
    """models/checkpoints/<problem>-<backbone>.pt in the working directory, else the shipped one
    (existing or not: a trained ensemble is exported there)."""
    return checkpoint_path(f"{problem}-{backbone}", SHIPPED_CHECKPOINTS)


def backbone_from_checkpoint(path: str | Path, **options):
    """The DeepEnsembleBackbone or FNOEnsembleBackbone stored at `path` (bundle or directory)."""
    backbone, task_hyper, states, extra = load_members(path)
    task = task_from_hyperparameters(backbone, task_hyper)
    networks = restore_members(task, states)
    return BACKBONE_CLASSES[backbone](networks, task, metadata=extra, **options)


class ShippedEnsembleBackbone:
    """Loads models/checkpoints/<problem>-<backbone>.pt for whichever problem it must predict."""

    def __init__(self, backbone: str = "ensemble", **options) -> None:
        if backbone not in BACKBONE_KINDS:
            raise UsageError(f"backbone: expected one of {BACKBONE_KINDS}, got {backbone!r}")
        self.name = backbone
        self.options = options
        self._loaded: dict[str, Any] = {}

    def backbone_for(self, problem):
        name = getattr(problem, "name", None)
        if name not in self._loaded:
            path = shipped_checkpoint(str(name), self.name)
            if not path.is_file():
                raise UsageError(
                    f"problem: no shipped {self.name} checkpoint for {name!r} (expected "
                    f"{str(path)!r}); train one with `probcons train {name} --backbone "
                    f"{self.name} --export {path}`"
                )
            self._loaded[name] = backbone_from_checkpoint(path, **self.options)
        return self._loaded[name]

    def predict(self, problem, parameter, contexts, grid, generator=None):
        """See DeepEnsembleBackbone.predict / FNOEnsembleBackbone.predict."""
        return self.backbone_for(problem).predict(problem, parameter, contexts, grid, generator)


def load_ensemble_backbone(backbone: str = "ensemble", checkpoint=None, **options):
    """`get_backbone` entry: the ensemble at `checkpoint`, or the shipped one of each problem."""
    if backbone not in BACKBONE_KINDS:
        raise UsageError(f"backbone: expected one of {BACKBONE_KINDS}, got {backbone!r}")
    if checkpoint is None:
        return ShippedEnsembleBackbone(backbone, **options)
    return BACKBONE_CLASSES[backbone].from_checkpoint(checkpoint, **options)


def default_task(problem: str, backbone: str, **config) -> MemberTask:
    """The task of `backbone` on `problem` with config overrides (see each backbone's config)."""
    if backbone == "ensemble":
        return DeepEnsembleTask(problem, EnsembleConfig(**config))
    if backbone == "fno-ensemble":
        return FNOEnsembleTask(problem, FNOEnsembleConfig(**config))
    raise UsageError(f"backbone: expected one of {BACKBONE_KINDS}, got {backbone!r}")


def load_or_train_ensemble(
    problem: str,
    backbone: str = "ensemble",
    checkpoint: str | Path | None = None,
    train_missing: bool = True,
    members: int = 5,
    options: MemberTrainingOptions | None = None,
    config: dict[str, Any] | None = None,
    workers: int = 1,
    directory: str | Path | None = None,
    progress: bool = True,
):
    """An ensemble backbone for `problem`: loaded from `checkpoint` (default: the shipped
    models/checkpoints/<problem>-<backbone>.pt) if it exists, else (train_missing) trained into
    `directory` (default checkpoints/<problem>-<backbone>/, resumed if interrupted), bundled to
    `checkpoint` and loaded. For benchmarks (e.g. benchmarks/gpme.py)."""
    from probcons.problems import get_problem

    name = get_problem(problem).name
    if backbone not in BACKBONE_KINDS:
        raise UsageError(f"backbone: expected one of {BACKBONE_KINDS}, got {backbone!r}")
    path = Path(checkpoint) if checkpoint is not None else shipped_checkpoint(name, backbone)
    if path.exists():
        return backbone_from_checkpoint(path)
    if not train_missing:
        raise UsageError(
            f"checkpoint: {str(path)!r} does not exist; pass train_missing=True to train it"
        )
    task = default_task(name, backbone, **(config or {}))
    options = DEFAULT_OPTIONS[backbone] if options is None else options
    run = Path(directory) if directory is not None else DEFAULT_RUN_ROOT / f"{name}-{backbone}"
    train_members(task, run, members, options, workers, resume=True, progress=progress)
    export_members(run, path)
    return backbone_from_checkpoint(path)


# -- command line ------------------------------------------------------------------------------


def add_ensemble_arguments(parser: argparse.ArgumentParser, common: bool = True):
    """Arguments of `probcons train PROBLEM --backbone ensemble|fno-ensemble`.

    With common=False only the ensemble-specific ones are added (for a parser that already has
    --batch-size, --learning-rate, --seed, --out, --resume, --export, --threads and
    --no-progress, as the ANP's `probcons train` does; None there means the backbone default).
    """
    if common:
        parser.add_argument("problem", help="problem to train on: diffusion, pme or stefan")
        parser.add_argument("--backbone", default="ensemble", choices=BACKBONE_KINDS)
        parser.add_argument("--batch-size", type=int, default=None, help="functions per step")
        parser.add_argument("--learning-rate", type=float, default=None, help="initial Adam step")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", default=None, help="run folder (checkpoints/PROBLEM-BACKBONE)")
        parser.add_argument("--resume", action="store_true", help="continue the members in OUT")
        parser.add_argument("--export", default=None, help="also bundle the members to this .pt")
        parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--members", type=int, default=5, help="ensemble members (default 5)")
    parser.add_argument(
        "--workers", type=int, default=1, help="members trained at once in processes (default 1)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per member (4000 MLP, 1000 FNO)"
    )
    parser.add_argument(
        "--layers", type=int, default=None, help="hidden layers (MLP) or Fourier layers (FNO)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="MLP hidden width (128) or FNO channels (12)"
    )
    parser.add_argument("--modes", type=int, default=None, help="FNO modes per axis (6)")
    parser.add_argument(
        "--train-grid", default=None, help="FNO training grid NTxNX (default 48x48)"
    )
    return parser


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.backbone == "ensemble":
        if args.width is not None:
            config["hidden"] = args.width
        if args.layers is not None:
            config["layers"] = args.layers
        return config
    for name in ("width", "layers"):
        if getattr(args, name) is not None:
            config[name] = getattr(args, name)
    if args.modes is not None:
        config["modes"] = (args.modes, args.modes)
    if args.train_grid is not None:
        parts = str(args.train_grid).lower().split("x")
        if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
            raise UsageError(f"train_grid: expected NTxNX such as 64x64, got {args.train_grid!r}")
        config["train_grid"] = (int(parts[0]), int(parts[1]))
    return config


def ensemble_train_command(args: argparse.Namespace) -> int:
    """Train (or resume) an ensemble; print where its members and bundle are."""
    from probcons.problems import get_problem

    check_positive_int(args.threads, "threads")
    torch.set_num_threads(args.threads)
    current = distributed.initialize()  # one member per process under torchrun
    problem = get_problem(args.problem).name
    task = default_task(problem, args.backbone, **_config_from_args(args))
    defaults = DEFAULT_OPTIONS[args.backbone]
    options = MemberTrainingOptions(
        steps=defaults.steps if args.steps is None else args.steps,
        batch_size=defaults.batch_size if args.batch_size is None else args.batch_size,
        learning_rate=defaults.learning_rate if args.learning_rate is None else args.learning_rate,
        seed=args.seed,
        threads=args.threads,
    )
    out = Path(args.out) if args.out else DEFAULT_RUN_ROOT / f"{problem}-{args.backbone}"
    started = time.perf_counter()
    paths = train_members(
        task,
        out,
        args.members,
        options,
        workers=args.workers,
        resume=args.resume,
        progress=not args.no_progress,
    )
    if not current.is_main:
        return 0
    _, _, _, extra = load_members(out)
    losses = ", ".join(f"{value:.4f}" for value in extra["validation_loss"])
    print(
        f"trained {problem}-{args.backbone}: {len(paths)} members x {options.steps} steps in "
        f"{time.perf_counter() - started:.0f} s wall; validation loss per member: {losses}"
    )
    print(f"members: {out}/")
    if args.export:
        print(f"exported: {export_members(out, args.export)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: python -m probcons.backbones.member_training PROBLEM [options]."""
    parser = argparse.ArgumentParser(
        prog="python -m probcons.backbones.member_training", description=__doc__.splitlines()[0]
    )
    return ensemble_train_command(add_ensemble_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    # Run as a script this file is the module __main__, a second copy of this module: call the
    # package's own `main`, whose functions the spawned worker processes import by name.
    from probcons.backbones.member_training import main as package_main

    raise SystemExit(package_main())


__all__ = [
    "DEFAULT_OPTIONS",
    "MemberTask",
    "MemberTrainingOptions",
    "ShippedEnsembleBackbone",
    "add_ensemble_arguments",
    "backbone_from_checkpoint",
    "default_task",
    "ensemble_train_command",
    "export_members",
    "load_ensemble_backbone",
    "load_members",
    "load_or_train_ensemble",
    "member_path",
    "shipped_checkpoint",
    "train_member",
    "train_members",
]
