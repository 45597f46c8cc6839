"""SoftC: the PDE residual of a predicted mean as a training penalty (PINN-style).

For the GPME u_t = (k(u) u_x)_x the residual of a differentiable mean field u(t, x) is

    r = u_t - d/dx ( k(u) u_x ),

computed by automatic differentiation with respect to the query points (t, x).
The SoftC training loss is  backbone_loss + lambda * mean(r^2)  (lambda = 1 by default).
Where k is a step (Stefan) its derivative is zero almost everywhere; autograd then gives
r = u_t - k(u) u_xx, the residual away from the front.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from probcons.errors import UsageError
from probcons.validation import check_nonnegative, describe

DEFAULT_LAMBDA = 1.0


def pde_residual(
    mean: torch.Tensor,
    tx: torch.Tensor,
    diffusivity: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """r = u_t - d/dx(k(u) u_x) at each query point.

    mean: (...,) values u(t, x) computed from `tx` (..., 2) = [t, x] with autograd enabled;
    each mean value must depend on its own query point only. diffusivity: u -> k(u),
    elementwise and differentiable. Returns r (...,) with the graph kept (create_graph).
    """
    if not isinstance(tx, torch.Tensor) or tx.shape[-1] != 2 or not tx.requires_grad:
        raise UsageError(
            f"tx: expected a tensor (..., 2) of [t, x] that requires grad, got {describe(tx)}"
        )
    if not isinstance(mean, torch.Tensor) or tuple(mean.shape) != tuple(tx.shape[:-1]):
        raise UsageError(f"mean: expected shape {tuple(tx.shape[:-1])}, got {describe(mean)}")
    if not mean.requires_grad:
        raise UsageError("mean: expected a tensor computed from tx with autograd, got a constant")
    (gradient,) = torch.autograd.grad(mean.sum(), tx, create_graph=True)
    u_t, u_x = gradient[..., 0], gradient[..., 1]
    flux = diffusivity(mean).to(mean.dtype) * u_x
    if not flux.requires_grad:  # u linear in x and k constant in u: the flux is constant
        return u_t
    (flux_gradient,) = torch.autograd.grad(flux.sum(), tx, create_graph=True, allow_unused=True)
    if flux_gradient is None:
        return u_t
    return u_t - flux_gradient[..., 1]


def gpme_diffusivity(problem, parameter: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """u -> k(u; p) of the problem (`problem.diffusivity`), in u's dtype."""

    def diffusivity(u: torch.Tensor) -> torch.Tensor:
        return problem.diffusivity(u, parameter).to(u.dtype)

    return diffusivity


def softc_penalty(
    problem,
    parameters: Sequence[float] | torch.Tensor,
    mean: torch.Tensor,
    tx: torch.Tensor,
) -> torch.Tensor:
    """mean(r^2) over a batch: parameters (B,), mean (B, T) computed from tx (B, T, 2)."""
    parameters = [float(p) for p in torch.as_tensor(parameters).reshape(-1)]
    if mean.dim() != 2 or len(parameters) != mean.shape[0]:
        raise UsageError(f"mean: expected shape (B={len(parameters)}, T), got {describe(mean)}")
    per_function = [gpme_diffusivity(problem, p) for p in parameters]

    def batch_diffusivity(u: torch.Tensor) -> torch.Tensor:
        return torch.stack([k(u[b]) for b, k in enumerate(per_function)])

    residual = pde_residual(mean, tx, batch_diffusivity)
    return (residual**2).mean()


def softc_loss(backbone_loss: torch.Tensor, penalty: torch.Tensor, lam: float) -> torch.Tensor:
    """backbone_loss + lambda * penalty, lambda >= 0."""
    lam = check_nonnegative(lam, "lam")
    return backbone_loss + lam * penalty
