"""GPME problems: exact solutions against the PDE, the mass and the fluxes, computed independently."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from probcons.grid import Grid
from probcons.problems import (
    PROBLEMS,
    Contexts,
    Problem,
    get_problem,
    sample_contexts,
    sample_targets,
)

torch.set_num_threads(1)

# Conductivities written out here, independently of Problem.diffusivity.
CONDUCTIVITY = {
    "diffusion": lambda u, k: torch.full_like(u, k),
    "pme": lambda u, m: u**m,
    "stefan": lambda u, u_star: (u >= u_star).to(torch.float64),
}


def finite_difference_residual(problem, parameter, conductivity, t, x, h_t, h_x):
    """u_t - (k(u) u_x)_x with centred differences (second order), flux at half points."""

    def u(tt, xx):
        return problem.solution(tt, xx, parameter)

    u_t = (u(t + h_t, x) - u(t - h_t, x)) / (2 * h_t)
    flux_right = conductivity(u(t, x + h_x / 2), parameter) * (u(t, x + h_x) - u(t, x)) / h_x
    flux_left = conductivity(u(t, x - h_x / 2), parameter) * (u(t, x) - u(t, x - h_x)) / h_x
    return u_t - (flux_right - flux_left) / h_x


def smooth_points(name, parameter, n=64, seed=0):
    """(t, x) points whose stencils (steps up to the base steps) stay away from t = 0 and fronts."""
    generator = torch.Generator().manual_seed(seed)
    draw_t, draw_x = torch.rand(2, n, generator=generator, dtype=torch.float64)
    if name == "diffusion":
        return 0.2 + 0.7 * draw_t, 0.3 + 5.7 * draw_x
    if name == "pme":  # front at x = t: stay 0.2 behind it
        t = 0.4 + 0.5 * draw_t
        return t, 0.05 + (t - 0.25) * draw_x
    alpha = get_problem("stefan").constants(parameter).alpha
    t = 0.03 + 0.07 * draw_t
    return t, 0.01 + (0.7 * alpha * torch.sqrt(t) - 0.01) * draw_x


BASE_STEPS = {"diffusion": (0.02, 0.1), "pme": (0.02, 0.02), "stefan": (0.002, 0.01)}
ORDER_CASES = [
    ("diffusion", 1.0),
    ("diffusion", 5.0),
    ("pme", 1.5),  # m = 1 is linear in (t, x): the differences are exact, no order to observe
    ("pme", 3.0),
    ("pme", 6.0),
    ("stefan", 0.5),
    ("stefan", 0.6),
    ("stefan", 0.7),
]


def rms(values):
    return float(values.pow(2).mean().sqrt())


@pytest.mark.parametrize(("name", "parameter"), ORDER_CASES)
def test_exact_solution_satisfies_pde_to_second_order(name, parameter):
    problem = get_problem(name)
    t, x = smooth_points(name, parameter)
    h_t, h_x = BASE_STEPS[name]
    residuals = [
        rms(
            finite_difference_residual(
                problem, parameter, CONDUCTIVITY[name], t, x, h_t / 2**level, h_x / 2**level
            )
        )
        for level in range(3)
    ]
    orders = [
        math.log2(coarse / fine) for coarse, fine in zip(residuals, residuals[1:], strict=False)
    ]
    assert all(1.8 <= order <= 2.2 for order in orders), (residuals, orders)
    # the residual is small next to the terms it balances
    u_t_scale = rms(
        (problem.solution(t + h_t, x, parameter) - problem.solution(t - h_t, x, parameter))
        / (2 * h_t)
    )
    assert residuals[-1] < 1e-2 * u_t_scale


def test_pme_linear_case_is_exact_under_differences():
    problem = get_problem("pme")
    t, x = smooth_points("pme", 1.0)
    residual = finite_difference_residual(problem, 1.0, CONDUCTIVITY["pme"], t, x, 0.01, 0.01)
    assert float(residual.abs().max()) < 1e-10


@pytest.mark.parametrize(
    ("name", "parameter", "wrong_conductivity"),
    [
        ("diffusion", 3.0, lambda u, k: torch.full_like(u, 1.2 * k)),
        ("pme", 3.0, lambda u, m: u ** (m + 1)),
    ],
)
def test_residual_does_not_vanish_for_the_wrong_equation(name, parameter, wrong_conductivity):
    problem = get_problem(name)
    t, x = smooth_points(name, parameter)
    h_t, h_x = BASE_STEPS[name]
    coarse = rms(finite_difference_residual(problem, parameter, wrong_conductivity, t, x, h_t, h_x))
    fine = rms(
        finite_difference_residual(problem, parameter, wrong_conductivity, t, x, h_t / 4, h_x / 4)
    )
    assert fine > 0.5 * coarse > 1e-3


def test_diffusivity_matches_the_equation():
    u = torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=torch.float64)
    for name, parameter in (("diffusion", 2.0), ("pme", 3.0), ("stefan", 0.6)):
        expected = CONDUCTIVITY[name](u, parameter)
        torch.testing.assert_close(get_problem(name).diffusivity(u, parameter), expected)


def trapezoid_mass_errors(problem, parameter, times, n_x):
    x = torch.linspace(*problem.x_range, n_x, dtype=torch.float64)
    values = problem.solution(times[:, None], x[None, :], parameter)
    return (torch.trapezoid(values, x, dim=-1) - problem.mass(times, parameter)).abs()


@pytest.mark.parametrize("k", [1.0, 5.0])
def test_diffusion_mass_is_zero(k):
    problem = get_problem("diffusion")
    times = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert float(trapezoid_mass_errors(problem, k, times, 257).max()) < 1e-12
    assert float(problem.mass(times, k).abs().max()) == 0.0


@pytest.mark.parametrize("m", [1.0, 3.0, 6.0])
def test_pme_trapezoid_mass_converges_at_the_front_rate(m):
    # The profile behaves like (t - x)^(1/m) at the front: worst-case error ~ dx^(1 + 1/m).
    problem = get_problem("pme")
    times = torch.linspace(0.05, 1.0, 40, dtype=torch.float64)
    errors = [float(trapezoid_mass_errors(problem, m, times, n).max()) for n in (201, 801, 3201)]
    expected_ratio = 4 ** (1 + 1 / m)
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 0.85 * expected_ratio <= coarse / fine <= 1.15 * expected_ratio, errors
    assert errors[-1] < 1e-4


def test_pme_mass_matches_closed_form_in_range():
    problem = get_problem("pme")
    times = torch.linspace(0, 1, 21, dtype=torch.float64)
    for m in (1.0, 2.5, 6.0):
        expected = m ** (1 + 1 / m) * times ** (1 + 1 / m) / (m + 1)
        torch.testing.assert_close(problem.mass(times, m), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("u_star", [0.5, 0.6, 0.7])
def test_stefan_trapezoid_mass_error_is_first_order(u_star):
    # A jump of height u* inside one cell: trapezoid error (1/2 - theta) u* dx + O(dx^2), so the
    # worst case over many front positions theta is about u* dx / 2.
    problem = get_problem("stefan")
    times = torch.linspace(0.01, 0.1, 40, dtype=torch.float64)
    for n in (201, 801, 3201):
        dx = 1.0 / (n - 1)
        worst = float(trapezoid_mass_errors(problem, u_star, times, n).max())
        assert 0.4 * u_star * dx <= worst <= 0.55 * u_star * dx, (n, worst)


def test_stefan_mass_matches_closed_form_in_range():
    problem = get_problem("stefan")
    times = torch.linspace(0, 0.1, 11, dtype=torch.float64)
    c1 = problem.constants(0.6).c1
    torch.testing.assert_close(problem.mass(times, 0.6), 2 * c1 * torch.sqrt(times / math.pi))


MASS_BALANCE_CASES = [
    ("diffusion", 1.0, 1.0, ()),
    ("diffusion", 5.0, 0.5, ()),
    ("pme", 1.0, 0.5, ()),
    ("pme", 3.0, 1.0, ()),
    ("pme", 6.0, 0.7, ()),
    ("pme", 3.0, 1.6, (1.0,)),  # past t = 1 the front has left through x = 1
    ("stefan", 0.5, 0.1, ()),
    ("stefan", 0.6, 0.05, ()),
    ("stefan", 0.7, 0.1, ()),
]


def _stefan_exit_case():
    # u* = 0.02: alpha ~ 3.36, the front leaves x = 1 at t = 1 / alpha^2 ~ 0.089 < 0.1
    exit_time = 1.0 / get_problem("stefan").constants(0.02).alpha ** 2
    return ("stefan", 0.02, 0.1, (exit_time,))


@pytest.mark.parametrize(
    ("name", "parameter", "time", "breakpoints"), MASS_BALANCE_CASES + [_stefan_exit_case()]
)
def test_mass_balance_matches_integrated_boundary_fluxes(name, parameter, time, breakpoints):
    problem = get_problem(name)

    def net_inflow(s):
        left, right = problem.boundary_flux(torch.tensor(s, dtype=torch.float64), parameter)
        return float(left - right)

    # quad samples inside (0, time), so Stefan's F_left ~ 1/sqrt(s) singularity is integrable
    inflow, error_estimate = quad(
        net_inflow, 0.0, time, points=breakpoints or None, epsabs=1e-12, epsrel=1e-10, limit=200
    )
    change = float(problem.mass(time, parameter) - problem.mass(0.0, parameter))
    assert abs(change - inflow) <= 1e-12 + 10 * error_estimate


def test_masses_past_the_front_exit_match_the_profile():
    # Once the front has left, the profile is smooth on the domain: trapezoid error O(dx^2).
    for name, parameter, time in (("pme", 3.0, 1.6), ("stefan", 0.02, 0.1)):
        problem = get_problem(name)
        times = torch.tensor([time], dtype=torch.float64)
        assert float(trapezoid_mass_errors(problem, parameter, times, 4001).max()) < 1e-6


def test_right_flux_vanishes_in_range():
    for name, parameter in (("pme", 1.0), ("pme", 6.0), ("stefan", 0.5), ("stefan", 0.7)):
        problem = get_problem(name)
        times = torch.linspace(0, problem.t_range[1], 11, dtype=torch.float64)
        assert float(problem.boundary_flux(times, parameter)[1].abs().max()) == 0.0


def test_pme_inflow_flux():
    problem = get_problem("pme")
    times = torch.linspace(0, 1, 11, dtype=torch.float64)
    for m in (1.0, 3.0):
        torch.testing.assert_close(problem.boundary_flux(times, m)[0], (m * times) ** (1 / m))


@pytest.mark.parametrize("u_star", [0.5, 0.6, 0.7])
@pytest.mark.parametrize("time", [0.02, 0.05, 0.1])
def test_stefan_condition_holds_at_the_front(u_star, time):
    problem = get_problem("stefan")
    front = problem.front_position(time, u_star)
    torch.testing.assert_close(problem.solution(time, front, u_star).item(), u_star)
    assert problem.solution(time, front * (1 + 1e-9), u_star).item() == 0.0
    # -u_x at the front from the left (one-sided, second order) against u* s'(t)
    h = 1e-4
    u_left = [problem.solution(time, front - j * h, u_star).item() for j in range(3)]
    left_flux = -(3 * u_left[0] - 4 * u_left[1] + u_left[2]) / (2 * h)
    delta = 1e-6
    speed = (
        problem.front_position(time + delta, u_star) - problem.front_position(time - delta, u_star)
    ) / (2 * delta)
    assert left_flux == pytest.approx(u_star * speed, rel=1e-6)
    assert problem.front_threshold(u_star) == pytest.approx(u_star / 2)


def test_stefan_constants_solve_the_transcendental_equation():
    problem = get_problem("stefan")
    for u_star in (1e-6, 0.02, 0.5, 0.6, 0.7, 0.99, 1 - 1e-9):
        z1, alpha, c1 = problem.constants(u_star)
        lhs = u_star * z1 * math.erf(z1) * math.exp(z1**2)
        assert lhs == pytest.approx((1 - u_star) / math.sqrt(math.pi), rel=1e-10)
        assert alpha == 2 * z1
        assert c1 == pytest.approx((1 - u_star) / math.erf(z1), rel=1e-14)


def test_time_zero_has_no_nan():
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    for name, parameter in (("diffusion", 2.0), ("pme", 3.0), ("stefan", 0.6)):
        problem = get_problem(name)
        grid = problem.grid(5, 11)
        tt, xx = grid.mesh()
        assert bool(torch.isfinite(problem.solution(tt, xx, parameter)).all())
        assert bool(torch.isfinite(problem.mass(grid.t, parameter)).all())
    stefan = get_problem("stefan")
    torch.testing.assert_close(stefan.solution(0.0, x, 0.6), (x == 0).to(torch.float64))
    assert stefan.front_position(0.0, 0.6) == 0.0
    assert float(stefan.mass(0.0, 0.6)) == 0.0
    left, right = stefan.boundary_flux(torch.tensor([0.0]), 0.6)
    assert math.isinf(float(left)) and float(right) == 0.0  # documented: inf at t = 0
    pme = get_problem("pme")
    assert float(pme.solution(0.0, x, 3.0).abs().max()) == 0.0
    assert float(pme.mass(0.0, 3.0)) == 0.0
    assert float(pme.boundary_flux(0.0, 3.0)[0]) == 0.0


def test_solution_broadcasts_and_returns_float64():
    t = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float32)
    x = torch.linspace(0, 1, 5, dtype=torch.float32)
    for name, parameter in (("diffusion", 2.0), ("pme", 3.0), ("stefan", 0.6)):
        problem = get_problem(name)
        field = problem.solution(t[:, None], x[None, :], parameter)
        assert field.shape == (3, 5) and field.dtype == torch.float64
        pointwise = torch.stack(
            [
                torch.stack([problem.solution(float(ti), float(xi), parameter) for xi in x])
                for ti in t
            ]
        )
        torch.testing.assert_close(field, pointwise)
        assert problem.solution(0.5, 0.25, parameter).dtype == torch.float64
        assert problem.mass([0.1, 0.2], parameter).dtype == torch.float64


def test_python_numbers_keep_float64_precision():
    # 0.7 must not pass through float32 on its way in
    problem = get_problem("pme")
    exact = 6 ** (7 / 6) * 0.7 ** (7 / 6) / 7
    assert float(problem.mass(0.7, 6.0)) == pytest.approx(exact, rel=1e-14)
    assert float(problem.mass([0.7], 6.0)[0]) == pytest.approx(exact, rel=1e-14)
    assert problem.solution(0.7, [0.1], 1.0).item() == pytest.approx(0.6, rel=1e-14)
    assert Contexts(t=[0.1], x=[0.2], u=[0.3]).t.item() == 0.1


def test_known_values():
    assert get_problem("diffusion").solution(0.5, math.pi / 2, 2.0).item() == pytest.approx(
        math.exp(-1.0)
    )
    assert get_problem("pme").solution(0.5, 0.25, 2.0).item() == pytest.approx(math.sqrt(0.5))
    assert get_problem("pme").solution(0.5, 0.75, 2.0).item() == 0.0
    assert get_problem("pme").front_position(0.5, 3.0) == 0.5
    assert get_problem("diffusion").front_position(0.5, 3.0) is None
    assert get_problem("diffusion").front_threshold(3.0) is None
    assert 0 < get_problem("pme").front_threshold(3.0) <= 0.05


def test_registry_and_attributes():
    assert set(PROBLEMS) == {"diffusion", "pme", "stefan"}
    for name, problem in PROBLEMS.items():
        assert isinstance(problem, Problem) and problem.name == name
        assert get_problem(name) is problem
        line = problem.describe()
        assert line.startswith(name) and "\n" not in line
        lo, hi = problem.train_range
        assert problem.parameter_domain[0] < lo < hi < problem.parameter_domain[1]
        assert problem.t_range[0] <= problem.time_of_interest <= problem.t_range[1]
    diffusion, pme, stefan = (PROBLEMS[key] for key in ("diffusion", "pme", "stefan"))
    assert (diffusion.parameter_name, pme.parameter_name, stefan.parameter_name) == (
        "k",
        "m",
        "u_star",
    )
    assert diffusion.periodic and not pme.periodic and not stefan.periodic
    assert diffusion.x_range == (0.0, 2 * math.pi) and stefan.t_range == (0.0, 0.1)
    assert pme.test_values == (1.0, 3.0, 6.0) and stefan.test_values == (0.5, 0.6)
    assert stefan.train_range == (0.55, 0.7) and stefan.time_of_interest == 0.05


def test_get_problem_lists_the_choices():
    with pytest.raises(ValueError, match="expected one of 'diffusion', 'pme', 'stefan'"):
        get_problem("burgers")
    with pytest.raises(ValueError, match="name"):
        get_problem(None)


def test_grid_covers_the_domain():
    problem = get_problem("diffusion")
    grid = problem.grid(11, 21)
    assert isinstance(grid, Grid) and grid.shape == (11, 21)
    assert float(grid.x[-1]) == pytest.approx(2 * math.pi) and float(grid.t[-1]) == 1.0
    with pytest.raises(ValueError, match="n_x"):
        problem.grid(11, 0)


def test_sample_parameters_in_train_range():
    problem = get_problem("stefan")
    draws = problem.sample_parameters(500, torch.Generator().manual_seed(1))
    assert draws.shape == (500,) and draws.dtype == torch.float64
    assert 0.55 <= float(draws.min()) and float(draws.max()) <= 0.7
    assert float(draws.max() - draws.min()) > 0.13
    with pytest.raises(ValueError, match="generator"):
        problem.sample_parameters(3, generator=0)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("diffusion", 0.0),
        ("diffusion", -1.0),
        ("diffusion", math.inf),
        ("diffusion", "fast"),
        ("pme", 0.0),
        ("pme", float("nan")),
        ("pme", True),
        ("stefan", 0.0),
        ("stefan", 1.0),
        ("stefan", 1.5),
        ("stefan", None),
        ("stefan", torch.tensor([0.5, 0.6])),
    ],
)
def test_bad_parameters_raise_naming_the_argument(name, bad):
    problem = get_problem(name)
    pattern = f"^{problem.parameter_name}: expected"
    for call in (
        lambda: problem.check_parameter(bad),
        lambda: problem.solution(0.5 * problem.t_range[1], 0.1, bad),
        lambda: problem.mass(0.01, bad),
        lambda: sample_contexts(problem, bad, torch.Generator().manual_seed(0)),
    ):
        with pytest.raises(ValueError, match=pattern):
            call()


def test_parameter_error_message():
    with pytest.raises(ValueError) as caught:
        get_problem("stefan").check_parameter(1.5)
    assert str(caught.value) == "u_star: expected a value in (0, 1), got 1.5"
    assert get_problem("pme").check_parameter(torch.tensor(2.0)) == 2.0


def test_bad_times_and_positions_raise():
    problem = get_problem("stefan")
    with pytest.raises(ValueError, match="^t: expected times >= 0"):
        problem.solution(-0.01, 0.5, 0.6)
    with pytest.raises(ValueError, match="^t, x: expected broadcastable"):
        problem.solution(torch.zeros(3), torch.zeros(4), 0.6)
    with pytest.raises(ValueError, match="^x: expected finite"):
        problem.solution(0.05, float("nan"), 0.6)
    with pytest.raises(ValueError, match="^t: expected a single time"):
        problem.front_position(torch.tensor([0.01, 0.02]), 0.6)


@pytest.mark.parametrize("name", ["diffusion", "pme", "stefan"])
def test_contexts_are_stratified_in_time_with_exact_values(name):
    problem = get_problem(name)
    parameter = problem.test_values[-1]
    contexts = sample_contexts(problem, parameter, torch.Generator().manual_seed(3), 4, 6)
    assert isinstance(contexts, Contexts) and len(contexts) == 24
    for field in (contexts.t, contexts.x, contexts.u):
        assert field.shape == (24,) and field.dtype == torch.float64
    t_lo, t_hi = problem.t_range
    width = (t_hi - t_lo) / 4
    times = contexts.t.reshape(4, 6)
    assert bool((times == times[:, :1]).all())  # one time per stratum
    for j, time in enumerate(times[:, 0].tolist()):
        assert t_lo + j * width <= time < t_lo + (j + 1) * width
    x_lo, x_hi = problem.x_range
    assert bool(((contexts.x >= x_lo) & (contexts.x <= x_hi)).all())
    assert contexts.x.unique().numel() == 24
    torch.testing.assert_close(contexts.u, problem.solution(contexts.t, contexts.x, parameter))
    assert contexts.points().shape == (24, 2)


def test_default_contexts_follow_the_protocol_and_are_reproducible():
    problem = get_problem("diffusion")
    first = sample_contexts(problem, 2.0, torch.Generator().manual_seed(7))
    again = sample_contexts(problem, 2.0, torch.Generator().manual_seed(7))
    other = sample_contexts(problem, 2.0, torch.Generator().manual_seed(8))
    assert len(first) == 100 and first.t.unique().numel() == 10
    torch.testing.assert_close(first.u, torch.exp(-2.0 * first.t) * torch.sin(first.x))
    assert torch.equal(first.x, again.x) and torch.equal(first.t, again.t)
    assert not torch.equal(first.x, other.x)


def test_sample_targets_cover_the_domain_with_exact_values():
    problem = get_problem("pme")
    targets = sample_targets(problem, 3.0, 2000, torch.Generator().manual_seed(0))
    assert len(targets) == 2000 and targets.t.unique().numel() == 2000
    assert 0 <= float(targets.t.min()) and float(targets.t.max()) <= 1
    assert 0 <= float(targets.x.min()) and float(targets.x.max()) <= 1
    expected = (3.0 * torch.clamp(targets.t - targets.x, min=0)) ** (1 / 3)
    torch.testing.assert_close(targets.u, expected)
    assert 0.4 < float((targets.x < targets.t).double().mean()) < 0.6  # half the square is wet


def test_context_arguments_are_checked():
    problem = get_problem("pme")
    with pytest.raises(ValueError, match="^n_strata"):
        sample_contexts(problem, 3.0, None, n_strata=0)
    with pytest.raises(ValueError, match="^per_stratum"):
        sample_contexts(problem, 3.0, None, per_stratum=2.5)
    with pytest.raises(ValueError, match="^generator"):
        sample_contexts(problem, 3.0, 42)
    with pytest.raises(ValueError, match="^problem"):
        sample_contexts("pme", 3.0, None)
    with pytest.raises(ValueError, match="^n:"):
        sample_targets(problem, 3.0, 0)
    with pytest.raises(ValueError, match="equal lengths"):
        Contexts(t=torch.zeros(3), x=torch.zeros(3), u=torch.zeros(2))


def test_every_registered_problem_is_a_registered_problem():
    """GPME and operator problems share the `RegisteredProblem` protocol: name, description."""
    from probcons.problems import (
        FAMILIES,
        OPERATOR_PROBLEMS,
        OPERATOR_PROBLEMS_2D,
        RegisteredProblem,
        make_problem,
        make_problem2d,
    )

    problems = [
        *PROBLEMS.values(),
        *(make_problem(name) for name in OPERATOR_PROBLEMS),
        *(make_problem2d(name, n=8, n_steps=1) for name in OPERATOR_PROBLEMS_2D),
    ]
    assert [problem.name for problem in problems] == list(FAMILIES)
    for problem in problems:
        assert isinstance(problem, RegisteredProblem), problem
        assert problem.description and "\n" not in problem.description
    stefan = PROBLEMS["stefan"]
    assert stefan.describe() == f"stefan: {stefan.description}"
