"""Packaging: the shipped model files and checkpoints are found through the installed package
(`probcons.resources`), a models/ folder in the working directory wins, and a wheel carries them.

The whole round trip (fresh environment, wheel, `probcons run` from an empty folder) is
`make wheel-check` (.ci/wheel-check), run by CI after the tests.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from probcons import resources
from probcons.errors import UsageError

REPOSITORY = Path(__file__).resolve().parents[1]
MODELS = REPOSITORY / "models"
"""The repository's models/ folder: the files that must ship."""
MODEL_FILES = sorted(path for path in MODELS.glob("*.py") if not path.name.startswith("_"))
CHECKPOINT_FILES = sorted((MODELS / "checkpoints").glob("*.pt"))
BUILD_TIMEOUT = 300
"""Seconds allowed for building the wheel."""


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working directory: only the installed files can be found."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_repository_ships_models_and_checkpoints():
    assert {path.stem for path in MODEL_FILES} >= {"diffusion", "pme", "stefan"}
    assert len(CHECKPOINT_FILES) >= 12


@pytest.mark.parametrize("source", MODEL_FILES, ids=lambda path: path.name)
def test_every_model_file_is_found_in_the_installed_package(source, elsewhere):
    found = resources.model_file(source.stem)
    assert found.is_absolute() and found.name == source.name
    assert found.read_bytes() == source.read_bytes()
    assert source.stem in resources.available_models()


@pytest.mark.parametrize("source", CHECKPOINT_FILES, ids=lambda path: path.name)
def test_every_checkpoint_is_found_in_the_installed_package(source, elsewhere):
    found = resources.checkpoint_file(source.stem)
    assert found.is_absolute() and found.name == source.name
    assert found.stat().st_size == source.stat().st_size
    assert source.stem in resources.available_checkpoints()


def test_files_in_the_working_directory_win(elsewhere):
    (elsewhere / "models" / "checkpoints").mkdir(parents=True)
    (elsewhere / "models" / "stefan.py").write_text("# a user's copy\n")
    (elsewhere / "models" / "checkpoints" / "stefan-anp.pt").write_bytes(b"mine")
    assert resources.model_file("stefan").resolve() == elsewhere / "models" / "stefan.py"
    checkpoint = resources.checkpoint_file("stefan-anp").resolve()
    assert checkpoint == elsewhere / "models" / "checkpoints" / "stefan-anp.pt"
    # The others still come from the package.
    assert resources.model_file("pme").parent == resources.shipped_models()
    assert resources.checkpoint_file("pme-anp").parent == resources.shipped_checkpoints()


def test_a_missing_file_names_it_and_the_available_ones(elsewhere):
    with pytest.raises(
        UsageError, match=r"problem: .*'burgers'.*available: diffusion, heat-neumann, pme"
    ):
        resources.model_file("burgers")
    with pytest.raises(UsageError, match=r"checkpoint: .*'stefan-gp'.*available: diffusion-anp"):
        resources.checkpoint_file("stefan-gp")
    # Where a trained checkpoint would be exported: the shipped folder, existing or not.
    assert resources.checkpoint_path("stefan-gp").parent == resources.shipped_checkpoints()


@pytest.mark.parametrize("name", ["", "../stefan", "models/stefan", 3, None])
def test_a_name_with_folders_is_refused(name):
    with pytest.raises(UsageError, match=r"problem: expected a file name without folders, got"):
        resources.model_file(name)


def test_every_package_folder_is_listed_in_pyproject():
    """The package list is explicit (probcons.models is a mapped folder): nothing may be left out."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    package_root = REPOSITORY / "probcons"
    folders = {
        ".".join(("probcons", *path.parent.relative_to(package_root).parts))
        for path in package_root.rglob("*.py")
    }
    assert folders - listed == set(), "package folders missing from pyproject.toml"
    assert config["package-dir"] == {"probcons.models": "models"}
    assert {"probcons.models", "probcons.models.checkpoints"} <= listed
    assert listed - folders - {"probcons.models", "probcons.models.checkpoints"} == set()


def test_the_wheel_carries_the_model_files_and_checkpoints(tmp_path):
    """Build a wheel from a copy of the sources (no isolation, ~2 s) and read its file list."""
    pytest.importorskip("setuptools")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPOSITORY / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("probcons", "models"):
        shutil.copytree(REPOSITORY / name, source / name, ignore=ignore)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*command, "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("probcons-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in MODEL_FILES:
        assert f"probcons/models/{path.name}" in names
    for path in CHECKPOINT_FILES:
        assert f"probcons/models/checkpoints/{path.name}" in names
    assert "probcons/resources.py" in names
    assert not any(name.startswith(("models/", "tests/")) for name in names)
    metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()
