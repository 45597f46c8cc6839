"""condition_nonlinear: iterated linearisation against exact conditioning and brute-force optima."""

import numpy as np
import pytest
import scipy.optimize
import torch

from probcons.constraints import LinearConstraint, dense_constraint
from probcons.covariance import DenseCovariance, DiagonalCovariance
from probcons.errors import ConvergenceError, SingularConstraintError, UsageError
from probcons.grid import Grid
from probcons.inference.nonlinear import (
    TOLERANCE,
    NonlinearSite,
    condition_nonlinear,
    nonlinear_site,
)
from probcons.inference.rows import (
    PLACEHOLDER_NOISE,
    SiteRows,
    SlicedJacobian,
    compressed_jacobian,
    jacobian,
    padded_rows,
    slice_rows,
)
from probcons.mixture import GaussianMixture
from probcons.prediction import GaussianPrediction

OPTIMUM_TOLERANCE = 1e-8
"""Agreement with the brute-force optimum (scipy) of the mode."""


def _dense_prior(grid, seed=0, shift=0.0):
    generator = torch.Generator().manual_seed(seed)
    root = torch.randn(grid.size, grid.size, generator=generator, dtype=torch.float64)
    covariance = root @ root.T / grid.size + 0.5 * torch.eye(grid.size, dtype=torch.float64)
    mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64) + shift
    return GaussianPrediction(mean, DenseCovariance(covariance), grid)


def _diagonal_prior(grid, seed=0):
    generator = torch.Generator().manual_seed(seed)
    variance = torch.rand(grid.size, generator=generator, dtype=torch.float64) + 0.5
    mean = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    return GaussianPrediction(mean, DiagonalCovariance(variance), grid)


def _linear_rows(grid, rows=2, seed=1, noise=0.0):
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(grid.n_t, rows, grid.n_x, generator=generator, dtype=torch.float64)
    values = torch.randn(grid.n_t, rows, generator=generator, dtype=torch.float64)
    return LinearConstraint(weights, values, noise)


@pytest.mark.parametrize("make_prior", [_diagonal_prior, _dense_prior])
def test_linear_site_reproduces_condition(make_prior):
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 4, 6)
    prior = make_prior(grid)
    rows = _linear_rows(grid)
    weights = grid.trapezoid_weights().expand(grid.n_t, 1, grid.n_x)
    mass = LinearConstraint(weights, torch.full((grid.n_t, 1), 0.3), 0.0)

    site = NonlinearSite("linear", rows.apply, rows.values)
    result = condition_nonlinear(prior, site, mass)
    expected = prior.condition(rows.stack(mass))
    assert result.iterations == 2  # the first gives the answer, the second confirms it
    assert torch.allclose(result.mean, expected.mean, atol=1e-12, rtol=0)
    assert torch.allclose(result.mode, expected.mean, atol=1e-12, rtol=0)
    assert torch.allclose(result.variance, expected.variance, atol=1e-12, rtol=0)
    assert result.residuals["linear"].abs().max() < 1e-12


def test_linear_site_across_slices_falls_back_to_flat_rows():
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 3, 4)
    prior = _dense_prior(grid, seed=2)
    generator = torch.Generator().manual_seed(3)
    matrix = torch.randn(2, grid.size, generator=generator, dtype=torch.float64)
    values = torch.randn(2, generator=generator, dtype=torch.float64)
    site = NonlinearSite("mixed", lambda u: matrix @ u.reshape(-1), values, noise=[0.0, 0.1])

    result = condition_nonlinear(prior, site)
    flat = prior.with_grid(grid.flattened()).condition(dense_constraint(matrix, values, [0, 0.1]))
    assert torch.allclose(result.mean.reshape(-1), flat.mean.reshape(-1), atol=1e-12, rtol=0)
    assert torch.allclose(
        result.variance.reshape(-1), flat.variance.reshape(-1), atol=1e-12, rtol=0
    )


def _sum_of_squares(row):
    """h(u) = sum_i u[row, i]^2 (one value)."""
    return lambda u: (u[row] ** 2).sum().reshape(1)


def _product(a, b):
    """h(u) = u_a u_b on the flattened field (one value)."""
    return lambda u: (u.reshape(-1)[a] * u.reshape(-1)[b]).reshape(1)


