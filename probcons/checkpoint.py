"""Checkpoints that carry the hyperparameters needed to rebuild a model; loaded with weights_only."""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any

import torch

from probcons.io import atomic_write

FORMAT = "probcons-checkpoint-v1"


def save_checkpoint(
    path: str | os.PathLike,
    state: dict[str, Any],
    hyperparameters: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Save tensors and plain data atomically: {format, state, hyperparameters, extra}."""
    payload = {
        "format": FORMAT,
        "state": state,
        "hyperparameters": dict(hyperparameters),
        "extra": dict(extra or {}),
    }
    with atomic_write(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights_only=True, no code executed)."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint: no such file {str(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"checkpoint: {str(path)!r} is corrupted or not a torch file ({type(error).__name__})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"checkpoint: {str(path)!r} is not a probcons checkpoint (expected format {FORMAT!r})"
        )
    return payload
