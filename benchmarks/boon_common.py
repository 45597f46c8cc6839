"""What the BOON benchmarks share (benchmarks/boon.py, boon2d.py, boon2d_ensemble.py): the
machine record of their JSON and the 2-D training configuration of their arguments."""

from __future__ import annotations

import platform

import torch

from probcons.boon.training2d import TrainingConfig2d
from probcons.machine import cpu_name


def machine() -> dict:
    """Platform, CPU, torch and its thread count (call after torch.set_num_threads)."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def config2d(args) -> TrainingConfig2d:
    """The 2-D training configuration of the parsed --modes, --width, --padding and --epochs
    (the learning rate decays three times)."""
    return TrainingConfig2d(
        modes=args.modes,
        width=args.width,
        padding=args.padding,
        epochs=args.epochs,
        decay_every=max(1, args.epochs // 3),
    )