def _quadratic_sites(grid, noise=0.0):
    """sum of squares of slice 1 = 3 and u_0 u_1 = 0.4, with numpy values and derivatives."""
    n_x = grid.n_x
    square = slice(n_x, 2 * n_x)
    sites = [
        NonlinearSite("energy", _sum_of_squares(1), [3.0], noise),
        NonlinearSite("product", _product(0, 1), [0.4], noise),
    ]

    def values(u):
        return np.array([np.sum(u[square] ** 2), u[0] * u[1]])

    def jacobian(u):
        matrix = np.zeros((2, u.size))
        matrix[0, square] = 2 * u[square]
        matrix[1, 0], matrix[1, 1] = u[1], u[0]
        return matrix

    def hessians(u):
        first = np.zeros((u.size, u.size))
        first[square, square] = 2 * np.eye(n_x)
        second = np.zeros((u.size, u.size))
        second[0, 1] = second[1, 0] = 1.0
        return [first, second]

    return sites, np.array([3.0, 0.4]), values, jacobian, hessians


def _gaussian_terms(prior):
    mean = prior.mean.reshape(-1).numpy()
    precision = np.linalg.inv(prior.covariance.to_dense().numpy())
    return mean, precision


def _constrained_mode(mean, precision, values, jacobian, target):
    """SLSQP's argmin of 0.5 (u - mean)^T precision (u - mean) subject to values(u) = target."""
    return scipy.optimize.minimize(
        lambda u: 0.5 * (u - mean) @ precision @ (u - mean),
        mean,
        jac=lambda u: precision @ (u - mean),
        method="SLSQP",
        constraints=[{"type": "eq", "fun": lambda u: values(u) - target, "jac": jacobian}],
        options={"ftol": 1e-16, "maxiter": 1000},
    )


def test_quadratic_sites_match_constrained_optimum():
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 2, 4)
    prior = _dense_prior(grid, seed=4, shift=0.5)
    sites, target, values, jacobian, _ = _quadratic_sites(grid)
    result = condition_nonlinear(prior, sites)

    mean, precision = _gaussian_terms(prior)
    optimum = _constrained_mode(mean, precision, values, jacobian, target)
    assert optimum.success
    mode = result.mode.reshape(-1).numpy()
    assert np.abs(mode - optimum.x).max() < OPTIMUM_TOLERANCE
    assert np.abs(values(mode) - target).max() < 1e-9
    assert result.iterations > 2  # genuinely nonlinear: more than a confirming step


def test_laplace_is_the_prior_conditioned_on_rows_linearised_at_the_mode():
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 3, 4)
    prior = _dense_prior(grid, seed=15, shift=0.5)
    sites, *_ = _quadratic_sites(grid)
    sites.append(NonlinearSite("noisy", _product(5, 10), [0.2], 0.05))
    linear = _linear_rows(grid, rows=1, seed=16)
    result = condition_nonlinear(prior, sites, linear)

    mode = result.mode
    matrices, values = [linear.to_dense()], [linear.values.reshape(-1)]
    noise = [linear.noise_std.reshape(-1)]
    for site in sites:  # rows J u = b - h(mode) + J mode, J by autograd's functional jacobian
        matrix = torch.autograd.functional.jacobian(site.function, mode).reshape(site.size, -1)
        matrices.append(matrix)
        values.append(site.value - site.function(mode) + matrix @ mode.reshape(-1))
        noise.append(site.noise)
    rows = dense_constraint(torch.cat(matrices), torch.cat(values), torch.cat(noise))
    expected = prior.with_grid(grid.flattened()).condition(rows)
    assert torch.equal(result.mean, result.laplace.mean)
    assert torch.allclose(expected.mean.reshape(grid.shape), mode, atol=1e-9, rtol=0)
    assert torch.allclose(expected.variance.reshape(grid.shape), result.variance, atol=1e-9, rtol=0)


