"""Finite-difference weights on arbitrary nodes (Taylor/Vandermonde solve)."""

from __future__ import annotations

import math

import torch

from probcons.errors import UsageError


def derivative_weights(nodes: torch.Tensor, at: float, order: int = 1) -> torch.Tensor:
    """Weights c with sum_j c_j f(nodes_j) = f^(order)(at) + O(h^(len(nodes) - order)).

    Solves the (n, n) Vandermonde system sum_j c_j (nodes_j - at)^p / p! = delta_{p, order}.
    """
    offsets = nodes.to(torch.float64) - float(at)
    n = offsets.numel()
    if n <= order:
        raise UsageError(f"nodes: expected more than {order} nodes, got {n}")
    scale = offsets.abs().max()
    powers = torch.arange(n, dtype=torch.float64)
    vandermonde = (offsets[None, :] / scale) ** powers[:, None]
    factorials = torch.tensor([math.factorial(p) for p in range(n)], dtype=torch.float64)
    rhs = torch.zeros(n, dtype=torch.float64)
    rhs[order] = factorials[order]
    weights = torch.linalg.solve(vandermonde, rhs)
    return weights / scale**order
