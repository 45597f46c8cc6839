"""An ensemble's members: the task that builds and trains one, and the files that hold them.

A `MemberTask` is what a backbone gives the training loop (`probcons.backbones.member_training`):
an untrained member and its loss on a fresh batch. Trained members live in a run directory of
member-kk.pt files (one per member, with optimizer state) or in one bundle written by
`export_members`; `load_members` reads either, and `restore_members` rebuilds the networks.

This module sits below both the backbones (`ensemble`, `fno_ensemble`), which subclass
`MemberTask` and load their own checkpoints, and the training module, which knows every backbone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probcons.checkpoint import load_checkpoint
from probcons.errors import UsageError

MEMBER_FILE = "member-{index:02d}.pt"
MEMBER_GLOB = "member-*.pt"
BACKBONE_KINDS = ("ensemble", "fno-ensemble")
"""The backbones whose members these files hold (the `backbone` of each checkpoint)."""


class MemberTask(ABC):
    """What training needs from a backbone: an untrained member and a loss on a fresh batch.

    Subclasses are plain dataclasses of strings and numbers, so that they pickle into spawned
    worker processes; `hyperparameters()` rebuilds them
    (`probcons.backbones.member_training.task_from_hyperparameters`).
    """

    backbone: str

    @abstractmethod
    def build(self) -> nn.Module:
        """A freshly initialised member (uses torch's global random state)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Scalar loss on a fresh batch of `batch_size` functions drawn with `generator`."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Plain data that rebuilds this task and its members."""

    @property
    @abstractmethod
    def problem_name(self) -> str:
        """The problem the members learn."""


def member_path(directory: str | Path, index: int) -> Path:
    """directory/member-kk.pt."""
    return Path(directory) / MEMBER_FILE.format(index=index)


def _load_member_file(path: Path) -> dict:
    payload = load_checkpoint(path)
    hyper = payload["hyperparameters"]
    if hyper.get("backbone") not in BACKBONE_KINDS or "task" not in hyper:
        raise UsageError(f"checkpoint: {str(path)!r} holds no ensemble member")
    if not payload["extra"].get("done", False):
        raise UsageError(
            f"checkpoint: member {str(path)!r} stopped at step {payload['extra'].get('step')}; "
            "finish it with resume=True (--resume)"
        )
    return payload


def load_members(
    path: str | Path, backbone: str | None = None
) -> tuple[str, dict[str, Any], list[dict], dict[str, Any]]:
    """(backbone, task hyperparameters, member state dicts, extra) from a run directory of
    member-kk.pt files or from a bundle written by `export_members`; with `backbone` given,
    raise unless the members are of that backbone."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(MEMBER_GLOB))
        if not files:
            raise UsageError(f"path: no {MEMBER_GLOB} files in {str(path)!r}")
        payloads = [_load_member_file(file) for file in files]
        first = payloads[0]["hyperparameters"]
        for file, payload in zip(files, payloads, strict=True):
            hyper = payload["hyperparameters"]
            if (hyper["backbone"], hyper["task"]) != (first["backbone"], first["task"]):
                raise UsageError(
                    f"path: {str(file)!r} belongs to another ensemble than {str(files[0])!r}"
                )
        extra = {
            "training": first["training"],
            "validation_loss": [p["extra"]["validation_loss"] for p in payloads],
            "seconds": [p["extra"]["seconds"] for p in payloads],
            "cpu_seconds": [p["extra"].get("cpu_seconds") for p in payloads],
            "history": [p["extra"]["history"] for p in payloads],
        }
        states = [p["state"]["model"] for p in payloads]
        found = first["backbone"], first["task"], states, extra
    else:
        payload = load_checkpoint(path)
        hyper = payload["hyperparameters"]
        if hyper.get("backbone") not in BACKBONE_KINDS or "members" not in payload["state"]:
            raise UsageError(f"path: {str(path)!r} is not an ensemble bundle or member directory")
        found = (
            hyper["backbone"],
            hyper["task"],
            list(payload["state"]["members"]),
            payload["extra"],
        )
    if backbone is not None and found[0] != backbone:
        raise UsageError(f"checkpoint: expected a {backbone} checkpoint, got a {found[0]} one")
    return found


def restore_members(task: MemberTask, states: list[dict]) -> list[nn.Module]:
    """One `task.build()` per state dict, loaded with it and in eval mode."""
    networks = []
    for state in states:
        network = task.build()
        network.load_state_dict(state)
        networks.append(network.eval())
    return networks


__all__ = [
    "BACKBONE_KINDS",
    "MEMBER_FILE",
    "MEMBER_GLOB",
    "MemberTask",
    "load_members",
    "member_path",
    "restore_members",
]