def test_noisy_sites_match_map():
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 2, 4)
    prior = _dense_prior(grid, seed=5, shift=0.5)
    noise = 0.3
    sites, target, values, jacobian, hessians = _quadratic_sites(grid, noise)
    result = condition_nonlinear(prior, sites)

    mean, precision = _gaussian_terms(prior)

    def objective(u):
        misfit = values(u) - target
        return 0.5 * (u - mean) @ precision @ (u - mean) + 0.5 * misfit @ misfit / noise**2

    def gradient(u):
        return precision @ (u - mean) + jacobian(u).T @ (values(u) - target) / noise**2

    def hessian(u):
        matrix, misfit = jacobian(u), values(u) - target
        curvature = sum(r * h for r, h in zip(misfit, hessians(u), strict=True))
        return precision + (matrix.T @ matrix + curvature) / noise**2

    optimum = scipy.optimize.minimize(
        objective, mean, jac=gradient, hess=hessian, method="trust-exact", options={"gtol": 1e-12}
    )
    point = optimum.x
    for _ in range(3):  # Newton polish: trust-exact stops at |gradient| ~ 1e-9
        point = point - np.linalg.solve(hessian(point), gradient(point))
    assert np.abs(gradient(point)).max() < 1e-12  # a stationary point to round-off
    assert np.linalg.eigvalsh(hessian(point)).min() > 0  # and a minimum
    assert np.abs(point - optimum.x).max() < 1e-6
    assert np.abs(result.mode.reshape(-1).numpy() - point).max() < OPTIMUM_TOLERANCE
    assert result.residuals["energy"].abs().max() > 1e-4  # noisy: not forced onto h(u) = b


def test_impossible_site_raises_naming_it():
    grid = Grid.index(1, 3)
    prior = GaussianPrediction(torch.full((1, 3), 0.5), DiagonalCovariance(torch.ones(3)), grid)
    impossible = NonlinearSite("impossible", lambda u: u[0, :1] ** 2, [-1.0])
    with pytest.raises(ConvergenceError, match="site 'impossible'.*max \\|h\\(u\\) - b\\|"):
        condition_nonlinear(prior, impossible, max_iterations=30)

    at_zero = GaussianPrediction(torch.zeros(1, 3), DiagonalCovariance(torch.ones(3)), grid)
    with pytest.raises(SingularConstraintError, match="site 'impossible': row 0 .* all zero"):
        condition_nonlinear(at_zero, impossible)

    curved = NonlinearSite("curved", lambda u: torch.exp(3 * u[0, :1]), [50.0])
    with pytest.raises(ConvergenceError, match="site 'curved'"):
        condition_nonlinear(prior, curved, max_iterations=1)
    assert condition_nonlinear(prior, curved).residuals["curved"].abs().max() < 1e-8


def test_projected_draws_satisfy_the_sites_and_the_linear_rows():
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 3, 4)
    prior = _dense_prior(grid, seed=6, shift=0.5)
    sites, target, values, _, _ = _quadratic_sites(grid)
    noisy = NonlinearSite("noisy", _product(5, 10), [0.2], 0.05)
    linear = LinearConstraint(
        torch.stack([grid.trapezoid_weights(), grid.trapezoid_weights() * grid.x]).expand(
            grid.n_t, 2, grid.n_x
        ),
        torch.tensor([[0.3, 0.5]]).expand(grid.n_t, 2),
        torch.tensor([0.0, 0.1]),  # the moment row is noisy: left out of the projection
    )
    linear = linear.stack(_linear_rows(grid, rows=1, seed=7))
    result = condition_nonlinear(prior, [*sites, noisy], linear)

    draws = result.sample(20, torch.Generator().manual_seed(8))
    assert draws.shape == (20, *grid.shape)
    flat = draws.reshape(20, -1).numpy()
    for draw in flat:
        scale = np.abs(target) + 2 * np.abs(values(draw))  # |b| + |J| |u| for these h
        assert np.all(np.abs(values(draw) - target) <= TOLERANCE * scale)
    exact = linear.noise_std == 0
    assert linear.residual(draws)[:, exact].abs().max() < 1e-10
    assert linear.residual(draws)[:, ~exact].std() > 1e-3  # the noisy row keeps its slack
    assert draws.std(dim=0).min() > 1e-3  # a spread, not the mode repeated

    base = result.base_samples((2, 3), torch.Generator().manual_seed(9))
    first, second = result.rsample((2, 3), base), result.rsample((2, 3), base)
    assert first.shape == (2, 3, *grid.shape)
    assert torch.equal(first, second)  # deterministic given the base samples
    assert linear.residual(first)[..., exact].abs().max() < 1e-10


