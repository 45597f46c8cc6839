"""Bound sites and truncated draws: checked against rejection sampling and scipy's truncnorm."""

import math
import time

import pyro
import pytest
import torch
from pyro import poutine
from scipy.stats import ks_2samp, truncnorm

from probcons.constraints import LinearConstraint
from probcons.covariance import (
    BlockCovariance,
    DenseCovariance,
    DiagonalCovariance,
    LowRankCovariance,
)
from probcons.errors import SingularConstraintError, UsageError
from probcons.grid import Grid
from probcons.inference import GaussianField
from probcons.inference.bounds import (
    BoundObservation,
    Bounds,
    TruncatedPosterior,
    combine_bounds,
    observe_bounds,
    truncated_draws,
)
from probcons.mixture import GaussianMixture
from probcons.prediction import GaussianPrediction

KS_LEVEL = 0.01
"""A two-sample KS test per coordinate must not reject at this level (fixed seeds)."""
ROW_TOLERANCE = 1e-10
"""Exact rows hold to this, relative to |G| |u| + |b|."""


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _box(shape, lower=None, upper=None):
    low = torch.full(shape, -math.inf if lower is None else lower, dtype=torch.float64)
    high = torch.full(shape, math.inf if upper is None else upper, dtype=torch.float64)
    return Bounds(low, high)


def _rejection(prior, constraint, bounds, count, seed):
    """Draws of the (conditioned) prior that fall inside the bounds: the reference."""
    posterior = prior if constraint is None else prior.condition(constraint)
    draws = posterior.sample(count, _generator(seed))
    return draws[bounds.contains(draws)]


def _exact_rows_hold(constraint, draws):
    exact = constraint.noise_std == 0
    residual = constraint.residual(draws).abs()
    magnitude = torch.einsum("jki,...ji->...jk", constraint.weights.abs(), draws.abs())
    scale = magnitude + constraint.values.abs()
    return bool((residual <= ROW_TOLERANCE * scale)[..., exact].all())


def _assert_matches(draws, reference):
    flat, ref = draws.reshape(draws.shape[0], -1), reference.reshape(reference.shape[0], -1)
    for point in range(flat.shape[1]):
        if float(ref[:, point].std()) == 0:
            continue
        p_value = ks_2samp(flat[:, point].numpy(), ref[:, point].numpy()).pvalue
        assert p_value > KS_LEVEL, f"point {point}: KS p-value {p_value:.3g}"


def _assert_rows_and_box_match_rejection(prior, rows, bounds, drawn, rejected):
    """truncated_draws (count, seed) = `drawn` stay inside the bounds, keep the exact rows and
    match over 2000 accepted rejection draws out of (count, seed) = `rejected`."""
    draws = truncated_draws(prior, rows, bounds, drawn[0], _generator(drawn[1]))
    assert bounds.violations(draws) == 0
    assert _exact_rows_hold(rows, draws)
    reference = _rejection(prior, rows, bounds, *rejected)
    assert reference.shape[0] > 2000
    _assert_matches(draws, reference)


def _dense_prior(n, seed, mean):
    generator = _generator(seed)
    factor = torch.randn(n, n, generator=generator, dtype=torch.float64)
    matrix = factor @ factor.T / n + 0.3 * torch.eye(n, dtype=torch.float64)
    return GaussianPrediction(
        torch.as_tensor(mean, dtype=torch.float64)[None], DenseCovariance(matrix), Grid.index(1, n)
    )


