"""Where the shipped files are: the Pyro model files and the trained checkpoints.

The repository's top-level models/ folder (models/<problem>.py, models/checkpoints/<name>.pt) is
installed as the package `probcons.models` (pyproject.toml maps it), so an editable install and a
wheel find the same files through `importlib.resources`, wherever the package lies. A file of
the same name under models/ in the current working directory wins over the shipped one: users
copy a model or export a checkpoint there and run from that folder.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from probcons.errors import ModelError, ProbconsError, UsageError

SHIPPED_PACKAGE = "probcons.models"
"""The package that holds the shipped files (the repository's models/ folder)."""
LOCAL_MODELS = Path("models")
"""The folder, relative to the working directory, whose files win over the shipped ones."""
CHECKPOINTS = "checkpoints"
"""Subfolder of the checkpoints (<problem>-<backbone>.pt)."""
MODEL_SUFFIX = ".py"
CHECKPOINT_SUFFIX = ".pt"


def shipped_models() -> Path:
    """The installed models folder: <problem>.py files and the checkpoints/ subfolder."""
    folder = files(SHIPPED_PACKAGE)
    if not isinstance(folder, Path):  # an import from a zip archive: no file to hand to torch
        raise ProbconsError(
            f"{SHIPPED_PACKAGE} is not a folder on disk ({folder!r}); install probcons with pip"
        )
    return folder


def shipped_checkpoints() -> Path:
    """The installed checkpoints folder: <problem>-<backbone>.pt files."""
    return shipped_models() / CHECKPOINTS


def _check_name(name, argument: str) -> str:
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise UsageError(f"{argument}: expected a file name without folders, got {name!r}")
    return name


def is_bare_name(path: str | os.PathLike) -> bool:
    """A name without folder or suffix that is no file here (`stefan-bounded`, `stefan-anp-e2e`):
    the command line reads it as the name of a shipped model or checkpoint."""
    path = Path(path)
    return path.parent == Path(".") and not path.suffix and not path.exists()


def model_path(problem: str) -> Path:
    """models/<problem>.py in the working directory if it is a file, else the shipped one
    (which may not exist)."""
    file_name = _check_name(problem, "problem") + MODEL_SUFFIX
    local = LOCAL_MODELS / file_name
    return local if local.is_file() else shipped_models() / file_name


def checkpoint_path(name: str, shipped: Path | None = None) -> Path:
    """models/checkpoints/<name>.pt in the working directory if it is a file, else in `shipped`
    (default: the shipped checkpoints), existing or not: a trained checkpoint is exported there."""
    file_name = _check_name(name, "checkpoint") + CHECKPOINT_SUFFIX
    local = LOCAL_MODELS / CHECKPOINTS / file_name
    folder = shipped_checkpoints() if shipped is None else Path(shipped)
    return local if local.is_file() else folder / file_name


def available_models() -> list[str]:
    """The problems with a shipped model file, sorted."""
    return sorted(
        path.stem
        for path in shipped_models().glob(f"*{MODEL_SUFFIX}")
        if not path.stem.startswith("_")
    )


def available_checkpoints() -> list[str]:
    """The names (<problem>-<backbone>) of the shipped checkpoints, sorted."""
    return sorted(path.stem for path in shipped_checkpoints().glob(f"*{CHECKPOINT_SUFFIX}"))


def model_file(problem: str) -> Path:
    """The Pyro model file of `problem`: models/<problem>.py here, else the shipped one."""
    path = model_path(problem)
    if not path.is_file():
        raise UsageError(
            f"problem: no model file for {problem!r} in {str(LOCAL_MODELS)}/ or "
            f"{SHIPPED_PACKAGE}; available: {', '.join(available_models()) or 'none'}"
        )
    return path


def checkpoint_file(name: str) -> Path:
    """The checkpoint `name` (<problem>-<backbone>): models/checkpoints/<name>.pt here, else the
    shipped one."""
    path = checkpoint_path(name)
    if not path.is_file():
        raise UsageError(
            f"checkpoint: no checkpoint {name!r} in {str(LOCAL_MODELS / CHECKPOINTS)}/ or "
            f"{SHIPPED_PACKAGE}; available: {', '.join(available_checkpoints()) or 'none'}"
        )
    return path


def load_model(path: str | os.PathLike) -> Callable:
    """The `model` function of a Pyro model file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model: expected a Pyro model file, got {str(path)!r} (no such file)")
    spec = importlib.util.spec_from_file_location(f"probcons_model_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # the user's file: one line naming it
        message = " ".join(str(error).split())
        raise ModelError(
            f"model: {str(path)!r} failed to import ({type(error).__name__}: {message})"
        ) from error
    if not callable(getattr(module, "model", None)):
        raise ModelError(f"model: expected {str(path)!r} to define a function `model`")
    return module.model


__all__ = [
    "available_checkpoints",
    "available_models",
    "checkpoint_file",
    "checkpoint_path",
    "is_bare_name",
    "load_model",
    "model_file",
    "model_path",
    "shipped_checkpoints",
    "shipped_models",
]