def _porous_medium(n_t, n_x, exponent=3, start=None):
    """u = (m (t - x)_+)^(1/m): inflow flux -u^m u_x at x = 0 observed as (m t)^(1/m); mass per
    slice as a linear row; a diagonal prior around a perturbed solution."""
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t, n_x)
    time, space = grid.mesh()
    solution = (exponent * (time - space).clamp_min(0)) ** (1 / exponent)
    step = float(grid.x[1] - grid.x[0])

    def flux(u):
        slope = (-3 * u[:, 0] + 4 * u[:, 1] - u[:, 2]) / (2 * step)
        return -(u[:, 0] ** exponent) * slope

    observed = (exponent * grid.t) ** (1 / exponent) if start is None else start
    site = nonlinear_site("flux", flux, observed, field=solution)
    weights = grid.trapezoid_weights()
    mass = LinearConstraint(
        weights.expand(n_t, 1, n_x), (solution @ weights)[:, None], 0.0, ("mass",)
    )
    mean = solution * (1 + 0.1 * torch.sin(3 * space + 1))
    variance = torch.full((grid.size,), 0.01, dtype=torch.float64)
    return GaussianPrediction(mean, DiagonalCovariance(variance), grid), site, mass


def test_porous_medium_flux_site_converges():
    prior, site, mass = _porous_medium(21, 21)
    result = condition_nonlinear(prior, site, mass)
    residual = result.residuals["flux"]
    assert residual.abs().max() <= TOLERANCE * site.value.abs().max()
    assert mass.residual(result.mode).abs().max() < 1e-12
    assert torch.equal(result.mode[0], prior.mean[0])  # t = 0: the zero row was dropped
    assert result.iterations < 30

    draws = result.sample(3, torch.Generator().manual_seed(10))
    for draw in draws:
        matrix = torch.autograd.functional.jacobian(site.function, draw).reshape(site.size, -1)
        scale = (site.value.abs() + matrix.abs() @ draw.reshape(-1).abs()).max()
        assert (site.function(draw) - site.value).abs().max() <= TOLERANCE * scale
    assert mass.residual(draws).abs().max() < 1e-10

    observed = site.value.clone()
    observed[0] = 0.1  # at t = 0 the row is zero but no longer holds
    prior, site, mass = _porous_medium(21, 21, start=observed)
    with pytest.raises(SingularConstraintError, match="site 'flux': row 0 of its linearisation"):
        condition_nonlinear(prior, site, mass)


def test_flat_rows_give_the_per_slice_result():
    prior, site, mass = _porous_medium(9, 7)
    per_slice = condition_nonlinear(prior, site, mass)
    flat = condition_nonlinear(prior, site, mass.flattened())  # every row on grid.flattened()
    assert per_slice.iterations == flat.iterations
    assert torch.allclose(per_slice.mode, flat.mode, atol=1e-12, rtol=0)
    assert torch.allclose(per_slice.variance, flat.variance, atol=1e-12, rtol=0)


def test_mixture_prior_has_a_mode_per_component():
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 2, 4)
    components = [_dense_prior(grid, seed=seed, shift=0.5) for seed in (11, 12, 13)]
    sites, target, values, _, _ = _quadratic_sites(grid)
    result = condition_nonlinear(GaussianMixture(components), sites)

    assert result.mode.shape == (3, *grid.shape)
    for index, component in enumerate(components):
        alone = condition_nonlinear(component, sites)
        assert torch.allclose(result.mode[index], alone.mode, atol=1e-12, rtol=0)
        assert np.abs(values(alone.mode.reshape(-1).numpy()) - target).max() < 1e-9
    assert result.residuals["energy"].shape == (3, 1)
    assert result.residuals["energy"].abs().max() < 1e-9
    assert torch.allclose(result.mean, result.mode.mean(dim=0), atol=1e-14, rtol=0)
    assert isinstance(result.laplace, GaussianMixture)
    draws = result.rsample((5,), result.base_samples((5,), torch.Generator().manual_seed(14)))
    for draw in draws.reshape(5, -1).numpy():
        assert np.abs(values(draw) - target).max() < 1e-9


