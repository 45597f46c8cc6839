"""FNO ensemble: members on the (t, x) grid, structured prediction, ProbConserv (Stefan, PME)."""

import pytest
import torch

from probcons.backbones.fno_ensemble import (
    FNOEnsembleBackbone,
    FNOEnsembleConfig,
    FNOEnsembleTask,
    FNOMember,
    check_domain_grid,
)
from probcons.backbones.member_training import (
    MemberTrainingOptions,
    export_members,
    load_ensemble_backbone,
    train_members,
)
from probcons.conditioning import condition
from probcons.constraints import conservation_constraint, dirichlet_constraint
from probcons.covariance import LowRankCovariance
from probcons.grid import Grid
from probcons.problems import get_problem

TINY = dict(modes=(3, 3), width=6, layers=2, projection_width=8, train_grid=(12, 12))
QUICK = MemberTrainingOptions(steps=4, batch_size=2, checkpoint_every=2)


@pytest.fixture(scope="module", params=["stefan", "pme"])
def trained(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"fno-{request.param}")
    task = FNOEnsembleTask(request.param, FNOEnsembleConfig(**TINY))
    train_members(task, directory, members=2, options=QUICK, progress=False)
    return request.param, directory


def test_member_maps_inputs_to_mean_and_variance_on_any_resolution():
    task = FNOEnsembleTask("pme", FNOEnsembleConfig(inputs=("parameter", "initial"), **TINY))
    member = task.build()
    assert isinstance(member, FNOMember)
    for n_t, n_x in ((12, 12), (21, 33)):
        grid = get_problem("pme").grid(n_t, n_x)
        inputs = task.inputs([2.0, 4.0], grid)
        assert inputs.shape == (2, 2, n_t, n_x)
        mean, variance = member(inputs)
        assert mean.shape == variance.shape == (2, n_t, n_x)
        assert bool((variance >= task.config.min_variance).all())
    assert member.operator.padding == (round(0.125 * 21), round(0.125 * 33))
    loss = task.loss(member, 2, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)


def test_trained_members_conserve_mass_with_probconserv(trained):
    name, directory = trained
    problem = get_problem(name)
    backbone = load_ensemble_backbone("fno-ensemble", directory)
    assert isinstance(backbone, FNOEnsembleBackbone)
    grid = problem.grid(25, 31)  # finer than the training grid
    parameter = problem.test_values[-1]
    prediction = backbone.predict(problem, parameter, None, grid)
    assert isinstance(prediction.covariance, LowRankCovariance)
    assert prediction.mean.shape == grid.shape
    means, variances = backbone.member_outputs(problem, parameter, grid)
    assert torch.allclose(prediction.mean, means.mean(0))
    assert torch.allclose(prediction.variance, variances.mean(0) + means.var(0, correction=0))
    mass = conservation_constraint(grid, problem.mass(grid.t, parameter))
    inflow = dirichlet_constraint(grid, left=problem.solution(grid.t, grid.x[0], parameter))
    for constraint in (mass, mass.stack(inflow)):
        posterior = condition(prediction, constraint)
        draws = posterior.sample(20, torch.Generator().manual_seed(0))
        assert constraint.residual(draws).abs().max() < 1e-10
        assert constraint.residual(posterior.mean).abs().max() < 1e-10


def test_bundle_round_trip(trained, tmp_path):
    name, directory = trained
    problem = get_problem(name)
    bundle = export_members(directory, tmp_path / f"{name}-fno-ensemble.pt")
    grid = problem.grid(12, 12)
    value = problem.test_values[0]
    one = load_ensemble_backbone("fno-ensemble", directory).predict(problem, value, None, grid)
    two = load_ensemble_backbone("fno-ensemble", bundle).predict(problem, value, None, grid)
    assert torch.equal(one.mean, two.mean)
    assert torch.equal(one.variance, two.variance)


def test_grid_must_be_uniform_over_the_domain():
    problem = get_problem("stefan")
    check_domain_grid(problem, problem.grid(7, 9))
    with pytest.raises(ValueError, match="t uniform over"):
        check_domain_grid(problem, Grid.uniform((0.0, 0.05), problem.x_range, 7, 9))
    with pytest.raises(ValueError, match="x uniform over"):
        x = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
        check_domain_grid(problem, Grid(torch.linspace(0, 0.1, 5, dtype=torch.float64), x))
    with pytest.raises(ValueError, match="grid"):
        check_domain_grid(problem, "101x101")


def test_config_validation():
    with pytest.raises(ValueError, match="inputs"):
        FNOEnsembleConfig(inputs=("velocity",))
    with pytest.raises(ValueError, match="inputs"):
        FNOEnsembleConfig(inputs=("parameter", "parameter"))
    with pytest.raises(ValueError, match="modes"):
        FNOEnsembleConfig(modes=(3, 0))
    with pytest.raises(ValueError, match="padding_fraction"):
        FNOEnsembleConfig(padding_fraction=2.0)
    with pytest.raises(ValueError, match="train_grid"):
        FNOEnsembleConfig(train_grid=(8,))
    config = FNOEnsembleConfig(modes=4, train_grid=[8, 8], inputs="initial")
    assert config.modes == (4, 4) and config.train_grid == (8, 8) and config.inputs == ("initial",)
    task = FNOEnsembleTask("stefan", config)
    assert FNOEnsembleTask.from_hyperparameters(task.hyperparameters()) == task
