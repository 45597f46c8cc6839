"""BOON training on tiny problems: machine-level boundary error throughout, runner files, ensemble."""

import json

import pytest
import torch

from probcons.boon.ensemble import BoonEnsemble, conserve, heat_constraints
from probcons.boon.problems import OPERATOR_PROBLEMS, make_problem
from probcons.boon.runner import BACKBONES, run_operator_problem
from probcons.boon.training import TrainingConfig, evaluate, train_model
from probcons.operators import load_operator

torch.set_num_threads(1)

TINY = TrainingConfig(
    modes=6, width=8, layers=2, padding=4, projection_width=16, epochs=3, batch_size=8
)


@pytest.fixture(scope="module")
def heat():
    problem = make_problem("heat-neumann", n_x=33, n_times=3)
    generator = torch.Generator().manual_seed(0)
    return problem, problem.generate(24, generator), problem.generate(6, generator)


def test_boon_boundary_error_stays_at_machine_level_while_training(heat):
    problem, train, test = heat
    errors = []

    def record(epoch, model):
        model.eval()
        errors.append(evaluate(model, "boon", problem, test))
        model.train()

    train_model("boon", problem, train, TINY, seed=1, callback=record)
    assert len(errors) == TINY.epochs
    for metrics in errors:
        assert metrics["boundary_error"] < 1e-10
        assert metrics["boundary_error_f32"] < 1e-3  # differences over h = 1/32 in float32


def test_fno_trains_and_violates_the_condition(heat):
    problem, train, test = heat
    model, seconds = train_model("fno", problem, train, TINY, seed=1)
    metrics = evaluate(model, "fno", problem, test)
    assert seconds > 0 and metrics["boundary_error"] > 1e-3
    assert 0 <= metrics["error_share_left"] <= 1


@pytest.mark.parametrize("name", sorted(OPERATOR_PROBLEMS))
def test_every_problem_generates_well_posed_data_that_meets_its_condition(name):
    problem = make_problem(name, n_x=17, n_times=2)
    data = problem.generate(3, torch.Generator().manual_seed(2))
    assert data.inputs.shape == (3, 1, 17) and data.targets.shape == (3, 2, 17)
    residual = problem.condition.residual(data.targets, data.boundary)
    assert float(residual.abs().max()) < 1e-9


def test_runner_writes_metrics_and_loadable_checkpoint(tmp_path):
    result = run_operator_problem(
        "stokes",
        "boon-fno",
        tmp_path,
        seed=0,
        n_train=8,
        n_test=4,
        n_x=17,
        n_times=2,
        config=TINY,
        epochs=1,
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["metrics"]["boundary_error"] < 1e-10
    assert result["metrics"]["rel_l2"] == written["metrics"]["rel_l2"]
    assert load_operator(tmp_path / "model.pt").hyperparameters["width"] == TINY.width
    assert (tmp_path / "boundary.png").stat().st_size > 0


def test_runner_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="problem"):
        run_operator_problem("navier-stokes", "fno", tmp_path)
    with pytest.raises(ValueError, match="backbone"):
        run_operator_problem("stokes", "unet", tmp_path)
    assert set(BACKBONES) == {"fno", "fno-bc", "boon-fno", "boon-ensemble"}


def test_probabilistic_boon_with_conservation_satisfies_both(heat):
    problem, train, test = heat
    ensemble = BoonEnsemble.train(problem, train, TINY, members=3, seed=0)
    for index, prediction in enumerate(ensemble.predict(test.subset(slice(0, 2)))):
        conservation, boundary = heat_constraints(problem, test, index)
        assert float(boundary.residual(prediction.mean).abs().max()) < 1e-3  # float32 members
        posterior = conserve(prediction, [conservation, boundary])
        assert float(conservation.residual(posterior.mean).abs().max()) < 1e-6
        assert float(boundary.residual(posterior.mean).abs().max()) < 1e-9
        draws = posterior.sample(4, torch.Generator().manual_seed(0))
        assert float(conservation.residual(draws).abs().max()) < 1e-6