def test_padded_rows_fill_missing_rows_with_placeholders():
    matrix = torch.zeros(3, 3, 2, dtype=torch.float64)
    matrix[0, 0, 0], matrix[1, 2, 0], matrix[2, 2, 1] = 1.0, 2.0, 3.0  # slice 0: 1 row, 2: two
    observed = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    zeros = torch.zeros(3, dtype=torch.float64)
    rows = SiteRows("s", matrix.reshape(3, 6), zeros, observed, zeros)
    assert slice_rows(rows, Grid.index(3, 2)) is None  # unequal counts: not one per slice
    sliced = SlicedJacobian.from_dense(rows.matrix, (3, 2))
    assert torch.equal(sliced.slice_of, torch.tensor([0, 2, 2]))
    padded = padded_rows("s", sliced.weights, sliced.slice_of, observed, zeros, 3)
    assert padded.weights.shape == (3, 2, 2)
    assert torch.equal(padded.values, torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 3.0]]).double())
    assert torch.equal(padded.noise_std[1], torch.full((2,), PLACEHOLDER_NOISE).double())
    assert torch.equal(padded.weights[2], torch.tensor([[2.0, 0.0], [0.0, 3.0]]).double())
    assert (
        padded_rows("s", sliced.weights[:0], sliced.slice_of[:0], zeros[:0], zeros[:0], 3) is None
    )


def _jacobians(function, field, pattern):
    """(dense (m, N), compressed or None) of `function` at `field`."""
    leaf = field.clone().requires_grad_(True)
    output = function(leaf).reshape(-1)
    return jacobian(output, leaf), compressed_jacobian(output, leaf, pattern)


def test_compressed_jacobian_matches_dense_and_refuses_a_wrong_pattern():
    prior, site, _ = _porous_medium(9, 7)
    point = prior.mean + 0.01
    leaf = prior.mean.clone().requires_grad_(True)
    pattern = SlicedJacobian.from_dense(
        jacobian(site.function(leaf), leaf), prior.grid.shape
    ).pattern()
    assert not bool(pattern.known[0])  # the t = 0 row is zero at the prior mean: not known
    dense, compressed = _jacobians(site.function, point, pattern)
    assert compressed is not None
    rebuilt = torch.zeros(9, 9, 7, dtype=torch.float64)
    rebuilt[torch.arange(9), compressed.slice_of] = compressed.weights
    assert torch.allclose(rebuilt.reshape(9, -1), dense, atol=1e-14, rtol=0)

    def mixing(u):  # row j also reads slice j + 1 from here on
        return site.function(u) + torch.cat([u[1:, 3], u[:1, 3]])

    assert _jacobians(mixing, point, pattern)[1] is None


def test_bad_arguments_name_themselves():
    grid = Grid.index(2, 3)
    prior = _diagonal_prior(grid)
    square = _sum_of_squares(0)
    with pytest.raises(UsageError, match="^function: expected a callable"):
        NonlinearSite("s", 3.0, [1.0])
    with pytest.raises(UsageError, match="^noise: expected 0"):
        nonlinear_site("s", square, [1.0], noise=-1.0)
    with pytest.raises(UsageError, match="^value: expected finite"):
        nonlinear_site("s", square, [float("nan")])
    with pytest.raises(UsageError, match="site 's': expected its function to return a tensor"):
        nonlinear_site("s", square, [1.0, 2.0], field=prior.mean)
    with pytest.raises(UsageError, match="site 's': expected its function to return float64"):
        nonlinear_site("s", lambda u: square(u).float(), [1.0], field=prior.mean)
    site = nonlinear_site("s", square, [1.0])
    with pytest.raises(UsageError, match="^prior: expected a GaussianPrediction"):
        condition_nonlinear(prior.mean, site)
    with pytest.raises(UsageError, match="^sites: expected distinct names"):
        condition_nonlinear(prior, [site, site])
    with pytest.raises(UsageError, match="^tolerance: expected a number in"):
        condition_nonlinear(prior, site, tolerance=0.0)
    with pytest.raises(UsageError, match="^linear: expected rows on a grid of shape"):
        condition_nonlinear(prior, site, _linear_rows(Grid.index(3, 3)))
    result = condition_nonlinear(prior, site)
    with pytest.raises(UsageError, match="^constraint: expected none"):
        result.condition(_linear_rows(grid))
    with pytest.raises(UsageError, match="^constraint: expected none"):
        result.project(_linear_rows(grid))


def _steep_site(target):
    """h(u) = u_0^6 (u_1 - u_0) = target on a 1 x 2 grid, with numpy values and Jacobian: flat
    for u_0 -> 0 and steep beyond, so plain Gauss-Newton from u_0 = 0.2 jumps far out."""
    site = NonlinearSite(
        "steep", lambda u: (u[0, 0] ** 6 * (u[0, 1] - u[0, 0])).reshape(1), [target]
    )

    def values(u):
        return np.array([u[0] ** 6 * (u[1] - u[0])])

    def jacobian(u):
        return np.array([[6 * u[0] ** 5 * (u[1] - u[0]) - u[0] ** 6, u[0] ** 6]])

    return site, values, jacobian