# ------------------------------------------------------------------------- against references
def test_lower_bound_without_rows_matches_rejection():
    prior = GaussianPrediction(
        torch.tensor([[0.3, -0.8, 1.5]]),
        DiagonalCovariance(torch.tensor([1.0, 0.5, 2.0])),
        Grid.index(1, 3),
    )
    bounds = _box((1, 3), lower=0.0)
    draws = truncated_draws(prior, None, bounds, 3000, _generator(0))
    assert draws.shape == (3000, 1, 3)
    assert bounds.violations(draws) == 0
    _assert_matches(draws, _rejection(prior, None, bounds, 40_000, 1))


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_box_with_one_row_matches_rejection(noise):
    """A correlated 4-D Gaussian (the dense fallback), a two-sided box and a sum row."""
    prior = _dense_prior(4, 2, [0.2, 0.5, -0.1, 0.4])
    row = LinearConstraint(torch.ones(1, 1, 4), torch.tensor([[1.2]]), torch.tensor([[noise]]))
    bounds = _box((1, 4), lower=0.0, upper=0.8)
    _assert_rows_and_box_match_rejection(prior, row, bounds, (3000, 3), (200_000, 4))


def test_two_exact_rows_in_five_dimensions_match_rejection():
    prior = _dense_prior(5, 5, [0.5, 0.2, 0.9, 0.1, 0.4])
    weights = torch.tensor([[[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 0.5, 0.0, 2.0]]])
    rows = LinearConstraint(weights, torch.tensor([[2.0, 0.9]]), torch.zeros(1, 2))
    bounds = _box((1, 5), lower=0.0)
    _assert_rows_and_box_match_rejection(prior, rows, bounds, (2000, 6), (100_000, 7))


def test_block_prior_rows_per_slice_match_rejection():
    """Two time slices with their own blocks and an exact row each (the per-slice path)."""
    generator = _generator(8)
    factor = torch.randn(2, 3, 3, generator=generator, dtype=torch.float64)
    blocks = factor @ factor.transpose(1, 2) / 3 + 0.2 * torch.eye(3, dtype=torch.float64)
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 2, 3)
    prior = GaussianPrediction(
        torch.tensor([[0.1, 0.6, -0.2], [0.4, 0.0, 0.3]]), BlockCovariance(blocks), grid
    )
    rows = LinearConstraint(
        torch.tensor([[[1.0, 2.0, 1.0]], [[1.0, 1.0, 1.0]]]),
        torch.tensor([[1.0], [0.8]]),
        torch.zeros(2, 1),
    )
    bounds = _box((2, 3), lower=0.0)
    draws = truncated_draws(prior, rows, bounds, 3000, _generator(9))
    assert bounds.violations(draws) == 0
    assert _exact_rows_hold(rows, draws)
    _assert_matches(draws, _rejection(prior, rows, bounds, 60_000, 10))


def test_one_point_matches_scipy_truncnorm():
    mean, sd, low, high = 1.0, 2.0, 0.5, 3.0
    prior = GaussianPrediction(
        torch.tensor([[mean]]), DiagonalCovariance(torch.tensor([sd**2])), Grid.index(1, 1)
    )
    draws = truncated_draws(prior, None, _box((1, 1), low, high), 20_000, _generator(11))
    reference = truncnorm((low - mean) / sd, (high - mean) / sd, loc=mean, scale=sd)
    count = draws.numel()
    error = math.sqrt(reference.var() / count)
    assert abs(float(draws.mean()) - reference.mean()) < 4 * error
    # the variance's standard error from the fourth central moment
    fourth = reference.expect(lambda u: (u - reference.mean()) ** 4)
    variance_error = math.sqrt((fourth - reference.var() ** 2) / count)
    assert abs(float(draws.var()) - reference.var()) < 4 * variance_error


def test_chains_forget_a_start_far_from_the_mass():
    """Mean far below the wall: the mass sits at the wall, the start is inset from it."""
    prior = _dense_prior(3, 12, [-2.0, -1.5, 0.5])
    bounds = _box((1, 3), lower=0.0, upper=2.0)
    draws = truncated_draws(prior, None, bounds, 3000, _generator(13))
    _assert_matches(draws, _rejection(prior, None, bounds, 1_000_000, 14))


