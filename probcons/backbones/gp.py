"""Gaussian-process backbone: a GPyTorch exact GP on (t, x), fitted per function to its contexts.

Inputs are scaled to the unit square by the problem's ranges and the outputs standardised by the
contexts; a Matern-5/2 kernel with one lengthscale per input is fitted by maximising the exact
marginal likelihood (Adam). The prediction on the grid carries the GP's latent covariance: the full
(N, N) matrix up to `dense_limit` points, else the exact covariance within each time slice with the
correlations between slices dropped (a BlockCovariance: exact marginals, O(n_t n_x^2) memory).
"""

from __future__ import annotations

import gpytorch
import torch

from probcons.covariance import BlockCovariance, DenseCovariance
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction
from probcons.problems import Contexts, Problem


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(self, inputs, targets, likelihood):
        super().__init__(inputs, targets, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(
            gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=2)
        )

    def forward(self, inputs):
        return gpytorch.distributions.MultivariateNormal(
            self.mean_module(inputs), self.covar_module(inputs)
        )


class GPBackbone:
    """Per-function exact GP; `predict` returns a GaussianPrediction on the grid."""

    name = "gp"

    def __init__(
        self,
        iterations: int = 150,
        learning_rate: float = 0.1,
        initial_lengthscale: float = 0.2,
        noise_floor: float = 1e-6,
        jitter: float = 1e-8,
        dense_limit: int = 5000,
    ) -> None:
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.initial_lengthscale = initial_lengthscale
        self.noise_floor = noise_floor
        self.jitter = jitter
        self.dense_limit = dense_limit

    def _scale(self, problem: Problem, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        (t0, t1), (x0, x1) = problem.t_range, problem.x_range
        return torch.stack([(t - t0) / (t1 - t0), (x - x0) / (x1 - x0)], dim=-1)

    def fit(self, problem: Problem, contexts: Contexts) -> tuple[_ExactGP, float, float]:
        """Fit kernel hyperparameters on the contexts; returns (model, output mean, output std)."""
        inputs = self._scale(problem, contexts.t, contexts.x)
        offset = float(contexts.u.mean())
        scale = float(contexts.u.std()) or 1.0
        targets = (contexts.u - offset) / scale
        likelihood = gpytorch.likelihoods.GaussianLikelihood(
            noise_constraint=gpytorch.constraints.GreaterThan(self.noise_floor)
        ).double()
        model = _ExactGP(inputs, targets, likelihood).double()
        model.covar_module.base_kernel.lengthscale = self.initial_lengthscale
        likelihood.noise = 1e-4
        model.train()
        likelihood.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        objective = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        for _ in range(self.iterations):
            optimizer.zero_grad()
            loss = -objective(model(inputs), targets)
            loss.backward()
            optimizer.step()
        model.eval()
        likelihood.eval()
        return model, offset, scale

    def predict(
        self,
        problem: Problem,
        parameter: float,
        contexts: Contexts,
        grid: Grid,
        generator: torch.Generator | None = None,
    ) -> GaussianPrediction:
        """Latent GP posterior on `grid` (the parameter enters only through the contexts)."""
        model, offset, scale = self.fit(problem, contexts)
        times, positions = grid.mesh()
        points = self._scale(problem, times, positions)  # (n_t, n_x, 2)
        with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
            if grid.size <= self.dense_limit:
                posterior = model(points.reshape(-1, 2))
                matrix = posterior.covariance_matrix * scale**2
                matrix = matrix + self.jitter * scale**2 * torch.eye(grid.size, dtype=torch.float64)
                covariance = DenseCovariance(matrix, validate=False)
            else:
                posterior = model(points)  # a batch of n_t slices
                blocks = posterior.covariance_matrix * scale**2
                blocks = blocks + self.jitter * scale**2 * torch.eye(grid.n_x, dtype=torch.float64)
                covariance = BlockCovariance(blocks, validate=False)
            mean = posterior.mean.reshape(grid.shape) * scale + offset
        return GaussianPrediction(mean, covariance, grid)