@pytest.mark.parametrize("target", [1.0, 3.0])
def test_line_search_keeps_gauss_newton_from_running_away(target):
    grid = Grid.index(1, 2)
    mean = torch.tensor([[0.2, 1.0]], dtype=torch.float64)
    prior = GaussianPrediction(mean, DiagonalCovariance(torch.ones(2, dtype=torch.float64)), grid)
    site, values, jacobian = _steep_site(target)
    result = condition_nonlinear(prior, site)  # damped Gauss-Newton alone diverges here

    optimum = _constrained_mode(mean.reshape(-1).numpy(), np.eye(2), values, jacobian, target)
    assert optimum.success
    mode = result.mode.reshape(-1).numpy()
    assert np.abs(mode - optimum.x).max() < OPTIMUM_TOLERANCE
    assert np.abs(values(mode) - target).max() < 1e-9 * target
    assert result.iterations < 40
    merits = np.array(result.merits)  # (steps, 3): penalty mu, merit before, merit after
    assert len(merits) == result.iterations - 1  # every step but the confirming one searched
    assert np.all(merits[:, 2] <= merits[:, 1] + 1e-12 * np.abs(merits[:, 1]))
    assert merits[0, 2] < merits[0, 1]  # and the first one decreased it strictly
    draws = result.sample(8, torch.Generator().manual_seed(17)).reshape(8, -1).numpy()
    for draw in draws:  # each projected back onto the steep site
        scale = target + np.abs(jacobian(draw)) @ np.abs(draw)
        assert np.abs(values(draw) - target).max() <= TOLERANCE * scale.max()


def test_porous_medium_flux_under_a_smooth_correlated_prior_converges():
    """The PME inflow flux (exponent 6) under a squared-exponential prior on (t, x): the case of
    `probcons run pme --model pme-flux` with the GP backbone, where damped Gauss-Newton ran off
    to |h(u) - b| ~ 1e28."""
    n_t, n_x, exponent = 11, 13, 6
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t, n_x)
    time, space = grid.mesh()
    solution = (exponent * (time - space).clamp_min(0)) ** (1 / exponent)
    step = float(grid.x[1] - grid.x[0])

    def flux(u):
        slope = (-3 * u[1:, 0] + 4 * u[1:, 1] - u[1:, 2]) / (2 * step)
        return -(u[1:, 0] ** exponent) * slope

    observed = (exponent * grid.t[1:]) ** (1 / exponent)
    site = NonlinearSite("flux", flux, observed)
    weights = grid.trapezoid_weights()
    mass = LinearConstraint(weights.expand(n_t, 1, n_x), (solution @ weights)[:, None], 0.0)
    points = torch.stack([time.reshape(-1), space.reshape(-1)], dim=-1)
    distance = (points[:, None] - points[None]).square().sum(dim=-1)
    covariance = 0.09 * torch.exp(-distance / (2 * 0.3**2)) + 1e-8 * torch.eye(grid.size)
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    prior = GaussianPrediction(solution + 0.05 * noise, DenseCovariance(covariance), grid)
    result = condition_nonlinear(prior, site, mass)

    scale = (observed.abs() + 1).max()
    assert result.residuals["flux"].abs().max() < 1e-9 * scale
    assert mass.residual(result.mode).abs().max() < 1e-10
    merits = np.array(result.merits)
    assert len(merits) == result.iterations - 1
    assert np.all(merits[:, 2] <= merits[:, 1] + 1e-12 * np.abs(merits[:, 1]))
    mode = result.mode  # a KKT point: conditioning on the rows linearised there gives it back
    matrix = torch.autograd.functional.jacobian(flux, mode).reshape(site.size, -1)
    rows = dense_constraint(
        torch.cat([matrix, mass.to_dense()]),
        torch.cat([observed - flux(mode) + matrix @ mode.reshape(-1), mass.values.reshape(-1)]),
        0.0,
    )
    again = prior.with_grid(grid.flattened()).condition(rows).mean.reshape(grid.shape)
    assert (again - mode).abs().max() < 1e-8 * mode.abs().max()  # round-off: cond(Sigma) ~ 1e9
