"""GP backbone: the block approximation keeps the exact within-slice covariance; fits to user
data with no Problem agree with a direct GPyTorch fit of the same settings."""

import gpytorch
import pytest
import torch

from probcons.backbones.gp import GPBackbone
from probcons.covariance import BlockCovariance, DenseCovariance
from probcons.errors import UsageError
from probcons.grid import Grid
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
    model, offset, scale = backbone.fit_contexts(problem, contexts)
    inputs = backbone._scale(problem, contexts.t, contexts.x)
    with torch.no_grad():
        fitted = model(inputs).mean * scale + offset
    assert (fitted - contexts.u).abs().max() < 0.05 * contexts.u.abs().max()


def user_data(n=40, seed=2):
    """Observations of u = exp(-t) sin(x) on the rectangle [2, 5] x [-3, 3], no Problem."""
    generator = torch.Generator().manual_seed(seed)
    t = 2 + 3 * torch.rand(n, generator=generator, dtype=torch.float64)
    x = -3 + 6 * torch.rand(n, generator=generator, dtype=torch.float64)
    return t, x, torch.exp(-(t - 2)) * torch.sin(x)


def direct_gpytorch(columns, u, points, iterations, learning_rate=0.1):
    """The same model written out in GPyTorch: inputs (t, x[, y]) scaled to the unit box by the
    data's ranges, outputs standardised, Matern-5/2 ARD, noise >= 1e-6, Adam on the exact MLL;
    points (m, d) in the original units."""
    low = torch.stack([column.min() for column in columns])
    high = torch.stack([column.max() for column in columns])
    unit = (torch.stack(columns, -1) - low) / (high - low)
    offset, scale = float(u.mean()), float(u.std())
    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(1e-6)
    ).double()

    class Model(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(unit, (u - offset) / scale, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=len(columns))
            )

        def forward(self, inputs):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(inputs), self.covar_module(inputs)
            )

    model = Model().double()
    model.covar_module.base_kernel.lengthscale = 0.2
    likelihood.noise = 1e-4
    model.train()
    likelihood.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    objective = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    for _ in range(iterations):
        optimizer.zero_grad()
        (-objective(model(unit), (u - offset) / scale)).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad(), gpytorch.settings.fast_pred_var(False):
        posterior = model((points - low) / (high - low))
        return posterior.mean * scale + offset, posterior.covariance_matrix * scale**2


def test_fit_on_user_data_matches_a_direct_gpytorch_fit():
    t, x, u = user_data()
    grid = Grid(
        torch.linspace(2, 5, 4, dtype=torch.float64), torch.linspace(-3, 3, 7, dtype=torch.float64)
    )
    backbone = GPBackbone(iterations=40)
    prediction = backbone.fit(t, x, u).predict(grid)
    mean, covariance = direct_gpytorch([t, x], u, grid.points(), iterations=40)
    jitter = 1e-8 * float(u.std()) ** 2
    assert torch.allclose(prediction.mean.reshape(-1), mean, rtol=0, atol=1e-10)
    expected = covariance + jitter * torch.eye(grid.size, dtype=torch.float64)
    assert torch.allclose(prediction.covariance.to_dense(), expected, rtol=0, atol=1e-10)


def test_user_data_ranges_and_errors():
    t, x, u = user_data(n=10)
    backbone = GPBackbone(iterations=5, dense_limit=4)
    grid = Grid(
        torch.linspace(0, 6, 3, dtype=torch.float64), torch.linspace(-4, 4, 5, dtype=torch.float64)
    )
    prediction = backbone.fit(t, x, u, t_range=(0, 6), x_range=(-4, 4)).predict(grid)
    assert isinstance(prediction.covariance, BlockCovariance) and prediction.mean.shape == (3, 5)
    with pytest.raises(UsageError, match="grid: predict\\(grid\\) expects fit\\(t, x, u\\) first"):
        GPBackbone().predict(grid)
    with pytest.raises(UsageError, match="t_range: expected \\(low, high\\) with low < high"):
        backbone.fit(t, x, u, t_range=(1, 1))
    with pytest.raises(UsageError, match="u: expected at least 2 observations, got 1"):
        backbone.fit(t[:1], x[:1], u[:1])
    with pytest.raises(UsageError, match="t, x, u: expected equal lengths"):
        backbone.fit(t, x[:3], u)


def test_fit_on_t_x_y_data_matches_a_direct_gpytorch_fit_and_conditions():
    """(t, x, y) observations: the same GP written out in GPyTorch (3 lengthscales), its
    posterior on Grid2d.flat, conditioned on the 2-D mass exactly."""
    from probcons import Grid2d, mass_constraint2d

    generator = torch.Generator().manual_seed(2)
    t, x, y = (torch.rand(40, generator=generator, dtype=torch.float64) for _ in range(3))
    u = torch.exp(-t) * torch.sin(3 * x) * torch.cos(2 * y)
    grid2d = Grid2d(
        torch.linspace(0, 1, 3, dtype=torch.float64),
        torch.linspace(0, 1, 4, dtype=torch.float64),
        torch.linspace(0, 1, 5, dtype=torch.float64),
    )
    backbone = GPBackbone(iterations=30)
    prediction = backbone.fit(t, x, u, y=y).predict(grid2d)  # scaled by the data's own ranges
    assert prediction.grid.shape == (3, 20)
    times, positions, heights = grid2d.mesh()  # x-major: the flattening of Grid2d.flat
    points = torch.stack([times, positions, heights], -1).reshape(-1, 3)
    mean, covariance = direct_gpytorch([t, x, y], u, points, iterations=30)
    assert torch.allclose(prediction.mean.reshape(-1), mean, rtol=0, atol=1e-10)
    jitter = 1e-8 * float(u.std()) ** 2
    expected = covariance + jitter * torch.eye(60, dtype=torch.float64)
    assert torch.allclose(prediction.covariance.to_dense(), expected, rtol=0, atol=1e-10)
    mass = mass_constraint2d(grid2d, torch.zeros(3, dtype=torch.float64))
    posterior = prediction.condition(mass)
    assert mass.residual(posterior.mean).abs().max() < 1e-12
    with pytest.raises(UsageError, match="grid: expected a Grid2d after fit"):
        GPBackbone(iterations=2).fit(t, x, u).predict(grid2d)
