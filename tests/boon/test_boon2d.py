"""BOON in 2-D: the per-axis kernel correction against a dense elimination, exact output conditions
on all four sides, training with machine-level boundary error, resume, runner and CLI."""

import json

import pytest
import torch

from probcons.boon.correction import BoundaryCorrectionError
from probcons.boon.correction2d import BoonFNO2d, CorrectedFourierLayer2d
from probcons.boon.training2d import TrainingConfig2d, evaluate2d, load_model2d, train_model2d
from probcons.constraints.boundary_condition import dirichlet, neumann
from probcons.constraints.boundary_condition2d import BoundaryCondition2d, dirichlet2d, neumann2d
from probcons.operators import FNO2d
from probcons.problems.operators2d import make_problem2d

torch.set_num_threads(1)

N1, N2, PAD, WIDTH = 9, 11, (3, 2), 3
CONDITIONS = {
    "dirichlet": dirichlet2d(),
    "neumann": neumann2d(1 / (N1 - 1), 1 / (N2 - 1)),
    "neumann-order3": neumann2d(1 / (N1 - 1), 1 / (N2 - 1), order=3),
    "mixed": BoundaryCondition2d(dirichlet(), neumann(1 / (N2 - 1))),
}


def random_operator(seed: int, in_channels: int = 1, out_channels: int = 2) -> FNO2d:
    torch.manual_seed(seed)
    return FNO2d(
        in_channels, out_channels, modes=(3, 4), width=WIDTH, layers=3, padding=PAD
    ).double()


def dense(layer, shape) -> torch.Tensor:
    """A linear layer on (C, P1, P2) as a matrix [output, input] from the unit basis."""
    size = WIDTH * shape[0] * shape[1]
    basis = torch.eye(size, dtype=torch.float64).reshape(size, WIDTH, *shape)
    with torch.no_grad():
        return layer(basis).reshape(size, size).T


