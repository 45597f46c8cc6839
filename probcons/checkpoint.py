"""Checkpoints that carry the hyperparameters needed to rebuild a model; loaded with weights_only."""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
import zlib
from typing import Any

import torch

from probcons.errors import UsageError
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


ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    UnicodeDecodeError,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
)
"""What zipfile raises on a damaged archive."""


def _verify_archive(path: str | os.PathLike) -> None:
    """Check the CRC-32 of every member of the zip archive torch.save writes."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except ARCHIVE_ERRORS as error:
        raise UsageError(
            f"checkpoint: {str(path)!r} is corrupted or not a torch file ({type(error).__name__})"
        ) from error
    if damaged is not None:
        raise UsageError(
            f"checkpoint: {str(path)!r} is corrupted or not a torch file (checksum mismatch in "
            f"{damaged.rsplit('/', 1)[-1]})"
        )


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights_only=True, no code executed).

    The archive's CRC-32 checksums are verified first, so a damaged file is reported rather than
    loaded with wrong weights.
    """
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint: no such file {str(path)!r}")
    _verify_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as error:
        raise UsageError(
            f"checkpoint: {str(path)!r} is corrupted or not a torch file ({type(error).__name__})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(
            f"checkpoint: {str(path)!r} is not a probcons checkpoint (expected format {FORMAT!r})"
        )
    for key in ("state", "hyperparameters", "extra"):
        if not isinstance(payload.get(key), dict):
            raise UsageError(
                f"checkpoint: {str(path)!r} lacks its {key!r} dictionary (damaged or foreign)"
            )
    return payload
