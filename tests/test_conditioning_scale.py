"""Conditioning at scale: O(N) memory at N = 1e6, closed form at scale, the dense reference."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from probcons.conditioning import condition
from probcons.constraints import conservation_constraint
from probcons.covariance import DiagonalCovariance
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "conditioning.py"
HAS_PEAK_RSS = Path("/proc/self/clear_refs").exists()
LINEAR_ARRAYS_PER_ROW = 8
"""Peak memory allowed: this many float64 arrays of length N per (1 + rows + rank)."""


@pytest.fixture(scope="module")
def benchmark(benchmark_script):
    return benchmark_script("conditioning")


PEAK_CHILD = """
import json, sys
import torch
sys.path.insert(0, {benchmarks!r})
torch.set_num_threads(1)
from conditioning import PeakMemory, build_case
from probcons.conditioning import condition
case = ({side}, {side}, {covariance!r}, "conservation+dirichlet")
condition(*build_case(8, 8, *case[2:], {rank}, 0)).variance
prior, constraint = build_case(*case, {rank}, 0)
with PeakMemory() as memory:
    posterior = condition(prior, constraint)
    posterior.variance
residual = float(constraint.residual(posterior.mean).abs().max())
print(json.dumps({{"peak_mb": memory.mb, "residual": residual}}))
"""


@pytest.mark.skipif(not HAS_PEAK_RSS, reason="needs Linux /proc/self/clear_refs and VmHWM")
@pytest.mark.parametrize(("covariance", "rank"), [("diagonal", 0), ("lowrank", 4)])
def test_update_at_one_million_points_uses_linear_memory(covariance, rank):
    side = 1000
    code = PEAK_CHILD.format(
        benchmarks=str(SCRIPT.parent), side=side, covariance=covariance, rank=max(rank, 1)
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = 3  # conservation + Dirichlet left and right
    size = side * side
    bound_mb = LINEAR_ARRAYS_PER_ROW * (1 + rows + rank) * size * 8 / 2**20
    assert result["peak_mb"] < bound_mb  # an (N, N) float64 array would be 8e12 bytes
    assert result["residual"] < 1e-10


def test_diagonal_update_matches_closed_form_at_one_million_points():
    """One exact row per slice: mu~ = mu + v w rho_j / s_j, var~ = v - (v w)^2 / s_j."""
    n_t, n_x = 1000, 1000
    generator = torch.Generator().manual_seed(0)
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t, n_x)
    mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    variance = 0.1 + torch.rand(grid.shape, generator=generator, dtype=torch.float64)
    mass = torch.rand(n_t, generator=generator, dtype=torch.float64)
    prior = GaussianPrediction(mean, DiagonalCovariance(variance.reshape(-1)), grid)
    posterior = condition(prior, conservation_constraint(grid, mass))
    w = grid.trapezoid_weights().numpy()[None, :]
    v, mu = variance.numpy(), mean.numpy()
    s = (w**2 * v).sum(axis=1, keepdims=True)
    rho = mass.numpy()[:, None] - (w * mu).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(posterior.mean.numpy(), mu + v * w * rho / s, atol=1e-10)
    np.testing.assert_allclose(posterior.variance.numpy(), v - (v * w) ** 2 / s, atol=1e-10)


@pytest.mark.parametrize("constraints", ["conservation", "conservation+dirichlet"])
def test_dense_reference_of_the_benchmark_matches_the_library(constraints, benchmark):
    """The benchmark's baseline computes the same posterior (diagonal prior, per slice)."""
    prior, constraint = benchmark.build_case(6, 9, "diagonal", constraints, 1, 0)
    posterior = condition(prior, constraint)
    mean, covariances, variance = benchmark.dense_reference(
        prior.mean.numpy(),
        prior.covariance.variance.numpy().reshape(6, 9),
        None,
        constraint.weights.numpy(),
        constraint.values.numpy(),
        constraint.noise_std.numpy() ** 2,
    )
    np.testing.assert_allclose(mean, posterior.mean.numpy(), atol=1e-10)
    np.testing.assert_allclose(variance, posterior.variance.numpy(), atol=1e-10)
    blocks = posterior.covariance.to_dense().numpy().reshape(6, 9, 6, 9)
    for j in range(6):
        np.testing.assert_allclose(covariances[j], blocks[j, :, j, :], atol=1e-10)


def test_dense_reference_with_a_low_rank_prior_on_one_slice(benchmark):
    """With one time slice the per-slice dense form is the full dense update."""
    prior, constraint = benchmark.build_case(1, 40, "lowrank", "conservation+dirichlet", 5, 0)
    posterior = condition(prior, constraint)
    mean, covariances, _ = benchmark.dense_reference(
        prior.mean.numpy(),
        prior.covariance.diagonal_part.numpy().reshape(1, 40),
        prior.covariance.factor.numpy().reshape(1, 40, 5),
        constraint.weights.numpy(),
        constraint.values.numpy(),
        constraint.noise_std.numpy() ** 2,
    )
    np.testing.assert_allclose(mean, posterior.mean.numpy(), atol=1e-10)
    np.testing.assert_allclose(covariances[0], posterior.covariance.to_dense().numpy(), atol=1e-10)


@pytest.mark.skipif(not HAS_PEAK_RSS, reason="needs Linux /proc/self/clear_refs and VmHWM")
def test_benchmark_measurement_of_one_small_case(benchmark):
    code = (  # a fresh process: here, memory freed by earlier tests may be reused unseen
        f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); import numpy as np\n"
        "from conditioning import PeakMemory\n"
        "with PeakMemory() as memory:\n    block = np.ones(4 * 2**20)\nprint(memory.mb)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stdout.split()[-1]) >= 30  # a 32 MB array, touched
    result = benchmark.ours(16, 16, "lowrank", "conservation+dirichlet", 4, 10, 1, 1.0, 0)
    assert result["max_residual"] < 1e-10
    assert result["update_s"] > 0 and result["sample_s"] > 0 and result["bandwidth_s"] > 0
    reference = benchmark.dense(16, 16, "diagonal", "conservation", 4, 10, 1, 0)
    assert reference["dense_update_s"] > 0 and reference["dense_peak_mb"] >= 0


@pytest.mark.parametrize("side", [60, 201])
def test_diagonal_update_allocates_only_its_outputs(side, benchmark):
    """Mean and variance (2 N float64) and O(n_t) more: no temporary or stored array of size N.

    The profiler counts every tensor allocation, so unlike RSS this is exact at any size.
    """
    from torch.profiler import ProfilerActivity, profile

    prior, constraint = benchmark.build_case(side, side, "diagonal", "conservation", 1, 0)
    warm = condition(prior, constraint)  # first-call allocations of the library, not counted
    assert warm.variance.shape == (side, side)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        posterior = condition(prior, constraint)
        variance = posterior.variance
    allocated = sum(max(event.self_cpu_memory_usage, 0) for event in profiler.key_averages())
    outputs = 2 * side * side * 8
    assert outputs <= allocated < outputs + 64 * side * 8
    assert constraint.residual(posterior.mean).abs().max() < 1e-12
    assert torch.equal(variance, warm.variance)