# -------------------------------------------------------------------------------- mixtures
def test_mixture_draws_each_component_truncated_with_equal_weights():
    grid = Grid.index(1, 3)
    variance = DiagonalCovariance(torch.ones(3, dtype=torch.float64))
    near = GaussianPrediction(torch.tensor([[0.2, -0.5, 0.4]]), variance, grid)
    far = GaussianPrediction(torch.tensor([[50.0, 49.0, 51.0]]), variance, grid)
    mixture = GaussianMixture([near, far])
    row = LinearConstraint(torch.ones(1, 1, 3), torch.tensor([[1.0]]), torch.tensor([[2.0]]))
    bounds = _box((1, 3), lower=0.0)
    draws = truncated_draws(mixture, row, bounds, 4000, _generator(15))
    assert bounds.violations(draws) == 0
    from_far = draws[:, 0, 0] > 25
    share = float(from_far.double().mean())
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / 4000)
    _assert_matches(draws[~from_far], _rejection(near, row, bounds, 100_000, 16))
    _assert_matches(draws[from_far], _rejection(far, row, bounds, 20_000, 17))


# ------------------------------------------------------------------------------ Stefan size
def _stefan_like(n_t, n_x, seed=0):
    """A front that moves right; u = 0 past it (prior mean near 0 there), one mass row per slice."""
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t, n_x)
    front = 0.2 + 0.6 * grid.t[:, None]
    profile = torch.where(grid.x[None] < front, 1 - grid.x[None] / front, 0.0)
    noise = torch.randn(n_t, n_x, generator=_generator(seed), dtype=torch.float64)
    prior = GaussianPrediction(
        0.9 * profile + 0.01 * noise,
        DiagonalCovariance(torch.full((n_t * n_x,), 0.05**2, dtype=torch.float64)),
        grid,
    )
    weights = torch.full((n_t, 1, n_x), 1.0 / (n_x - 1), dtype=torch.float64)
    weights[..., 0] /= 2
    weights[..., -1] /= 2
    mass = (weights[:, 0] * profile).sum(-1, keepdim=True)
    rows = LinearConstraint(weights, mass, torch.zeros(n_t, 1), ("mass",))
    return prior, rows, _box((n_t, n_x), 0.0, 1.0)


def test_stefan_like_small_grid_is_feasible():
    prior, rows, bounds = _stefan_like(21, 41)
    draws = truncated_draws(prior, rows, bounds, 10, _generator(18))
    assert bounds.violations(draws) == 0
    assert _exact_rows_hold(rows, draws)


@pytest.mark.slow
def test_stefan_sized_grid_is_feasible_and_timed():
    prior, rows, bounds = _stefan_like(201, 201)
    start, cpu = time.perf_counter(), time.process_time()
    draws = truncated_draws(prior, rows, bounds, 100, _generator(19))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"\n100 truncated draws on a 201 x 201 grid: {elapsed:.1f} s wall, {cpu:.1f} s CPU")
    assert bounds.violations(draws) == 0
    assert _exact_rows_hold(rows, draws)


def test_rank_deficient_block_prior_keeps_rows_and_bounds():
    """Squared-exponential blocks on 30 points are singular to round-off."""
    n_t, n_x = 3, 30
    x = torch.linspace(0, 1, n_x, dtype=torch.float64)
    kernel = 0.04 * torch.exp(-((x[:, None] - x[None]) ** 2) / (2 * 0.2**2))
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), n_t, n_x)
    mean = (0.3 - x).clamp_min(0).expand(n_t, n_x) - 0.05
    prior = GaussianPrediction(
        mean, BlockCovariance(kernel.expand(n_t, n_x, n_x).clone(), validate=False), grid
    )
    rows = LinearConstraint(
        torch.full((n_t, 1, n_x), 1.0 / n_x), torch.full((n_t, 1), 0.05), torch.zeros(n_t, 1)
    )
    bounds = _box((n_t, n_x), 0.0)
    draws = truncated_draws(prior, rows, bounds, 50, _generator(23))
    assert bounds.violations(draws) == 0
    assert _exact_rows_hold(rows, draws)