def row_matrix(condition, axis: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, Psi) on the flattened (C, P1, P2) grid: R every boundary row of `axis` on every line."""
    rows, anchors = condition.rows((N1, N2)[axis], shape[axis])
    other = shape[1 - axis]
    functionals, lifts = [], []
    for c in range(WIDTH):
        for k, anchor in enumerate(anchors):
            for q in range(other):
                r = torch.zeros(WIDTH, *shape, dtype=torch.float64)
                p = torch.zeros(WIDTH, *shape, dtype=torch.float64)
                if axis == 0:
                    r[c, :, q] = rows[k]
                    p[c, anchor, q] = 1 / rows[k, anchor]
                else:
                    r[c, q, :] = rows[k]
                    p[c, q, anchor] = 1 / rows[k, anchor]
                functionals.append(r.flatten())
                lifts.append(p.flatten())
    return torch.stack(functionals), torch.stack(lifts, dim=1)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ["dirichlet", "neumann", "neumann-order3"])
def test_corrected_layer_equals_dense_elimination(axis, name):
    """L_c v = L (v + Psi delta), R L_c v = (R L Psi) R v, solved densely on the whole grid."""
    condition = CONDITIONS[name].along(axis)
    shape = (N1 + PAD[0], N2 + PAD[1])
    for seed in range(2):
        raw = random_operator(seed).layers[1]
        corrected = CorrectedFourierLayer2d(raw, condition, axis).eval()
        matrix = dense(raw, shape)
        rows, lift = row_matrix(condition, axis, shape)
        block = rows @ matrix @ lift
        v = torch.randn(4, WIDTH * shape[0] * shape[1], dtype=torch.float64)
        rhs = (block @ (rows @ v.T) - rows @ matrix @ v.T).T
        delta = torch.linalg.solve(block, rhs.T).T
        expected = (matrix @ (v + delta @ lift.T).T).T
        with torch.no_grad():
            got = corrected(v.reshape(4, WIDTH, *shape), (N1, N2)).reshape(4, -1)
        assert torch.allclose(got, expected, atol=1e-12, rtol=0)
        # the property: boundary functionals of the output are a function of the input's alone
        with torch.no_grad():
            out = dense(lambda x, layer=corrected: layer(x, (N1, N2)), shape)
        inputs, outputs = rows, rows @ out
        solution = torch.linalg.lstsq(inputs.T, outputs.T).solution
        assert float((inputs.T @ solution - outputs.T).abs().max()) < 1e-12 * float(out.abs().max())
        plain = torch.linalg.lstsq(inputs.T, (rows @ matrix).T).solution
        assert float((inputs.T @ plain - (rows @ matrix).T).abs().max()) > 1e-4


def test_dirichlet_boundary_lines_ignore_interior_inputs():
    layer = CorrectedFourierLayer2d(random_operator(3).layers[0], dirichlet(), 0)
    shape = (N1 + PAD[0], N2 + PAD[1])
    out = dense(lambda x: layer(x, (N1, N2)), shape).reshape(WIDTH, *shape, WIDTH, *shape)
    inside = torch.ones(shape[0], dtype=torch.bool)
    inside[[0, N1 - 1]] = False
    for anchor in (0, N1 - 1):
        assert float(out[:, anchor][:, :, :, inside].abs().max()) < 1e-15
        assert float(out[:, anchor][:, :, :, ~inside].abs().max()) > 1e-3
    assert float(out[:, N1 // 2][:, :, :, inside].abs().max()) > 1e-6


@pytest.mark.parametrize("name", list(CONDITIONS))
def test_network_output_satisfies_all_four_sides_float64(name):
    condition = CONDITIONS[name]
    for seed in range(3):
        model = BoonFNO2d(random_operator(seed), condition).eval()
        a = torch.randn(3, 1, N1, N2, dtype=torch.float64)
        field = torch.randn(3, 2, N1, N2, dtype=torch.float64)
        data = condition.functionals(field)  # compatible data on all four sides, corners too
        with torch.no_grad():
            u = model(a, data)
        scale = float(u.abs().max()) * max(N1, N2)
        assert condition.residual_max(u, data) <= 1e-12 * scale
        assert condition.residual_max(model.features(a), data) > 1e-3


def test_zero_neumann_data_hold_at_the_corners_too():
    condition = CONDITIONS["neumann"]
    model = BoonFNO2d(random_operator(4), condition).eval()
    with torch.no_grad():
        u = model(torch.randn(2, 1, N1, N2, dtype=torch.float64))
    rows_x, rows_y = condition.residuals(u)
    assert float(rows_x.abs().max()) < 1e-11 and float(rows_y.abs().max()) < 1e-11


def test_corners_take_the_x_side_data_when_data_disagree():
    condition = dirichlet2d()
    u = torch.zeros(1, 1, N1, N2, dtype=torch.float64)
    g_x = torch.ones(1, 1, 2, N2, dtype=torch.float64)
    g_y = 2 * torch.ones(1, 1, 2, N1, dtype=torch.float64)
    out = condition.enforce(u, (g_x, g_y))
    assert float(out[0, 0, 0, 0]) == 1.0 and float(out[0, 0, 4, 0]) == 2.0


@pytest.mark.parametrize("name", ["dirichlet", "neumann"])
def test_network_output_float32_level(name):
    condition = CONDITIONS[name]
    torch.manual_seed(0)
    operator = FNO2d(1, 2, modes=(3, 4), width=WIDTH, layers=3, padding=PAD)
    model = BoonFNO2d(operator, condition).eval()
    field = torch.randn(3, 2, N1, N2)
    data = condition.functionals(field)
    with torch.no_grad():
        u = model(torch.randn(3, 1, N1, N2), data).double()
    data64 = tuple(d.double() for d in data)
    # float32 round-off of values ~1 (Dirichlet) or of differences over h (Neumann: ~4 eps / h)
    level = 1e-6 if name == "dirichlet" else 1e-5 * max(N1, N2)
    assert condition.residual_max(u, data64) < level


def test_singular_boundary_block_is_detected():
    operator = random_operator(5)
    with torch.no_grad():
        for layer in operator.layers:
            layer.spectral.weight_positive.zero_()
            layer.spectral.weight_negative.zero_()
            layer.pointwise.weight.zero_()
    model = BoonFNO2d(operator, dirichlet2d()).eval()
    with pytest.raises(BoundaryCorrectionError, match="condition number"):
        model(torch.randn(1, 1, N1, N2, dtype=torch.float64))


def test_arguments_are_validated():
    from probcons.constraints.boundary_condition import periodic

    with pytest.raises(ValueError, match="x: expected a Dirichlet or Neumann"):
        BoundaryCondition2d(periodic(), dirichlet())
    with pytest.raises(ValueError, match="operator"):
        BoonFNO2d(torch.nn.Linear(2, 2), dirichlet2d())
    with pytest.raises(ValueError, match="axes"):
        BoonFNO2d(random_operator(0), dirichlet2d(), axes=(2,))
    with pytest.raises(ValueError, match="u: expected"):
        dirichlet2d().enforce(torch.zeros(2, 9, 9))
    with pytest.raises(ValueError, match="data: expected g_x"):
        dirichlet2d().enforce(torch.zeros(1, 2, 9, 9), (torch.zeros(1, 2, 3, 9), None))
    with pytest.raises(ValueError, match="name"):
        make_problem2d("pipe")


TINY = TrainingConfig2d(
    modes=3, width=6, layers=2, padding=2, projection_width=8, epochs=2, batch_size=8, decay_every=1
)


@pytest.fixture(scope="module")
def wave():
    problem = make_problem2d("wave2d", n=12, n_steps=4, t_end=0.4)
    return problem, problem.generate(4, seed=1), problem.generate(2, seed=2)


def test_boon_trains_with_machine_level_boundary_error(wave):
    problem, train, test = wave
    errors = []

    def record(epoch, model):
        model.eval()
        errors.append(evaluate2d(model, "boon", problem, test)[0])
        model.train()

    train_model2d("boon", problem, train, TINY, seed=1, callback=record)
    assert len(errors) == TINY.epochs
    for metrics in errors:
        assert metrics["boundary_error"] < 1e-10
        assert metrics["boundary_error_f32"] < 1e-3  # differences over h = 1/11 in float32
        assert len(metrics["rel_l2_per_step"]) == problem.n_steps - 1


def test_fno_violates_the_condition(wave):
    problem, train, test = wave
    model, seconds = train_model2d("fno", problem, train, TINY, seed=1)
    metrics, prediction = evaluate2d(model, "fno", problem, test)
    assert seconds > 0 and metrics["boundary_error"] > 1e-3
    assert prediction.shape == test.states.shape


def test_interrupted_training_resumes_to_the_same_weights(wave, tmp_path):
    problem, train, _ = wave
    checkpoint = tmp_path / "boon.pt"

    def stop(epoch, model):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model2d("boon", problem, train, TINY, seed=2, callback=stop, checkpoint=checkpoint)
    resumed, _ = train_model2d("boon", problem, train, TINY, seed=2, checkpoint=checkpoint)
    straight, _ = train_model2d("boon", problem, train, TINY, seed=2)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_cli_runs_the_cavity_end_to_end(tmp_path, monkeypatch):
    from probcons.cli import main
    from probcons.problems import operators2d as problems2d

    monkeypatch.setitem(problems2d.CAVITY, "resolution", 15)
    real = problems2d.make_problem2d

    def small(name, n=50, n_steps=25, t_end=2.0, resolution=None):
        return real(name, n=16, n_steps=3, t_end=0.24, resolution=resolution)

    monkeypatch.setattr("probcons.operator_runner.make_problem2d", small)
    out = tmp_path / "cavity"
    argv = ["run", "cavity", "--backbone", "boon-fno", "--epochs", "1", "--n-train", "2"]
    assert main([*argv, "--n-test", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["boundary_error"] < 1e-10 and len(metrics["rel_l2_per_step"]) == 3
    assert (out / "model.pt").is_file() and (out / "error_vs_time.png").is_file()
    model, kind, problem = load_model2d(out / "model.pt")
    assert kind == "boon" and problem.n == 16 and problem.n_steps == 3
    test = problem.generate(1, seed=1000)  # the run's test trajectory (seed 0 + 1000)
    again, _ = evaluate2d(model, kind, problem, test)
    assert again["rel_l2_per_step"] == pytest.approx(metrics["rel_l2_per_step"], rel=1e-12)


def test_the_2d_config_has_no_correction_warmup():
    from dataclasses import replace

    assert TINY.correction_warmup == 0.0
    with pytest.raises(ValueError, match="correction_warmup"):
        replace(TINY, correction_warmup=0.25)
