"""Gaussian-process backbone: a GPyTorch exact GP on (t, x), fitted per function to its contexts.

Inputs are scaled to the unit square by the problem's ranges and the outputs standardised by the
contexts; a Matern-5/2 kernel with one lengthscale per input is fitted by maximising the exact
marginal likelihood (Adam). The prediction on the grid carries the GP's latent covariance: the full
(N, N) matrix up to `dense_limit` points, else the exact covariance within each time slice with the
correlations between slices dropped (a BlockCovariance: exact marginals, O(n_t n_x^2) memory).
Without a Problem, `fit(t, x, u)` takes any observations on any rectangle and `predict(grid)`
returns the posterior on any grid; `fit(t, x, u, y=y)` and `predict(grid2d)` do the same on
(t, x, y), the posterior living on `grid2d.flat` (space flattened x-major).
"""

from __future__ import annotations

import gpytorch
import torch

from probcons.covariance import BlockCovariance, DenseCovariance
from probcons.errors import UsageError
from probcons.grid import Grid, check_grid
from probcons.grid2d import Grid2d
from probcons.prediction import GaussianPrediction
from probcons.problems import Contexts, Problem
from probcons.validation import as_float64_tensor


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(self, inputs, targets, likelihood):
        super().__init__(inputs, targets, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(  # one lengthscale per input
            gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=inputs.shape[-1])
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
        return _to_unit_square(problem.t_range, problem.x_range, t, x)

    def _train(self, inputs: torch.Tensor, u: torch.Tensor) -> tuple[_ExactGP, float, float]:
        """Fit kernel hyperparameters to (inputs (n, 2), u (n,)); (model, output mean, output std)."""
        offset = float(u.mean())
        scale = float(u.std()) or 1.0
        targets = (u - offset) / scale
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

    def fit_contexts(self, problem: Problem, contexts: Contexts) -> tuple[_ExactGP, float, float]:
        """Fit on a problem's contexts (inputs scaled by its ranges); (model, output mean, std)."""
        return self._train(self._scale(problem, contexts.t, contexts.x), contexts.u)

    def fit(self, t, x, u, t_range=None, x_range=None, y=None, y_range=None) -> GPBackbone:
        """Fit to any observations u_k = u(t_k, x_k[, y_k]), each (n,), n >= 2; no Problem
        needed.

        Inputs are scaled to the unit square (cube with y) by t_range, x_range, y_range (default:
        the data's own ranges; give the prediction grid's rectangle when it is larger). Returns
        self; then `predict(grid)` (a Grid, or a Grid2d when fitted with y) gives the latent GP
        posterior there.
        """
        data = Contexts(t, x, u)
        if data.u.numel() < 2:
            raise UsageError(f"u: expected at least 2 observations, got {data.u.numel()}")
        ranges = [_range(t_range, data.t, "t_range"), _range(x_range, data.x, "x_range")]
        columns = [data.t, data.x]
        if y is not None:
            space = Contexts(data.t, as_float64_tensor(y, "y").reshape(-1), data.u)  # checks y
            ranges.append(_range(y_range, space.x, "y_range"))
            columns.append(space.x)
        inputs = _to_unit_box(ranges, columns)
        self.fitted_ = (self._train(inputs, data.u), tuple(ranges))
        return self

    def _posterior(
        self, model: _ExactGP, offset: float, scale: float, points: torch.Tensor, grid: Grid
    ) -> GaussianPrediction:
        """The latent posterior at points (n_t, n_x, d) as a GaussianPrediction on `grid`."""
        with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
            if grid.size <= self.dense_limit:
                posterior = model(points.reshape(-1, points.shape[-1]))
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

    def predict(
        self,
        problem,
        parameter: float | None = None,
        contexts: Contexts | None = None,
        grid: Grid | None = None,
        generator: torch.Generator | None = None,
    ) -> GaussianPrediction:
        """Latent GP posterior on a grid: `predict(grid)` after `fit(t, x, u)`, or
        `predict(problem, parameter, contexts, grid)` fitted to the contexts (the parameter
        enters only through them)."""
        if isinstance(problem, Grid | Grid2d) and (parameter, contexts, grid) == (None,) * 3:
            grid = problem
            if getattr(self, "fitted_", None) is None:
                raise UsageError(
                    "grid: predict(grid) expects fit(t, x, u) first; it was not called"
                )
            (model, offset, scale), ranges = self.fitted_
            if isinstance(grid, Grid2d) != (len(ranges) == 3):
                raise UsageError(
                    "grid: expected a Grid2d after fit(..., y=...) and a Grid after fit(t, x, u), "
                    f"got a {type(grid).__name__}"
                )
            columns = grid.mesh()
            points = _to_unit_box(ranges, columns)
            if isinstance(grid, Grid2d):  # (n_t, n_x, n_y, 3) -> (n_t, n_x n_y, 3) on grid.flat
                points, grid = points.reshape(grid.n_t, -1, 3), grid.flat
            return self._posterior(model, offset, scale, points, grid)
        if not isinstance(problem, Problem):
            raise UsageError(
                "problem: expected a probcons Problem (predict(problem, parameter, contexts, "
                f"grid)) or a Grid (predict(grid) after fit), got {type(problem).__name__}"
            )
        check_grid(grid)
        model, offset, scale = self.fit_contexts(problem, contexts)
        times, positions = grid.mesh()
        points = self._scale(problem, times, positions)  # (n_t, n_x, 2)
        return self._posterior(model, offset, scale, points, grid)


def _to_unit_square(t_range, x_range, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(t, x) scaled to [0, 1]^2 by the rectangle t_range x x_range, stacked on the last axis."""
    return _to_unit_box((t_range, x_range), (t, x))


def _to_unit_box(ranges, columns) -> torch.Tensor:
    """Each column scaled to [0, 1] by its (low, high), stacked on a new last axis."""
    scaled = [
        (column - low) / (high - low) for (low, high), column in zip(ranges, columns, strict=True)
    ]
    return torch.stack(scaled, dim=-1)


def _range(value, data: torch.Tensor, name: str) -> tuple[float, float]:
    """(low, high), low < high: given, else the data's extent (width 1 when all values agree)."""
    if value is None:
        low, high = float(data.min()), float(data.max())
        return (low, high) if high > low else (low, low + 1.0)
    bounds = as_float64_tensor(value, name).reshape(-1)
    if bounds.numel() != 2 or not float(bounds[1]) > float(bounds[0]):
        raise UsageError(f"{name}: expected (low, high) with low < high, got {value!r}")
    return float(bounds[0]), float(bounds[1])
