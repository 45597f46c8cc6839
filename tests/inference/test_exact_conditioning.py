"""ExactConditioning: one trace, every linear site (structured or hand-written), one Posterior."""

import json
import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import random_covariances

from probcons import Posterior, SingularConstraintError, UsageError
from probcons.constraints import conservation_constraint, dense_constraint, dirichlet_constraint
from probcons.covariance import DenseCovariance
from probcons.errors import ModelError
from probcons.grid import Grid
from probcons.inference import (
    ConstraintObservation,
    ExactConditioning,
    GaussianField,
    observe_constraint,
)
from probcons.mixture import GaussianMixture
from probcons.prediction import GaussianPrediction


def _prior(grid, structure="lowrank", seed=0):
    covariance = random_covariances(grid, seed)[structure]
    mean = torch.randn(grid.shape, generator=torch.Generator().manual_seed(seed + 1)).double()
    return GaussianPrediction(mean, covariance, grid)


@pytest.mark.parametrize("structure", ["diagonal", "lowrank", "dense", "block"])
def test_hand_written_site_equals_observe_constraint(small_grid, structure):
    prior = _prior(small_grid, structure)
    weights = small_grid.trapezoid_weights()
    mass = torch.linspace(0.2, 0.7, small_grid.n_t, dtype=torch.float64)

    def hand_written(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        pyro.sample("mass", dist.Normal(u @ weights, 1e-6).to_event(1), obs=mass)

    def structured(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        observe_constraint("mass", conservation_constraint(small_grid, mass, 1e-6), u)

    sites = ExactConditioning(hand_written).collect(prior)
    assert not sites.flat  # one row per time slice is recognised as per-slice rows
    a = ExactConditioning(hand_written).posterior(prior)
    b = ExactConditioning(structured).posterior(prior)
    assert torch.allclose(a.mean, b.mean, atol=1e-12, rtol=0)
    assert torch.allclose(a.variance, b.variance, atol=1e-12, rtol=0)


def test_rows_across_time_slices_match_brute_force(small_grid):
    prior = _prior(small_grid, "dense")
    generator = torch.Generator().manual_seed(3)
    matrix = torch.randn(3, small_grid.size, generator=generator, dtype=torch.float64)
    values = torch.randn(3, generator=generator, dtype=torch.float64)

    def model(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        pyro.sample("mix", dist.Normal(matrix @ u.reshape(-1), 1e-3).to_event(1), obs=values)
        observe_constraint("wall", dirichlet_constraint(small_grid, left=0.5), u)

    sites = ExactConditioning(model).collect(prior)
    assert sites.flat and sites.constraint.num_rows == 3 + small_grid.n_t
    posterior = ExactConditioning(model).posterior(prior)
    wall = dirichlet_constraint(small_grid, left=0.5).to_dense()
    full = torch.cat([matrix, wall])
    noise = torch.cat([torch.full((3,), 1e-3), torch.zeros(small_grid.n_t)]).double()
    sigma = prior.covariance.to_dense()
    mu = prior.mean.reshape(-1)
    s = full @ sigma @ full.T + torch.diag(noise**2)
    gain = sigma @ full.T @ torch.linalg.inv(s)
    rhs = torch.cat([values, torch.full((small_grid.n_t,), 0.5, dtype=torch.float64)])
    assert torch.allclose(posterior.mean.reshape(-1), mu + gain @ (rhs - full @ mu), atol=1e-9)
    expected = (sigma - gain @ full @ sigma).diagonal()
    assert torch.allclose(posterior.variance.reshape(-1), expected, atol=1e-9)
    assert posterior.grid is prior.grid
    draws = ExactConditioning(model)(
        prior, num_samples=20, generator=torch.Generator().manual_seed(0)
    )
    assert draws["u"].shape == (20, *small_grid.shape)
    assert (draws["wall"] - 0.5).abs().max() < 1e-10


def test_model_is_traced_once_per_call(small_grid):
    prior = _prior(small_grid)
    calls = []

    def model(prediction):
        calls.append(1)
        u = pyro.sample("u", GaussianField(prediction))
        observe_constraint(
            "mass", conservation_constraint(small_grid, torch.ones(small_grid.n_t)), u
        )

    conditioning = ExactConditioning(model)
    for expected in (1, 2, 3):
        conditioning.posterior(prior)
        assert len(calls) == expected

    def hand_written(prediction):
        calls.append(1)
        u = pyro.sample("u", GaussianField(prediction))
        pyro.sample("m", dist.Normal(u.sum(-1), 1.0).to_event(1), obs=torch.ones(small_grid.n_t))

    calls.clear()
    conditioning = ExactConditioning(hand_written)
    conditioning.posterior(prior)
    assert len(calls) == 2  # the first call also checks the site's linearity at a probe
    conditioning.posterior(prior)
    assert len(calls) == 3


def test_mixture_latent_is_conditioned_per_component(small_grid):
    components = [_prior(small_grid, "diagonal", seed) for seed in range(3)]
    mixture = GaussianMixture(components)
    mass = conservation_constraint(small_grid, torch.ones(small_grid.n_t))

    def model(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        observe_constraint("mass", mass, u)

    calls = []
    traced = ExactConditioning(lambda p: calls.append(1) or model(p)).posterior(mixture)
    assert isinstance(traced, GaussianMixture) and len(calls) == 1
    for got, component in zip(traced.components, components, strict=True):
        assert torch.allclose(got.mean, component.condition(mass).mean, atol=1e-14)
    hardc = ExactConditioning(model, method="hardc").posterior(mixture)
    assert mass.residual(hardc.mean).abs().max() < 1e-12


def test_nonlinear_and_piecewise_linear_sites_raise_when_asked(small_grid):
    prior = _prior(small_grid)

    def squared(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        pyro.sample("energy", dist.Normal((u**2).sum(-1), 1.0).to_event(1), obs=torch.ones(5))

    def absolute(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        pyro.sample("pos", dist.Normal(u.abs().sum(-1), 1.0).to_event(1), obs=torch.ones(5))

    for model, name in ((squared, "energy"), (absolute, "pos")):
        with pytest.raises(UsageError, match=f"site '{name}': its mean is not linear"):
            ExactConditioning(model, nonlinear="raise").posterior(prior)


def test_sites_the_prior_cannot_see_raise_naming_the_site(small_grid):
    prior = _prior(small_grid)
    weights = torch.zeros(small_grid.n_x, dtype=torch.float64)
    weights[0] = 1.0

    def constant(prediction):
        pyro.sample("u", GaussianField(prediction))
        pyro.sample("data", dist.Normal(torch.zeros(3), 1.0).to_event(1), obs=torch.ones(3))

    def zero_row(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        rows = torch.stack([u[:, 0], 0 * u[:, 1]], dim=-1)
        pyro.sample("rows", dist.Normal(rows, 1.0).to_event(2), obs=torch.zeros(5, 2))

    with pytest.raises(UsageError, match="site 'data': observed, but its mean does not depend"):
        ExactConditioning(constant).posterior(prior)
    with pytest.raises(SingularConstraintError, match="site 'rows': row 1 does not depend"):
        ExactConditioning(zero_row).posterior(prior)


def test_errors_inside_the_model_name_the_model(small_grid):
    prior = _prior(small_grid)

    def broken(prediction):
        pyro.sample("u", GaussianField(prediction))
        raise KeyError("oops")

    with pytest.raises(ModelError, match=r"model: .*broken.* raised KeyError: 'oops'"):
        ExactConditioning(broken).posterior(prior)
    with pytest.raises(UsageError, match="method: expected one of probconserv, hardc"):
        ExactConditioning(broken, method="soft")


def test_common_random_numbers_through_base_samples(small_grid):
    prior = _prior(small_grid, "lowrank")
    mass = conservation_constraint(small_grid, torch.ones(small_grid.n_t))
    posterior = prior.condition(mass)
    for distribution in (
        prior,
        posterior,
        GaussianMixture([prior, _prior(small_grid, "lowrank", 4)]),
    ):
        assert isinstance(distribution, Posterior)
    base = posterior.base_samples((4000,), torch.Generator().manual_seed(0))
    draws = posterior.rsample((4000,), base)
    prior_draws = prior.rsample((4000,), base[:, : prior.base_sample_shape[0]])
    # pathwise: the conditioned draw is the prior draw moved along Sigma G^T (exact rows: eps = 0)
    assert mass.residual(draws).abs().max() < 1e-10
    moved = (draws - prior_draws).reshape(4000, -1)
    assert moved.abs().max() > 0
    empirical = draws.reshape(4000, -1).var(0)
    assert torch.allclose(empirical, posterior.variance.reshape(-1), rtol=0.15, atol=1e-3)
    with pytest.raises(UsageError, match="base_samples: expected a tensor of shape"):
        posterior.rsample((3,), base[:2])


def test_condition_rejects_none():
    grid = Grid.uniform((0, 1), (0, 1), 3, 4)
    prior = GaussianPrediction(torch.zeros(3, 4), DenseCovariance(torch.eye(12)), grid)
    with pytest.raises(UsageError, match="constraint: expected a probcons LinearConstraint"):
        prior.condition(None)
    rows = dense_constraint(torch.ones(1, 12), torch.ones(1))
    assert prior.with_grid(Grid(torch.zeros(1), torch.arange(12.0))).condition(rows) is not None


def test_run_accepts_a_hand_written_site(tmp_path):
    """`probcons run stefan --model mine.py` with Normal(u @ w, 1e-6) equals observe_constraint."""
    model = tmp_path / "mine.py"
    model.write_text(
        "import pyro\nimport pyro.distributions as dist\n"
        "from probcons.inference import GaussianField\n\n\n"
        "def model(prediction, problem, parameter, noise_std=0.0):\n"
        "    grid = prediction.grid\n"
        "    u = pyro.sample('u', GaussianField(prediction))\n"
        "    mass = problem.mass(grid.t, parameter)\n"
        "    pyro.sample('mass', dist.Normal(u @ grid.trapezoid_weights(), 1e-6).to_event(1), obs=mass)\n"
        "    return u\n"
    )
    common = [
        "run",
        "stefan",
        "--backbone",
        "anp",
        "--n-functions",
        "2",
        "--grid",
        "21x21",
        "--draws",
        "20",
        "--quiet",
        "--sigma-g",
        "1e-6",
    ]
    code = "import sys; from probcons.cli import main; sys.exit(main(sys.argv[1:]))"
    for name, extra in (("mine", ["--model", str(model)]), ("shipped", [])):
        result = subprocess.run(
            [sys.executable, "-c", code, *common, "--out", str(tmp_path / name), *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
    mine = json.loads((tmp_path / "mine" / "metrics.json").read_text())
    shipped = json.loads((tmp_path / "shipped" / "metrics.json").read_text())
    for method in ("hardc", "probconserv"):
        for key in ("mse", "crps", "ll"):
            assert mine[method][key] == pytest.approx(shipped[method][key], rel=1e-9), (method, key)


def test_runner_traces_the_model_once_per_function(tmp_path, monkeypatch):
    from probcons import runner

    calls = []
    load = runner.load_model

    def counting(path):
        model = load(path)

        def wrapped(*args, **kwargs):
            calls.append(1)
            return model(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(runner, "load_model", counting)
    settings = runner.RunSettings(
        problem="stefan", backbone="anp", n_functions=3, grid=(11, 11), draws=5, out=tmp_path / "r"
    )
    runner.run(settings, progress=False, report=False)
    assert len(calls) == 3  # one trace per function serves unconstrained, HardC and ProbConserv


def test_a_constraint_site_observed_at_other_values_uses_them(small_grid):
    prior = _prior(small_grid, "diagonal")
    built = conservation_constraint(small_grid, torch.ones(small_grid.n_t))
    other = torch.full((small_grid.n_t, 1), 2.0, dtype=torch.float64)

    def model(prediction):
        u = pyro.sample("u", GaussianField(prediction))
        pyro.sample("mass", ConstraintObservation(built, u), obs=other)

    posterior = ExactConditioning(model).posterior(prior)
    assert (built.apply(posterior.mean) - 2.0).abs().max() < 1e-12


def test_run_files_carry_the_rows_the_metrics_used(tmp_path):
    """A model with two sites: the rows stored in every method's file give metrics.json's CE."""
    from probcons import runner
    from probcons.report.data import MethodData

    model = tmp_path / "two_sites.py"
    model.write_text(
        "import pyro\n"
        "from probcons.constraints import conservation_constraint, dirichlet_constraint\n"
        "from probcons.inference import GaussianField, observe_constraint\n\n\n"
        "def model(prediction, problem, parameter, noise_std=0.0):\n"
        "    grid = prediction.grid\n"
        "    u = pyro.sample('u', GaussianField(prediction))\n"
        "    mass = conservation_constraint(grid, problem.mass(grid.t, parameter), noise_std)\n"
        "    observe_constraint('mass', mass, u)\n"
        "    observe_constraint('inflow', dirichlet_constraint(grid, left=1.0), u)\n"
    )
    out = tmp_path / "run"
    settings = runner.RunSettings(
        problem="stefan",
        backbone="anp",
        n_functions=2,
        grid=(11, 11),
        draws=5,
        out=out,
        model=model,
    )
    summary = runner.run(settings, progress=False, report=False)
    for method, scores in summary.items():
        with MethodData(out / f"{method}.nc") as data:
            assert data.has_constraint
            ce = [
                float(data.constraint_residual(f, data.moments(f)[0]).abs().mean())
                for f in range(data.n_functions)
            ]
            assert list(data._constant["constraint_row"].values) == ["mass", "dirichlet_left"]
        assert sum(ce) / len(ce) == pytest.approx(scores["ce"], rel=1e-9, abs=1e-15)