def test_rows_that_mix_time_slices_use_the_dense_fallback():
    prior, _, bounds = _stefan_like(3, 4)
    flat = LinearConstraint(torch.ones(1, 1, 12) / 12, torch.tensor([[0.2]]), torch.zeros(1, 1))
    draws = truncated_draws(prior, flat, bounds, 20, _generator(24))
    assert bounds.violations(draws) == 0
    assert _exact_rows_hold(flat, draws.reshape(20, 1, 12))
    big, _, big_bounds = _stefan_like(50, 50)
    wide = LinearConstraint(torch.ones(1, 1, 2500), torch.tensor([[10.0]]), torch.zeros(1, 1))
    with pytest.raises(UsageError, match="prior: expected .*rows that mix time slices"):
        truncated_draws(big, wide, big_bounds, 2)


# --------------------------------------------------------------------------------- errors
def test_infeasible_slice_names_the_slice_and_row():
    prior, rows, bounds = _stefan_like(4, 6)
    values = rows.values.clone()
    values[2] = -0.1  # a positive-weight mass that must be negative, with u >= 0
    bad = LinearConstraint(rows.weights, values, rows.noise_std, rows.names)
    with pytest.raises(SingularConstraintError, match=r"time slice 2.*'mass'"):
        truncated_draws(prior, bad, bounds, 2, _generator(0))


def test_unsupported_priors_are_refused():
    grid = Grid.index(50, 50)  # N = 2500: beyond the dense fallback
    factor = torch.ones(2500, 1, dtype=torch.float64)
    low_rank = GaussianPrediction(
        torch.zeros(50, 50), LowRankCovariance(torch.ones(2500), factor), grid
    )
    with pytest.raises(UsageError, match="prior: expected .*LowRankCovariance"):
        truncated_draws(low_rank, None, _box((50, 50), 0.0), 2)
    with pytest.raises(UsageError, match="prior: expected a GaussianPrediction"):
        truncated_draws(torch.zeros(3, 3), None, _box((3, 3), 0.0), 2)
    small = GaussianPrediction(
        torch.zeros(2, 3), LowRankCovariance(torch.ones(6), torch.ones(6, 1)), Grid.index(2, 3)
    )
    draws = truncated_draws(small, None, _box((2, 3), 0.0), 5, _generator(1))  # dense fallback
    assert _box((2, 3), 0.0).violations(draws) == 0


