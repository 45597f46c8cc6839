"""SoftC: the GPME residual by autograd is zero on exact smooth solutions, positive otherwise."""

import pytest
import torch

from probcons.problems import get_problem
from probcons.softc import gpme_diffusivity, pde_residual, softc_loss, softc_penalty

EXACT_TOLERANCE = 1e-10


def points(problem, n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    t_lo, t_hi = problem.t_range
    x_lo, x_hi = problem.x_range
    t = t_lo + (t_hi - t_lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    x = x_lo + (x_hi - x_lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([t, x], dim=-1).requires_grad_(True)


@pytest.mark.parametrize("k", [1.0, 3.0, 5.0])
def test_residual_vanishes_on_exact_diffusion(k):
    problem = get_problem("diffusion")
    tx = points(problem)
    u = problem.solution(tx[:, 0], tx[:, 1], k)
    residual = pde_residual(u, tx, gpme_diffusivity(problem, k))
    assert float(residual.detach().abs().max()) < EXACT_TOLERANCE


def test_residual_vanishes_on_exact_pme_behind_the_front():
    problem = get_problem("pme")
    m = 3.0
    generator = torch.Generator().manual_seed(1)
    t = 0.5 + 0.5 * torch.rand(100, generator=generator, dtype=torch.float64)
    x = 0.4 * t * torch.rand(100, generator=generator, dtype=torch.float64)
    tx = torch.stack([t, x], dim=-1).requires_grad_(True)
    u = problem.solution(tx[:, 0], tx[:, 1], m)
    residual = pde_residual(u, tx, gpme_diffusivity(problem, m))
    assert float(residual.detach().abs().max()) < 1e-8


def test_residual_is_positive_on_a_perturbed_solution():
    problem = get_problem("diffusion")
    k = 2.0
    tx = points(problem)
    t, x = tx[:, 0], tx[:, 1]
    u = problem.solution(t, x, k) + 0.1 * t * torch.sin(2 * x)
    residual = pde_residual(u, tx, gpme_diffusivity(problem, k))
    # r = 0.1 sin(2x) + 0.4 k t sin(2x), independently computed
    expected = (0.1 + 0.4 * k * t) * torch.sin(2 * x)
    torch.testing.assert_close(residual, expected)
    assert float((residual.detach() ** 2).mean()) > 1e-3


def test_penalty_on_a_batch_and_the_loss():
    problem = get_problem("diffusion")
    parameters = torch.tensor([1.0, 4.0])
    tx = torch.stack([points(problem, 50, 0).detach(), points(problem, 50, 1).detach()])
    tx.requires_grad_(True)
    exact = torch.stack(
        [problem.solution(tx[b, :, 0], tx[b, :, 1], p) for b, p in enumerate(parameters)]
    )
    assert float(softc_penalty(problem, parameters, exact, tx).detach()) < EXACT_TOLERANCE
    perturbed = exact + 0.05 * tx[..., 0] * tx[..., 1]
    penalty = softc_penalty(problem, parameters, perturbed, tx)
    assert float(penalty.detach()) > 0
    base = torch.tensor(0.3)
    torch.testing.assert_close(softc_loss(base, penalty, 2.0), base + 2.0 * penalty)
    with pytest.raises(ValueError, match="lam"):
        softc_loss(base, penalty, -1.0)


def test_penalty_reaches_network_parameters():
    problem = get_problem("stefan")
    layer = torch.nn.Linear(2, 1, dtype=torch.float64)
    tx = points(problem, 30).detach()[None].requires_grad_(True)
    mean = torch.tanh(layer(tx))[..., 0]
    penalty = softc_penalty(problem, [0.6], mean, tx)
    penalty.backward()
    assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0


def test_argument_errors():
    problem = get_problem("diffusion")
    tx = points(problem, 10)
    u = problem.solution(tx[:, 0], tx[:, 1], 1.0)
    with pytest.raises(ValueError, match="tx"):
        pde_residual(u, tx.detach(), gpme_diffusivity(problem, 1.0))
    with pytest.raises(ValueError, match="mean"):
        pde_residual(u[:5], tx, gpme_diffusivity(problem, 1.0))
    with pytest.raises(ValueError, match="mean"):
        softc_penalty(problem, [1.0, 2.0], u[None], tx[None])
