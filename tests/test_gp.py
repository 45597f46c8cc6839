"""GP backbone: the block approximation keeps the exact within-slice covariance."""

import torch

from probcons.backbones.gp import GPBackbone
from probcons.covariance import BlockCovariance, DenseCovariance
from probcons.problems import get_problem, sample_contexts


def test_block_covariance_equals_dense_within_slices():
    problem = get_problem("pme")
    grid = problem.grid(6, 9)
    contexts = sample_contexts(problem, 3.0, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    dense = GPBackbone(iterations=30).predict(problem, 3.0, contexts, grid)
    torch.manual_seed(0)
    block = GPBackbone(iterations=30, dense_limit=10).predict(problem, 3.0, contexts, grid)
    assert isinstance(dense.covariance, DenseCovariance)
    assert isinstance(block.covariance, BlockCovariance)
    assert torch.allclose(dense.mean, block.mean, atol=1e-8)
    matrix = dense.covariance.to_dense().reshape(6, 9, 6, 9)
    for j in range(6):
        assert torch.allclose(matrix[j, :, j, :], block.covariance.blocks[j], atol=1e-8)


def test_gp_interpolates_its_contexts():
    problem = get_problem("diffusion")
    contexts = sample_contexts(problem, 2.0, torch.Generator().manual_seed(1))
    backbone = GPBackbone(iterations=100)
    model, offset, scale = backbone.fit(problem, contexts)
    inputs = backbone._scale(problem, contexts.t, contexts.x)
    with torch.no_grad():
        fitted = model(inputs).mean * scale + offset
    assert (fitted - contexts.u).abs().max() < 0.05 * contexts.u.abs().max()