def test_bad_arguments_name_the_argument():
    field = torch.zeros(3, 4)
    with pytest.raises(UsageError, match="lower: expected .*broadcastable to \\(3, 4\\)"):
        observe_bounds("b", field, lower=torch.zeros(5))
    with pytest.raises(UsageError, match="lower: expected"):
        observe_bounds("b", field, lower=math.nan)
    with pytest.raises(UsageError, match="lower: expected"):
        observe_bounds("b", field, lower=math.inf)
    with pytest.raises(UsageError, match="upper: expected"):
        observe_bounds("b", field, lower=None, upper=-math.inf)
    with pytest.raises(UsageError, match="upper: expected upper > lower"):
        observe_bounds("b", field, lower=1.0, upper=1.0)
    with pytest.raises(UsageError, match="lower, upper: expected at least one bound"):
        observe_bounds("b", field, lower=None)
    with pytest.raises(UsageError, match="where: expected None or a bool tensor"):
        observe_bounds("b", field, where=torch.ones(3, 4))
    with pytest.raises(UsageError, match="where: expected None or a bool tensor"):
        observe_bounds("b", field, where=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(UsageError, match="lower: expected"):
        observe_bounds("b", field, lower=True)
    prior, rows, bounds = _stefan_like(4, 6)
    with pytest.raises(UsageError, match="bounds: expected Bounds of shape \\(4, 6\\)"):
        truncated_draws(prior, rows, _box((4, 5), 0.0), 2)
    with pytest.raises(UsageError, match="steps: expected a positive integer"):
        truncated_draws(prior, rows, bounds, 2, steps=0)
    with pytest.raises(UsageError, match="upper: expected upper > lower"):
        Bounds(torch.zeros(2, 2), torch.zeros(2, 2))


# ------------------------------------------------------------------------- bounds and Pyro
def test_bounds_count_and_intersect():
    one = _box((1, 3), lower=0.0)
    two = Bounds(torch.full((1, 3), -1.0), torch.tensor([[1.0, 2.0, math.inf]]))
    both = one.intersect(two)
    assert torch.equal(both.lower, torch.zeros(1, 3, dtype=torch.float64))
    assert torch.equal(both.upper, torch.tensor([[1.0, 2.0, math.inf]], dtype=torch.float64))
    fields = torch.tensor([[[0.5, 2.5, 7.0]], [[-0.25, 1.0, 0.0]]])
    assert both.violations(fields) == 2
    assert both.max_violation(fields) == 0.5
    assert combine_bounds([one, two]).violations(fields) == 2
    with pytest.raises(SingularConstraintError, match="x index 0"):
        one.intersect(Bounds(torch.full((1, 3), -2.0), torch.full((1, 3), -1.0)))


def test_observe_bounds_site_in_a_pyro_model():
    grid = Grid.index(2, 3)
    prior = GaussianPrediction(torch.ones(2, 3), DiagonalCovariance(torch.ones(6)), grid)
    mask = torch.tensor([[True, True, False], [True, True, True]])

    def model():
        u = pyro.sample("u", GaussianField(prior))
        observe_bounds("positive", u, lower=0.0, upper=2.0, where=mask)

    inside = torch.tensor([[0.5, 1.0, -3.0], [1.5, 0.0, 2.0]], dtype=torch.float64)
    outside = inside.clone()
    outside[1, 0] = 2.5
    for field, expected in ((inside, 0.0), (outside, -math.inf)):
        trace = poutine.trace(poutine.condition(model, data={"u": field})).get_trace()
        site = trace.nodes["positive"]
        assert site["is_observed"] and bool(site["value"])
        assert isinstance(site["fn"], BoundObservation)
        assert site["fn"].lower[0, 2] == -math.inf and site["fn"].upper[0, 2] == math.inf
        assert float(site["fn"].log_prob(site["value"])) == expected
        assert float(site["fn"].log_prob(torch.tensor(False))) == (
            -math.inf if expected == 0.0 else 0.0
        )
    bounds = combine_bounds([trace.nodes["positive"]["fn"]])
    assert bounds.violations(inside) == 0


# ---------------------------------------------------------------------- TruncatedPosterior
def test_truncated_posterior_is_a_posterior_with_monte_carlo_moments():
    prior, rows, bounds = _stefan_like(3, 5)
    posterior = TruncatedPosterior(prior, rows, bounds, steps=5)
    draws = posterior.sample(40, _generator(20))
    assert draws.shape == (40, 3, 5)
    assert posterior.bounds.violations(draws) == 0
    assert _exact_rows_hold(posterior.constraint, draws)
    mean, variance = posterior.mean, posterior.variance
    assert torch.equal(mean, posterior.mean) and mean.shape == (3, 5)
    assert bool((mean >= 0).all()) and bool((variance >= 0).all())
    assert posterior.rsample((2, 3)).shape == (2, 3, 3, 5)
    with pytest.raises(UsageError, match="base_samples"):
        posterior.rsample((2,), base_samples=torch.zeros(2, 15))
    with pytest.raises(UsageError, match="base_samples"):
        posterior.draws_from_base(torch.zeros(2, 15))
    with pytest.raises(UsageError, match="condition the prior"):
        posterior.condition(rows)
    with pytest.raises(UsageError, match="constraint"):
        posterior.project(rows)
    moved = posterior.with_grid(Grid.index(1, 15))
    assert moved.sample(4, _generator(21)).shape == (4, 1, 15)
    assert torch.allclose(
        moved.sample(4, _generator(22)).reshape(4, 3, 5), posterior.sample(4, _generator(22))
    )


# ------------------------------------------------------------------------- faces of the box
def _face_reference(prior, pinned, corner, bounds, count, seed):
    """Rejection draws of the prior conditioned on u_i = corner_i at the pinned points (exact
    unit rows, the library's `condition`), kept where the free points are inside the bounds."""
    index = pinned.reshape(-1).nonzero().reshape(-1)
    n = prior.grid.size
    weights = torch.zeros(1, index.numel(), n, dtype=torch.float64)
    weights[0, torch.arange(index.numel()), index] = 1.0
    rows = LinearConstraint(weights, corner.reshape(-1)[index][None], torch.zeros(1, index.numel()))
    draws = prior.with_grid(Grid.index(1, n)).condition(rows).sample(count, _generator(seed))
    draws = draws.reshape(count, *prior.grid.shape)
    free = ~pinned
    inside = ((draws >= bounds.lower) & (draws <= bounds.upper)) | ~free
    return draws[inside.all(-1).all(-1)]


@pytest.mark.parametrize("structure", ["diagonal", "dense"])
def test_row_at_the_end_of_its_range_pins_the_points_it_reads(structure):
    """u_0 + u_1 = 0 with u >= 0 leaves the face u_0 = u_1 = 0: those points are exactly 0 in
    every draw and the free ones follow the prior conditioned on them, truncated."""
    mean = [0.3, -0.2, 0.5, 0.1]
    if structure == "diagonal":
        prior = GaussianPrediction(
            torch.tensor([mean], dtype=torch.float64),
            DiagonalCovariance(torch.tensor([0.5, 0.4, 0.3, 0.6], dtype=torch.float64)),
            Grid.index(1, 4),
        )
    else:
        prior = _dense_prior(4, 11, mean)
    row = LinearConstraint(
        torch.tensor([[[1.0, 1.0, 0.0, 0.0]]]), torch.zeros(1, 1), torch.zeros(1, 1)
    )
    bounds = _box((1, 4), lower=0.0)
    draws = truncated_draws(prior, row, bounds, 3000, _generator(12))
    assert (draws[..., :2] == 0).all()
    assert bounds.violations(draws) == 0
    pinned = torch.tensor([[True, True, False, False]])
    reference = _face_reference(prior, pinned, torch.zeros(1, 4), bounds, 40_000, 13)
    assert reference.shape[0] > 2000
    _assert_matches(draws[..., 2:], reference[..., 2:])


def test_stefan_like_first_slice_with_zero_mass_is_pinned_to_zero():
    """A conservation row asking zero mass with u >= 0 (U(0) = 0 on the GPME problems) leaves
    u = 0 on its whole slice; the other slices are sampled as before."""
    grid = Grid.uniform((0.0, 1.0), (0.0, 1.0), 4, 9)
    generator = _generator(14)
    mean = 0.2 * torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    variance = 0.01 + 0.01 * torch.rand(grid.size, generator=generator, dtype=torch.float64)
    prior = GaussianPrediction(mean, DiagonalCovariance(variance), grid)
    weights = grid.trapezoid_weights().expand(grid.n_t, 1, grid.n_x)
    mass = torch.tensor([[0.0], [0.1], [0.2], [0.3]], dtype=torch.float64)
    rows = LinearConstraint(weights, mass, torch.zeros(grid.n_t, 1))
    bounds = _box(grid.shape, lower=0.0, upper=1.0)
    draws = truncated_draws(prior, rows, bounds, 200, _generator(15))
    assert (draws[:, 0] == 0).all()
    assert bounds.violations(draws) == 0 and _exact_rows_hold(rows, draws)
    assert float(draws[:, 1:].std(0).min()) > 0
