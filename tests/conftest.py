"""Shared fixtures: small grids, random structured covariances, benchmark scripts."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from probcons.covariance import (
    BlockCovariance,
    DenseCovariance,
    DiagonalCovariance,
    LowRankCovariance,
)
from probcons.grid import Grid


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def benchmark_script():
    """load(name): benchmarks/<name>.py as a module, registered in sys.modules (dataclasses
    look their module up there)."""

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def small_grid():
    return Grid.uniform((0.0, 1.0), (0.0, 1.0), 5, 7)


def random_covariances(grid, seed=0):
    """One covariance of each structure over `grid`, all positive definite."""
    generator = torch.Generator().manual_seed(seed)
    n = grid.size

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    root = randn(n, n)
    blocks = randn(grid.n_t, grid.n_x, grid.n_x)
    variance = torch.rand(n, generator=generator, dtype=torch.float64) + 0.1
    return {
        "diagonal": DiagonalCovariance(variance),
        "lowrank": LowRankCovariance(variance, randn(n, 3)),
        "dense": DenseCovariance(root @ root.T / n + 0.05 * torch.eye(n, dtype=torch.float64)),
        "block": BlockCovariance(
            blocks @ blocks.transpose(1, 2) + 0.05 * torch.eye(grid.n_x, dtype=torch.float64)
        ),
    }
