"""Property tests of the public API's validation (issue 8, part 1), with hypothesis.

Every bad argument gives a ValueError that names the argument, what is allowed and what was
given; every valid input gives a finite posterior. Inputs of any real dtype are read as float64
and results are float64 (the library's documented choice, see docs/reliability.md).
Tests marked xfail(strict=True) show defects reported to the lead; they flip when fixed.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from probcons import metrics
from probcons.conditioning import condition, project
from probcons.constraints import (
    LinearConstraint,
    conservation_constraint,
    dense_constraint,
    dirichlet_constraint,
    neumann_constraint,
    periodic_constraint,
)
from probcons.covariance import (
    BlockCovariance,
    DenseCovariance,
    DiagonalCovariance,
    LowRankCovariance,
)
from probcons.grid import Grid
from probcons.inference import (
    ConstrainedPredictive,
    ConstraintObservation,
    GaussianField,
    exact_posterior,
    observe_constraint,
)
from probcons.prediction import GaussianPrediction

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STRUCTURES = ("diagonal", "dense", "block", "lowrank")
BRUTE_FORCE_TOLERANCE = 1e-8
"""Agreement with an independent float64 Schur-complement solve, relative to the prior scale."""
EXACT_TOLERANCE = 1e-10
"""|G mu~ - b| for sigma_G = 0, relative to |b| + |G| |mu|."""
BAD_VALUES = (math.nan, math.inf, -math.inf)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def normal(seed, *shape):
    return torch.randn(*shape, generator=generator(seed), dtype=torch.float64)


@st.composite
def grids(draw, max_t=4, max_x=6):
    """Non-uniform grids of 1..max_t times and 2..max_x points."""
    n_t = draw(st.integers(1, max_t))
    n_x = draw(st.integers(2, max_x))
    steps = st.floats(0.05, 2.0)
    t = np.cumsum(draw(arrays(np.float64, n_t, elements=steps)))
    x = np.cumsum(draw(arrays(np.float64, n_x, elements=steps))) - 1.0
    return Grid(t, x)


def make_covariance(structure, grid, seed):
    """A positive definite covariance of `structure` over `grid`."""
    n, n_t, n_x = grid.size, grid.n_t, grid.n_x
    variance = torch.rand(n, generator=generator(seed), dtype=torch.float64) + 0.1
    if structure == "diagonal":
        return DiagonalCovariance(variance)
    if structure == "lowrank":
        return LowRankCovariance(variance, normal(seed + 1, n, 2))
    if structure == "dense":
        root = normal(seed + 1, n, n)
        return DenseCovariance(root @ root.T / n + 0.05 * torch.eye(n, dtype=torch.float64))
    blocks = normal(seed + 1, n_t, n_x, n_x)
    eye = torch.eye(n_x, dtype=torch.float64)
    return BlockCovariance(blocks @ blocks.transpose(1, 2) / n_x + 0.05 * eye)


@st.composite
def problems(draw, noisy=None):
    """(prior, constraint): a random structure and r < n_x random rows per slice."""
    grid = draw(grids())
    seed = draw(st.integers(0, 2**31))
    structure = draw(st.sampled_from(STRUCTURES))
    rows = draw(st.integers(1, grid.n_x - 1))
    noisy = draw(st.booleans()) if noisy is None else noisy
    noise = draw(st.floats(1e-3, 10.0)) if noisy else 0.0
    prior = GaussianPrediction(
        normal(seed + 2, *grid.shape), make_covariance(structure, grid, seed), grid
    )
    constraint = LinearConstraint(
        normal(seed + 3, grid.n_t, rows, grid.n_x), normal(seed + 4, grid.n_t, rows), noise
    )
    return prior, constraint


def brute_force(prior, constraint):
    """Posterior mean (N,) and covariance (N, N) by the Schur complement in NumPy."""
    mean = prior.mean.reshape(-1).numpy()
    covariance = prior.covariance.to_dense().numpy()
    matrix = constraint.to_dense().numpy()
    cross = covariance @ matrix.T
    system = matrix @ cross + np.diag(constraint.noise_std.reshape(-1).numpy() ** 2)
    gain = np.linalg.solve(system, cross.T).T
    residual = constraint.values.reshape(-1).numpy() - matrix @ mean
    return mean + gain @ residual, covariance - gain @ cross.T


def exact_residual(field, constraint):
    """max |G u - b| relative to |b| + |G| |u| for a field (n_t, n_x)."""
    scale = constraint.values.abs().max() + (
        constraint.weights.abs().amax() * field.abs().max() * constraint.n_x
    )
    return float(constraint.residual(field).abs().max() / scale.clamp_min(1e-300))


# --- Grid ---------------------------------------------------------------------------------


@FAST
@given(
    values=arrays(np.float64, st.integers(1, 8), elements=st.floats(-1e6, 1e6), unique=True),
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, "list", "tensor32"]),
)
def test_grid_reads_any_real_dtype_as_float64(values, dtype):
    values = np.sort(values)
    if dtype == "list":
        given_values, expected = values.tolist(), values
    elif dtype == "tensor32":
        given_values = torch.as_tensor(values, dtype=torch.float32)
        expected = given_values.double().numpy()
    else:
        given_values = values.astype(dtype)
        expected = given_values.astype(np.float64)
    if np.any(np.diff(expected) <= 0):  # rounding to float32 or int may merge values
        with pytest.raises(ValueError, match="t: expected strictly increasing"):
            Grid(given_values, [0.0, 1.0])
        return
    grid = Grid(given_values, [0.0, 1.0])
    assert grid.t.dtype == torch.float64 and grid.x.dtype == torch.float64
    np.testing.assert_array_equal(grid.t.numpy(), expected)


@FAST
@given(
    n=st.integers(1, 6),
    where=st.integers(0, 5),
    bad=st.sampled_from(BAD_VALUES),
    axis=st.sampled_from(["t", "x"]),
)
def test_grid_rejects_nonfinite_coordinates(n, where, bad, axis):
    values = np.arange(n, dtype=np.float64)
    values[where % n] = bad
    arguments = {"t": [0.0, 1.0], "x": [0.0, 1.0], axis: values}
    with pytest.raises(ValueError, match=f"^{axis}: expected finite values, got 1 NaN or inf"):
        Grid(arguments["t"], arguments["x"])


@FAST
@given(n=st.integers(2, 6), where=st.integers(1, 5), axis=st.sampled_from(["t", "x"]))
def test_grid_rejects_repeated_or_decreasing_coordinates(n, where, axis):
    values = np.arange(n, dtype=np.float64)
    values[where % (n - 1) + 1] = values[where % (n - 1)]  # a repeated value
    arguments = {"t": [0.0, 1.0], "x": [0.0, 1.0], axis: values}
    with pytest.raises(ValueError, match=f"^{axis}: expected strictly increasing values"):
        Grid(arguments["t"], arguments["x"])
    arguments[axis] = values[::-1].copy()
    with pytest.raises(ValueError, match=f"^{axis}: expected strictly increasing values"):
        Grid(arguments["t"], arguments["x"])


@pytest.mark.parametrize(
    ("t", "message"),
    [
        ([], r"t: expected a 1-D array of length >= 1, got tensor of shape \(0,\)"),
        ([[0.0, 1.0]], r"t: expected a 1-D array of length >= 1, got tensor of shape \(1, 2\)"),
        ("abc", "t: expected a numeric array, got 'abc'"),
        ([1 + 2j], r"t: expected a numeric array, got \[\(1\+2j\)\]"),
        (torch.tensor([1 + 2j]), "t: expected real numbers, got tensor of shape"),
        (torch.tensor([False, True]), "t: expected real numbers, got tensor of shape"),
    ],
)
def test_grid_rejects_malformed_coordinates(t, message):
    with pytest.raises(ValueError, match=message):
        Grid(t, [0.0, 1.0])


@pytest.mark.parametrize("count", [0, -3, 2.0, "5", None])
def test_uniform_grid_rejects_bad_counts(count):
    with pytest.raises(ValueError, match=f"n_t: expected a positive integer, got {count!r}"):
        Grid.uniform((0, 1), (0, 1), count, 4)


def test_uniform_grid_rejects_bool_counts():
    with pytest.raises(ValueError, match="n_t: expected a positive integer, got True"):
        Grid.uniform((0, 1), (0, 1), True, 4)


def test_none_is_named_as_none():
    with pytest.raises(ValueError, match="t: expected a numeric array, got None"):
        Grid(None, [0.0, 1.0])


# --- LinearConstraint and builders -----------------------------------------------------------


@FAST
@given(
    n_t=st.integers(1, 4),
    r=st.integers(1, 3),
    n_x=st.integers(1, 5),
    extra=st.integers(1, 3),
)
def test_constraint_shape_mismatch_names_argument_expected_and_given(n_t, r, n_x, extra):
    expected = rf"values: expected shape \({n_t}, {r}\), got \({n_t + extra}, {r}\)"
    with pytest.raises(ValueError, match=expected):
        LinearConstraint(torch.ones(n_t, r, n_x), torch.zeros(n_t + extra, r), 0.0)
    expected = rf"noise_std: expected shape \({n_t}, {r}\).*got \(1, 1, {n_t}, {r}\)"
    with pytest.raises(ValueError, match=expected):
        LinearConstraint(torch.ones(n_t, r, n_x), torch.zeros(n_t, r), torch.zeros(1, 1, n_t, r))


@FAST
@given(
    which=st.sampled_from(["weights", "values", "noise_std"]),
    bad=st.sampled_from(BAD_VALUES),
    seed=st.integers(0, 100),
)
def test_constraint_rejects_nonfinite_entries(which, bad, seed):
    arguments = {
        "weights": normal(seed, 3, 2, 4),
        "values": normal(seed + 1, 3, 2),
        "noise_std": torch.ones(3, 2),
    }
    arguments[which].reshape(-1)[seed % arguments[which].numel()] = bad
    with pytest.raises(ValueError, match=f"^{which}: expected finite values"):
        LinearConstraint(**arguments)


@FAST
@given(noise=st.floats(-1e3, -1e-300))
def test_constraint_rejects_negative_noise(noise):
    with pytest.raises(ValueError, match="noise_std: expected values >= 0, got minimum"):
        LinearConstraint(torch.ones(2, 1, 3), torch.zeros(2, 1), noise)
    with pytest.raises(ValueError, match="noise_std: expected a finite number >= 0"):
        conservation_constraint(Grid.uniform((0, 1), (0, 1), 2, 3), torch.zeros(2), noise)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (
            torch.ones(3, 4),
            r"weights: expected shape \(n_t, r, n_x\), got tensor of shape \(3, 4\)",
        ),
        (torch.ones(1, 2, 3, 4), r"weights: expected shape \(n_t, r, n_x\)"),
    ],
)
def test_constraint_rejects_weights_of_wrong_rank(weights, message):
    with pytest.raises(ValueError, match=message):
        LinearConstraint(weights, torch.zeros(3, 1), 0.0)


def test_unbroadcastable_noise_names_the_argument():
    with pytest.raises(ValueError, match=r"noise_std: expected shape \(3, 2\).*got \(3,\)"):
        LinearConstraint(torch.ones(3, 2, 4), torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"noise_std: expected shape \(3, 2\).*got \(4, 2\)"):
        LinearConstraint(torch.ones(3, 2, 4), torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"noise_std: expected shape \(2,\).*got \(3,\)"):
        dense_constraint(torch.ones(2, 4), torch.zeros(2), torch.zeros(3))


@FAST
@given(grid=grids(), length=st.integers(0, 6), bad=st.sampled_from(BAD_VALUES))
def test_builders_check_their_data(grid, length, bad):
    if length != grid.n_t:
        with pytest.raises(ValueError, match=rf"mass: expected shape \({grid.n_t},\)"):
            conservation_constraint(grid, torch.zeros(length))
        if length > 1:
            with pytest.raises(ValueError, match=f"left: expected a scalar or {grid.n_t} values"):
                dirichlet_constraint(grid, left=torch.zeros(length))
    with pytest.raises(ValueError, match="right: expected finite values"):
        neumann_constraint(grid, right=bad, order=1)
    with pytest.raises(ValueError, match=rf"order: expected an integer in \[1, {grid.n_x - 1}\]"):
        neumann_constraint(grid, left=0.0, order=grid.n_x)


def test_builders_name_non_numeric_noise_and_non_grid():
    grid = Grid.uniform((0, 1), (0, 1), 2, 3)
    with pytest.raises(ValueError, match="noise_std: expected a finite number >= 0, got 'a'"):
        periodic_constraint(grid, noise_std="a")
    with pytest.raises(ValueError, match="noise_std: expected a finite number >= 0, got None"):
        conservation_constraint(grid, torch.zeros(2), noise_std=None)
    with pytest.raises(ValueError, match="grid: expected a probcons.grid.Grid"):
        conservation_constraint("grid", torch.zeros(2))


# --- covariances ---------------------------------------------------------------------------


@FAST
@given(n=st.integers(2, 6), seed=st.integers(0, 1000), size=st.floats(1e-8, 1.0))
def test_dense_covariance_rejects_asymmetry(n, seed, size):
    root = normal(seed, n, n)
    matrix = root @ root.T + torch.eye(n, dtype=torch.float64)
    matrix[0, 1] += size * matrix.abs().max()
    with pytest.raises(ValueError, match="matrix: expected a symmetric matrix, got relative asym"):
        DenseCovariance(matrix)
    blocks = matrix.expand(2, n, n).clone()
    with pytest.raises(ValueError, match="blocks: expected a symmetric matrix"):
        BlockCovariance(blocks)


@FAST
@given(n=st.integers(2, 6), seed=st.integers(0, 1000), depth=st.floats(1e-8, 10.0))
def test_dense_covariance_rejects_negative_eigenvalues(n, seed, depth):
    q, _ = torch.linalg.qr(normal(seed, n, n))
    eigenvalues = torch.linspace(1.0, 2.0, n, dtype=torch.float64)
    eigenvalues[0] = -depth * 2.0
    matrix = (q * eigenvalues) @ q.T
    with pytest.raises(ValueError, match="matrix: expected a positive semi-definite matrix"):
        DenseCovariance((matrix + matrix.T) / 2)


@FAST
@given(n=st.integers(2, 6), seed=st.integers(0, 1000))
def test_round_off_negative_eigenvalues_are_accepted(n, seed):
    """A PSD matrix built in float64 may have eigenvalues of -1e-16 relative: accepted."""
    root = normal(seed, n, 1)
    matrix = root @ root.T  # rank one: n - 1 eigenvalues are zero up to round-off
    assert DenseCovariance(matrix).size == n


@FAST
@given(
    structure=st.sampled_from(["dense", "diagonal", "block", "lowrank"]),
    bad=st.sampled_from(BAD_VALUES),
)
def test_covariances_reject_nonfinite_entries(structure, bad):
    n = 4
    if structure == "dense":
        matrix = torch.eye(n, dtype=torch.float64)
        matrix[1, 1] = bad
        call, name = (lambda: DenseCovariance(matrix)), "matrix"
    elif structure == "diagonal":
        call, name = (lambda: DiagonalCovariance(torch.tensor([1.0, bad]))), "variance"
    elif structure == "block":
        blocks = torch.eye(2, dtype=torch.float64).repeat(2, 1, 1)
        blocks[1, 0, 0] = bad
        call, name = (lambda: BlockCovariance(blocks)), "blocks"
    else:
        factor = torch.ones(n, 2, dtype=torch.float64)
        factor[2, 1] = bad
        call, name = (lambda: LowRankCovariance(torch.ones(n), factor)), "factor"
    with pytest.raises(ValueError, match=f"^{name}: expected finite values"):
        call()


@FAST
@given(n=st.integers(1, 6), where=st.integers(0, 5), value=st.floats(-1e6, -1e-300))
def test_negative_variances_are_rejected(n, where, value):
    variance = torch.ones(n, dtype=torch.float64)
    variance[where % n] = value
    with pytest.raises(ValueError, match="variance: expected values >= 0"):
        DiagonalCovariance(variance)
    with pytest.raises(ValueError, match="diagonal: expected values >= 0"):
        LowRankCovariance(variance, torch.zeros(n, 1))


def test_covariance_shapes_are_checked():
    with pytest.raises(ValueError, match=r"matrix: expected a square \(N, N\) matrix"):
        DenseCovariance(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"factor: expected shape \(3, k\), got tensor of shape"):
        LowRankCovariance(torch.ones(3), torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"blocks: expected shape \(n_t, n_x, n_x\)"):
        BlockCovariance(torch.ones(2, 3, 4))


def test_empty_dense_covariance_names_the_argument():
    with pytest.raises(ValueError, match="matrix: expected"):
        DenseCovariance(torch.zeros(0, 0))


# --- GaussianPrediction --------------------------------------------------------------------


@FAST
@given(grid=grids(), extra=st.integers(1, 3), structure=st.sampled_from(STRUCTURES))
def test_prediction_checks_mean_and_covariance_against_grid(grid, extra, structure):
    covariance = make_covariance(structure, grid, 0)
    wrong_mean = torch.zeros(grid.n_t + extra, grid.n_x)
    expected = rf"mean: expected shape \({grid.n_t}, {grid.n_x}\), got \({grid.n_t + extra}, "
    with pytest.raises(ValueError, match=expected):
        GaussianPrediction(wrong_mean, covariance, grid)
    other = Grid(torch.arange(grid.n_t + extra, dtype=torch.float64), grid.x)
    size = (grid.n_t + extra) * grid.n_x
    with pytest.raises(
        ValueError, match=f"covariance: expected a covariance over {size} points, got {grid.size}"
    ):
        GaussianPrediction(torch.zeros(other.shape), covariance, other)
    with pytest.raises(ValueError, match="grid: expected a probcons.grid.Grid, got tuple"):
        GaussianPrediction(torch.zeros(grid.shape), covariance, grid.shape)


@FAST
@given(grid=grids(), bad=st.sampled_from(BAD_VALUES), seed=st.integers(0, 100))
def test_prediction_rejects_nonfinite_mean(grid, bad, seed):
    mean = normal(seed, *grid.shape)
    mean.reshape(-1)[seed % grid.size] = bad
    with pytest.raises(ValueError, match="^mean: expected finite values"):
        GaussianPrediction(mean, DiagonalCovariance(torch.ones(grid.size)), grid)


@FAST
@given(problem=problems(), dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_low_precision_input_gives_the_float64_result_of_its_values(problem, dtype):
    """Documented: inputs of any float dtype are read as float64 and results are float64.

    The result equals, bit for bit, the result for the same values given in float64.
    """
    prior, constraint = problem
    low = GaussianPrediction(
        prior.mean.to(dtype), DiagonalCovariance(prior.variance.to(dtype)), prior.grid
    )
    as_float64 = GaussianPrediction(
        prior.mean.to(dtype).double(),
        DiagonalCovariance(prior.variance.to(dtype).double()),
        prior.grid,
    )
    low_constraint = LinearConstraint(
        constraint.weights.to(dtype), constraint.values.to(dtype), constraint.noise_std.to(dtype)
    )
    reference_constraint = LinearConstraint(
        constraint.weights.to(dtype).double(),
        constraint.values.to(dtype).double(),
        constraint.noise_std.to(dtype).double(),
    )
    for method in (condition, project):
        result = method(low, low_constraint)
        reference = method(as_float64, reference_constraint)
        assert result.mean.dtype == torch.float64 and result.variance.dtype == torch.float64
        assert torch.equal(result.mean, reference.mean)
        assert torch.equal(result.variance, reference.variance)


def test_sample_count_is_checked():
    grid = Grid.uniform((0, 1), (0, 1), 2, 2)
    prior = GaussianPrediction(torch.zeros(2, 2), DiagonalCovariance(torch.ones(4)), grid)
    for n in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"n: expected a positive integer, got {n!r}"):
            prior.sample(n)


def test_sample_generator_is_checked():
    grid = Grid.uniform((0, 1), (0, 1), 2, 2)
    prior = GaussianPrediction(torch.zeros(2, 2), DiagonalCovariance(torch.ones(4)), grid)
    with pytest.raises(ValueError, match="generator: expected a torch.Generator or None"):
        prior.sample(3, generator=5)


# --- condition / project -------------------------------------------------------------------


@FAST
@given(problem=problems())
def test_condition_matches_schur_complement_on_random_shapes(problem):
    prior, constraint = problem
    posterior = condition(prior, constraint)
    mean, covariance = brute_force(prior, constraint)
    scale = float(prior.covariance.diagonal().max())
    tolerance = BRUTE_FORCE_TOLERANCE * scale
    np.testing.assert_allclose(posterior.mean.reshape(-1).numpy(), mean, atol=tolerance * 10)
    np.testing.assert_allclose(posterior.covariance.to_dense().numpy(), covariance, atol=tolerance)
    assert torch.isfinite(posterior.variance).all() and (posterior.variance >= 0).all()


@FAST
@given(problem=problems(noisy=False))
def test_exact_constraints_hold_for_mean_and_samples(problem):
    prior, constraint = problem
    posterior = condition(prior, constraint)
    assert exact_residual(posterior.mean, constraint) < EXACT_TOLERANCE
    for draw in posterior.sample(3, generator(0)):
        assert torch.isfinite(draw).all()
        assert exact_residual(draw, constraint) < EXACT_TOLERANCE
    projected = project(prior, constraint)
    assert exact_residual(projected.mean, constraint) < EXACT_TOLERANCE
    assert projected.covariance is prior.covariance


@FAST
@given(problem=problems(noisy=True), split=st.integers(0, 5))
def test_sequential_conditioning_equals_joint(problem, split):
    """Conditioning on A then on B equals conditioning on A and B at once (noisy rows)."""
    prior, constraint = problem
    r = constraint.rows_per_slice
    if r < 2:
        return
    k = 1 + split % (r - 1)
    first = LinearConstraint(
        constraint.weights[:, :k], constraint.values[:, :k], constraint.noise_std[:, :k]
    )
    second = LinearConstraint(
        constraint.weights[:, k:], constraint.values[:, k:], constraint.noise_std[:, k:]
    )
    joint = condition(prior, constraint)
    sequential = condition(condition(prior, first), second)
    scale = float(prior.covariance.diagonal().max())
    assert torch.allclose(sequential.mean, joint.mean, atol=1e-8 * scale)
    assert torch.allclose(sequential.variance, joint.variance, atol=1e-8 * scale)


@FAST
@given(problem=problems(noisy=False), factor=st.floats(-1e3, 1e3))
def test_redundant_rows_are_reported_as_singular(problem, factor):
    prior, constraint = problem
    if abs(factor) < 1e-3:
        factor = 1.0
    copy = LinearConstraint(constraint.weights * factor, constraint.values * factor, 0.0)
    with pytest.raises(ValueError, match="constraint: G Sigma G\\^T \\+ R is singular"):
        condition(prior, constraint.stack(copy))
    with pytest.raises(ValueError, match="singular"):
        project(prior, constraint.stack(copy))


@FAST
@given(grid=grids(), noise=st.floats(1e-6, 1e3))
def test_constraint_on_zero_variance_points_needs_noise(grid, noise):
    variance = torch.ones(grid.shape, dtype=torch.float64)
    variance[:, 0] = 0.0
    prior = GaussianPrediction(
        torch.zeros(grid.shape), DiagonalCovariance(variance.reshape(-1)), grid
    )
    with pytest.raises(ValueError, match="singular .*zero prior variance"):
        condition(prior, dirichlet_constraint(grid, left=1.0))
    posterior = condition(prior, dirichlet_constraint(grid, left=1.0, noise_std=noise))
    assert torch.equal(posterior.mean[:, 0], prior.mean[:, 0])  # nothing to move: variance 0
    assert torch.isfinite(posterior.mean).all() and torch.isfinite(posterior.variance).all()


def test_single_point_x_axis_is_rejected_by_the_grid():
    """One x point would make the trapezoid mass row empty (weights 0): the Grid refuses it,
    naming the axis, before any constraint is built; the explicit opt-in still conditions
    to a singular-row error, never NaN."""
    with pytest.raises(ValueError, match="x: expected at least 2 positions"):
        Grid([0.0, 1.0], [0.5])
    grid = Grid([0.0, 1.0], [0.5], allow_single_point=True)
    prior = GaussianPrediction(torch.zeros(2, 1), DiagonalCovariance(torch.ones(2)), grid)
    with pytest.raises(ValueError, match="singular"):
        condition(prior, conservation_constraint(grid, torch.ones(2)))


@FAST
@given(problem=problems(), empty=st.sampled_from([[], ()]))
def test_empty_constraint_list_is_the_identity(problem, empty):
    prior, _ = problem
    assert condition(prior, empty) is prior
    assert project(prior, empty) is prior


def test_constraint_with_zero_rows_is_the_identity():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    prior = GaussianPrediction(torch.zeros(3, 4), DiagonalCovariance(torch.ones(12)), grid)
    empty = LinearConstraint(torch.zeros(3, 0, 4), torch.zeros(3, 0), 0.0)
    assert torch.equal(condition(prior, empty).mean, prior.mean)
    assert torch.equal(project(prior, empty).mean, prior.mean)


@FAST
@given(problem=problems(noisy=False), scale=st.floats(1e-3, 1e3))
def test_row_scaling_does_not_change_the_posterior(problem, scale):
    """G u = b and (c G) u = c b are one constraint: the posterior must not depend on c."""
    prior, constraint = problem
    scaled = LinearConstraint(constraint.weights * scale, constraint.values * scale, 0.0)
    reference = condition(prior, constraint)
    result = condition(prior, scaled)
    bound = 1e-7 * (1 + float(reference.mean.abs().max()))
    assert torch.allclose(result.mean, reference.mean, atol=bound)


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_rows_in_very_different_units_are_not_singular(scale):
    """A mass row in units 1e-8 beside a Dirichlet row in units 1: not redundant."""
    grid = Grid.uniform((0, 1), (0, 1), 3, 6)
    prior = GaussianPrediction(
        normal(0, 3, 6), DiagonalCovariance(torch.ones(18, dtype=torch.float64)), grid
    )
    mass = conservation_constraint(grid, torch.ones(3))
    wall = dirichlet_constraint(grid, left=0.5)
    scaled = LinearConstraint(mass.weights * scale, mass.values * scale, 0.0)
    reference = condition(prior, mass.stack(wall))
    result = condition(prior, scaled.stack(wall))
    assert torch.allclose(result.mean, reference.mean, atol=1e-10)


def test_condition_names_wrong_argument_types():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    prior = GaussianPrediction(torch.zeros(3, 4), DiagonalCovariance(torch.ones(12)), grid)
    with pytest.raises(ValueError, match="prediction: expected a probcons Posterior .*, got str"):
        condition("prior", periodic_constraint(grid))
    with pytest.raises(ValueError, match="constraint: expected a probcons LinearConstraint"):
        condition(prior, torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"constraint(\[0\])?: expected a probcons LinearConst"):
        project(prior, ["rows"])


def test_constraint_list_entries_are_checked():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    prior = GaussianPrediction(torch.zeros(3, 4), DiagonalCovariance(torch.ones(12)), grid)
    with pytest.raises(ValueError, match=r"constraint\[1\]: expected a probcons LinearConstraint"):
        condition(prior, [periodic_constraint(grid), "rows"])


# --- the pseudo-inverse option condition(..., singular="pinv") -------------------------------


def test_pseudo_inverse_drops_consistent_redundant_rows():
    grid = Grid.uniform((0, 1), (0, 1), 3, 5)
    prior = GaussianPrediction(normal(1, 3, 5), make_covariance("dense", grid, 1), grid)
    mass = conservation_constraint(grid, torch.ones(3))
    expected = condition(prior, mass)
    doubled = LinearConstraint(2 * mass.weights, 2 * mass.values, 0.0)
    result = condition(prior, mass.stack(doubled), singular="pinv")
    assert torch.allclose(result.mean, expected.mean, atol=1e-12)
    assert torch.allclose(result.covariance.to_dense(), expected.covariance.to_dense(), atol=1e-12)
    again = condition(expected, mass, singular="pinv")  # already satisfied: the identity
    assert torch.allclose(again.mean, expected.mean, atol=1e-12)


def test_pseudo_inverse_refuses_inconsistent_redundant_rows():
    grid = Grid.uniform((0, 1), (0, 1), 3, 5)
    prior = GaussianPrediction(normal(1, 3, 5), make_covariance("diagonal", grid, 1), grid)
    mass = conservation_constraint(grid, torch.ones(3))
    other = conservation_constraint(grid, 2 * torch.ones(3))
    with pytest.raises(ValueError, match="inconsistent"):
        condition(prior, mass.stack(other), singular="pinv")


# --- Pyro entry points ---------------------------------------------------------------------


@FAST
@given(
    n=st.integers(2, 6),
    rows=st.integers(1, 3),
    seed=st.integers(0, 1000),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_exact_posterior_of_plain_pyro_model_matches_condition(n, rows, seed, dtype):
    rows = min(rows, n - 1)
    loc = normal(seed, n).to(dtype)
    scale = (torch.rand(n, generator=generator(seed), dtype=torch.float64) + 0.5).to(dtype)
    matrix = normal(seed + 1, rows, n)
    observed = normal(seed + 2, rows)

    def model():
        u = pyro.sample("u", dist.Normal(loc, scale).to_event(1))
        flat = u.double().reshape(-1)  # see test_one_dimensional_latent_keeps_its_shape
        pyro.sample("sums", dist.Delta(matrix @ flat, event_dim=1), obs=observed)

    posterior = exact_posterior(model)
    grid = Grid([0.0], torch.arange(n, dtype=torch.float64))
    prior = GaussianPrediction(
        loc.double().reshape(1, n), DiagonalCovariance(scale.double() ** 2), grid
    )
    expected = condition(prior, dense_constraint(matrix, observed))
    assert posterior.mean.dtype == torch.float64
    assert torch.allclose(posterior.mean, expected.mean, atol=1e-10)
    assert torch.allclose(posterior.variance, expected.variance, atol=1e-10)
    draws = ConstrainedPredictive(model, num_samples=4)(generator=generator(seed))["u"]
    assert (draws.reshape(4, n) @ matrix.T - observed).abs().max() < 1e-9


@pytest.mark.parametrize(
    "latent",
    [
        "normal-to-event",
        "multivariate",
        "normal-batch",
        "normal-grid",
    ],
)
def test_latent_is_seen_in_its_own_shape(latent):
    """Generic sites index the latent as the model wrote it: u[1] for (3,), u[1, 2] for (2, 3)."""
    shape = (2, 3) if latent == "normal-grid" else (3,)
    zeros = torch.zeros(shape, dtype=torch.float64)
    matrix = normal(0, 1, 6 if latent == "normal-grid" else 3)

    def model():
        if latent == "normal-to-event":
            u = pyro.sample("u", dist.Normal(zeros, 1.0).to_event(1))
        elif latent == "multivariate":
            u = pyro.sample("u", dist.MultivariateNormal(zeros, torch.eye(3).double()))
        else:
            u = pyro.sample("u", dist.Normal(zeros, 1.0))
        flat = u.reshape(-1)
        pyro.sample("y", dist.Delta(matrix @ flat, event_dim=1), obs=torch.ones(1).double())
        pyro.sample("z", dist.Normal(u[-1, -1] if u.dim() == 2 else u[1], 0.1), obs=0.5 * ones())

    posterior = exact_posterior(model)
    size = matrix.shape[1]
    grid = Grid([0.0], torch.arange(size, dtype=torch.float64))
    prior = GaussianPrediction(torch.zeros(1, size), DiagonalCovariance(torch.ones(size)), grid)
    picked = torch.eye(size, dtype=torch.float64)[size - 1 if latent == "normal-grid" else 1]
    rows = torch.cat([matrix, picked[None]])
    constraint = dense_constraint(rows, torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.1]))
    expected = condition(prior, constraint).mean
    assert torch.allclose(posterior.mean.reshape(-1), expected.reshape(-1), atol=1e-12)


def ones():
    return torch.tensor(1.0, dtype=torch.float64)


def test_pyro_entry_points_name_bad_arguments():
    grid = Grid.uniform((0, 1), (0, 1), 2, 3)
    prior = GaussianPrediction(torch.zeros(2, 3), DiagonalCovariance(torch.ones(6)), grid)
    with pytest.raises(
        ValueError, match="prediction: expected a probcons Posterior .*, got Tensor"
    ):
        GaussianField(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="constraint: expected a LinearConstraint, got str"):
        ConstraintObservation("rows", torch.zeros(2, 3))
    for count in (0, -2, 1.5):
        with pytest.raises(ValueError, match="num_samples: expected a positive integer"):
            ConstrainedPredictive(lambda: None, num_samples=count)

    def model():
        u = pyro.sample("u", GaussianField(prior))
        observe_constraint("wall", dirichlet_constraint(grid, left=0.0), u)

    with pytest.raises(ValueError, match=r"latent: expected one of the sample sites of model"):
        exact_posterior(model, latent="v")


def test_constraint_site_on_another_grid_names_the_grid():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    prior = GaussianPrediction(torch.zeros(3, 4), DiagonalCovariance(torch.ones(12)), grid)
    other = Grid.uniform((0, 1), (0, 1), 2, 4)

    def model():
        u = pyro.sample("u", GaussianField(prior))
        observe_constraint("wall", dirichlet_constraint(other, left=0.0), u)

    with pytest.raises(ValueError, match=r"field: expected .*\(2, 4\), got .*\(3, 4\)"):
        exact_posterior(model)


# --- metrics -------------------------------------------------------------------------------


@FAST
@given(
    values=arrays(np.float64, (3, 4), elements=st.floats(-1e3, 1e3)),
    shift=arrays(np.float64, (3, 4), elements=st.floats(-1e3, 1e3)),
    variance=arrays(np.float64, (3, 4), elements=st.floats(1e-6, 1e3)),
)
def test_metrics_agree_with_independent_formulas(values, shift, variance):
    mean, truth = torch.as_tensor(values), torch.as_tensor(values + shift)
    variance = torch.as_tensor(variance)
    difference = (values + shift) - values
    assert metrics.mse(mean, truth) == pytest.approx(np.mean(difference**2), rel=1e-12)
    assert metrics.mse(mean, mean) == 0.0
    log_density = metrics.gaussian_log_likelihood(mean, variance, truth).numpy()
    reference = stats.norm.logpdf(values + shift, values, np.sqrt(variance.numpy()))
    np.testing.assert_allclose(log_density, reference, rtol=1e-10, atol=1e-10)
    crps = metrics.crps_gaussian(mean, variance, truth)
    assert np.all(np.isfinite(crps)) and np.all(crps >= 0)
    inside = metrics.gaussian_interval_coverage(mean, variance, truth, 0.9).numpy()
    half_width = stats.norm.ppf(0.95) * np.sqrt(variance.numpy())
    np.testing.assert_array_equal(inside, np.abs(shift) <= half_width)


@FAST
@given(level=st.floats(0.05, 0.95), seed=st.integers(0, 1000))
def test_sample_interval_coverage_is_near_its_level(level, seed):
    samples = normal(seed, 4000, 2, 3)
    truth = normal(seed + 1, 2000, 2, 3)  # many truths: the empirical coverage of the interval
    lower, upper = metrics.central_interval(samples, level)
    covered = ((truth >= lower) & (truth <= upper)).double().mean()
    assert abs(float(covered) - level) < 0.05


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5, math.nan])
def test_sample_interval_level_is_checked(level):
    with pytest.raises(ValueError, match="level: expected a value in"):
        metrics.central_interval(torch.zeros(5, 3), level)


@pytest.mark.parametrize("level", [0.0, 1.5])
def test_gaussian_interval_level_is_checked(level):
    with pytest.raises(ValueError, match="level: expected a value in"):
        metrics.gaussian_interval_coverage(torch.zeros(3), torch.ones(3), torch.zeros(3), level)


@pytest.mark.parametrize("where", ["mean", "truth"])
def test_metrics_reject_nonfinite_input(where):
    arguments = {"mean": torch.zeros(3, 4), "truth": torch.zeros(3, 4)}
    arguments[where][1, 2] = math.nan
    with pytest.raises(ValueError, match=f"{where}: expected finite values"):
        metrics.mse(arguments["mean"], arguments["truth"])


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"truth: expected shape \(3, 4\), got \(4,\)"):
        metrics.mse(torch.zeros(3, 4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"truth: expected shape \(3, 4\), got \(4,\)"):
        metrics.gaussian_log_likelihood(torch.zeros(3, 4), torch.ones(3, 4), torch.zeros(4))


@pytest.mark.parametrize("variance", [1e-310, 5e-324])
def test_subnormal_variance_with_subnormal_noise_names_noise_not_mean(variance):
    """A subnormal prior variance conditioned with noise_std whose square is subnormal gave
    'mean: expected finite values' (NaN from S^-1); the constraint now refuses the noise_std."""
    grid = Grid(torch.linspace(0, 1, 3), torch.linspace(0, 1, 4))
    prior = GaussianPrediction(
        torch.zeros(3, 4), DiagonalCovariance(torch.full((12,), variance)), grid
    )
    with pytest.raises(
        ValueError, match=r"noise_std: expected 0 or values >= 1.49e-154.*got 1e-160"
    ):
        LinearConstraint(torch.ones(3, 1, 4), torch.ones(3, 1), noise_std=1e-160)
    posterior = condition(
        prior, LinearConstraint(torch.ones(3, 1, 4), torch.ones(3, 1), noise_std=0.1)
    )
    assert torch.isfinite(posterior.mean).all()


@pytest.mark.parametrize("weight", [1e300, 1e160, 1e154])
def test_weights_whose_squares_overflow_are_named(weight):
    """Weights of 1e300 were reported as a singular system (G Sigma G^T overflowed to inf)."""
    weights = torch.full((3, 1, 4), weight, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"weights: expected sums of squares per row <= 1.8e\+308"):
        LinearConstraint(weights, torch.zeros(3, 1), noise_std=0.0)
    LinearConstraint(torch.full((3, 1, 4), 1e150, dtype=torch.float64), torch.zeros(3, 1), 0.0)


def test_noise_std_bool_and_condition_none_stay_fixed():
    grid = Grid(torch.linspace(0, 1, 3), torch.linspace(0, 1, 4))
    prior = GaussianPrediction(torch.zeros(3, 4), DiagonalCovariance(torch.ones(12)), grid)
    with pytest.raises(ValueError, match="noise_std"):
        conservation_constraint(grid, torch.ones(3), noise_std=True)
    with pytest.raises(ValueError, match="constraint: expected a probcons LinearConstraint"):
        condition(prior, None)
