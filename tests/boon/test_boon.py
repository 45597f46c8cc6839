"""BOON: kernel-correction properties (independent matrix computation) and exact output conditions."""

import pytest
import torch

from probcons.boon import (
    BoonFNO1d,
    BoundaryCondition,
    BoundaryCorrectionError,
    CorrectedFourierLayer,
    dirichlet,
    neumann,
    periodic,
)
from probcons.operators import FNO1d

torch.set_num_threads(1)

N, PAD, WIDTH = 20, 6, 4
CONDITIONS = [
    dirichlet(),
    dirichlet(("left",)),
    neumann(1 / (N - 1)),
    neumann(1 / (N - 1), order=1, sides=("right",)),
    neumann(1 / (N - 1), order=3),
    periodic(),
]


def random_operator(seed: int, out_channels: int = 3, coordinates: str = "linear") -> FNO1d:
    torch.manual_seed(seed)
    return FNO1d(
        1, out_channels, modes=6, width=WIDTH, layers=3, padding=PAD, coordinates=coordinates
    ).double()


def layer_matrix(layer: CorrectedFourierLayer) -> torch.Tensor:
    """The corrected linear layer as a (C P) x (C P) matrix [input (c, j), output (o, n)]."""
    length = N + PAD
    basis = torch.eye(WIDTH * length, dtype=torch.float64).reshape(-1, WIDTH, length)
    with torch.no_grad():
        return layer(basis, N).reshape(WIDTH * length, WIDTH * length)


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: f"{c.kind}-{'-'.join(c.sides)}")
def test_boundary_functionals_of_output_depend_on_those_of_input_alone(condition):
    for seed in range(3):
        layer = CorrectedFourierLayer(random_operator(seed).layers[1], condition)
        matrix = layer_matrix(layer)
        rows, anchors = condition.rows(N, N + PAD)
        # R applied to every output: (inputs, r, C)
        out_functionals = torch.einsum("kn,jon->jko", rows, matrix.reshape(-1, WIDTH, N + PAD))
        # any input with R v = 0 gives R L_c v = 0: project the basis onto ker R per channel
        basis = torch.eye(WIDTH * (N + PAD), dtype=torch.float64).reshape(-1, WIDTH, N + PAD)
        in_functionals = torch.einsum("kn,jcn->jkc", rows, basis).reshape(len(basis), -1)
        # least squares: out = in @ T; the residual must vanish (linear in the input functionals)
        solution = torch.linalg.lstsq(in_functionals, out_functionals.reshape(len(basis), -1))
        residual = in_functionals @ solution.solution - out_functionals.reshape(len(basis), -1)
        assert float(residual.abs().max()) < 1e-12 * max(1.0, float(out_functionals.abs().max()))


@pytest.mark.parametrize("sides", [("left", "right"), ("left",), ("right",)])
def test_dirichlet_boundary_rows_have_zero_off_boundary_entries(sides):
    condition = dirichlet(sides)
    layer = CorrectedFourierLayer(random_operator(4).layers[0], condition)
    matrix = layer_matrix(layer).reshape(WIDTH, N + PAD, WIDTH, N + PAD)
    _, anchors = condition.rows(N, N + PAD)
    off = torch.ones(N + PAD, dtype=torch.bool)
    off[anchors] = False
    for anchor in anchors:
        assert float(matrix[:, off][:, :, :, anchor].abs().max()) < 1e-15
        assert float(matrix[:, ~off][:, :, :, anchor].abs().max()) > 1e-3
    # interior rows still see the whole input (the correction is not an overwrite)
    assert float(matrix[:, off][:, :, :, N // 2].abs().max()) > 1e-6


@pytest.mark.parametrize("condition", CONDITIONS[:3], ids=lambda c: f"{c.kind}-{'-'.join(c.sides)}")
def test_correction_strength_interpolates_between_the_layer_and_its_correction(condition):
    layer = CorrectedFourierLayer(random_operator(6).layers[1], condition)
    v = torch.randn(4, WIDTH, N + PAD, dtype=torch.float64)
    with torch.no_grad():
        plain, full = layer.layer(v), layer(v, N)
        assert torch.equal(layer(v, N, 1.0), full)
        assert torch.allclose(layer(v, N, 0.0), plain, atol=1e-13)
        # delta does not depend on the strength s, so L (v + s Psi delta) is affine in s
        assert torch.allclose(layer(v, N, 0.3), 0.7 * plain + 0.3 * full, atol=1e-13)
        assert float((full - plain).abs().max()) > 1e-3


def test_corrected_layer_equals_the_layer_with_modified_anchor_inputs():
    condition = dirichlet()
    operator = random_operator(5)
    layer = CorrectedFourierLayer(operator.layers[0], condition)
    v = torch.randn(3, WIDTH, N + PAD, dtype=torch.float64)
    out = layer(v, N)
    # find the anchor inputs by brute force: solve the 2C system with probe applications
    raw = operator.layers[0]
    base = v.clone()
    base[..., [0, N - 1]] = 0
    columns = []
    for index in [0, N - 1]:
        for c in range(WIDTH):
            probe = torch.zeros(1, WIDTH, N + PAD, dtype=torch.float64)
            probe[0, c, index] = 1
            columns.append(raw(probe)[0][:, [0, N - 1]].T.reshape(-1))
    matrix = torch.stack(columns, dim=1)  # (2C, 2C), ordered [side, channel]
    target = torch.einsum("ij,bj->bi", matrix, v[..., [0, N - 1]].transpose(1, 2).reshape(3, -1))
    rhs = target - raw(base)[..., [0, N - 1]].transpose(1, 2).reshape(3, -1)
    z = torch.linalg.solve(matrix, rhs.T).T.reshape(3, 2, WIDTH).transpose(1, 2)
    modified = base.clone()
    modified[..., [0, N - 1]] = z
    assert torch.allclose(out, raw(modified), atol=1e-12)


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: f"{c.kind}-{'-'.join(c.sides)}")
def test_network_output_satisfies_the_condition_float64(condition):
    coordinates = "periodic" if condition.kind == "periodic" else "linear"
    for seed in range(3):
        model = BoonFNO1d(random_operator(seed, coordinates=coordinates), condition)
        a = torch.randn(5, 1, N, dtype=torch.float64)
        g = torch.randn(5, 3, condition.n_rows, dtype=torch.float64)
        with torch.no_grad():
            u = model(a, g)
        scale = float(u.abs().max()) * (1 if condition.kind != "neumann" else N - 1)
        assert float(condition.residual(u, g).abs().max()) <= 1e-12 * max(scale, 1.0)


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: f"{c.kind}-{'-'.join(c.sides)}")
def test_network_output_condition_float32_level(condition):
    torch.manual_seed(0)
    coordinates = "periodic" if condition.kind == "periodic" else "linear"
    operator = FNO1d(1, 2, modes=6, width=WIDTH, layers=3, padding=PAD, coordinates=coordinates)
    model = BoonFNO1d(operator, condition)
    a = torch.randn(5, 1, N)
    g = torch.randn(5, 2, condition.n_rows)
    with torch.no_grad():
        residual = condition.residual(model(a, g).double(), g.double())
    # Neumann residuals are differences over h: float32 round-off times (sum |c_j|) ~ 4 / h
    level = 1e-5 * (N - 1) if condition.kind == "neumann" else 1e-6
    assert float(residual.abs().max()) < level


def test_dirichlet_features_at_the_boundary_ignore_the_interior_input():
    model = BoonFNO1d(random_operator(6), dirichlet())
    a = torch.randn(2, 1, N, dtype=torch.float64)
    b = a.clone()
    b[..., 1:-1] = torch.randn(2, 1, N - 2, dtype=torch.float64)
    before, after = model.features(a), model.features(b)
    assert torch.allclose(before[..., [0, -1]], after[..., [0, -1]], atol=1e-13)
    assert not torch.allclose(before[..., N // 2], after[..., N // 2])


@pytest.mark.parametrize("periodic_layers", ["period", "kernel"])
def test_periodic_structure_is_exact_before_the_final_average(periodic_layers):
    operator = random_operator(7, coordinates="periodic")
    model = BoonFNO1d(operator, periodic(), periodic_layers=periodic_layers)
    a = torch.randn(4, 1, N, dtype=torch.float64)
    a[..., -1] = a[..., 0]
    with torch.no_grad():
        features = model.features(a)
    assert float((features[..., 0] - features[..., -1]).abs().max()) < 1e-13


def test_singular_boundary_block_is_detected():
    operator = random_operator(8)
    with torch.no_grad():
        for layer in operator.layers:
            layer.spectral.weight.zero_()
            layer.pointwise.weight.zero_()
    model = BoonFNO1d(operator, dirichlet()).eval()
    with pytest.raises(BoundaryCorrectionError, match="condition number"):
        model(torch.randn(1, 1, N, dtype=torch.float64), torch.zeros(1, 3, 2))


def test_condition_arguments_are_validated():
    with pytest.raises(ValueError, match="kind"):
        BoundaryCondition("robin")
    with pytest.raises(ValueError, match="step"):
        BoundaryCondition("neumann")
    with pytest.raises(ValueError, match="sides"):
        BoundaryCondition("periodic", ("left",))
    with pytest.raises(ValueError, match="sides"):
        dirichlet(("top",))
    with pytest.raises(ValueError, match="n"):
        neumann(0.1, order=3).rows(5)
    with pytest.raises(ValueError, match="data"):
        dirichlet().enforce(torch.zeros(2, 3, 10), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="operator"):
        BoonFNO1d(torch.nn.Linear(2, 2), dirichlet())


@pytest.mark.parametrize("length_pad", [6, 7], ids=["even-length", "odd-length"])
@pytest.mark.parametrize(
    "condition", [dirichlet(), neumann(1 / (N - 1)), periodic()], ids=lambda c: c.kind
)
def test_all_modes_kept_including_nyquist_still_eliminates_exactly(condition, length_pad):
    # modes >= length // 2 + 1: every rfft frequency (with the Nyquist term on even lengths) is kept
    torch.manual_seed(9)
    operator = FNO1d(1, 2, modes=N, width=WIDTH, layers=2, padding=length_pad).double()
    layer = CorrectedFourierLayer(operator.layers[0], condition)
    length = N + length_pad
    basis = torch.eye(WIDTH * length, dtype=torch.float64).reshape(-1, WIDTH, length)
    with torch.no_grad():
        outputs = layer(basis, N)
    rows, _ = condition.rows(N, length)
    out_functionals = torch.einsum("kn,jon->jko", rows, outputs).reshape(len(basis), -1)
    in_functionals = torch.einsum("kn,jcn->jkc", rows, basis).reshape(len(basis), -1)
    solution = torch.linalg.lstsq(in_functionals, out_functionals).solution
    residual = in_functionals @ solution - out_functionals
    assert float(residual.abs().max()) < 1e-12 * max(1.0, float(out_functionals.abs().max()))
    # and L_c v - L v lies in the span of L applied to anchor impulses (only anchors changed)
    raw = operator.layers[0]
    _, anchors = condition.rows(N, length)
    impulses = basis.reshape(WIDTH, length, WIDTH, length)[:, anchors].reshape(-1, WIDTH, length)
    with torch.no_grad():
        difference = (outputs - raw(basis)).reshape(len(basis), -1)
        span = raw(impulses).reshape(len(impulses), -1)
    coefficients = torch.linalg.lstsq(span.T, difference.T).solution
    assert float(difference.abs().max()) > 1e-6
    assert float((span.T @ coefficients - difference.T).abs().max()) < 1e-11


# -- periodic conditions: the FNO on one period ----------------------------------------------------
def periodic_input(batch: int, dtype=torch.float64) -> torch.Tensor:
    """Random (batch, 1, N) input with the duplicate end node a[N-1] = a[0]."""
    a = torch.randn(batch, 1, N, dtype=dtype)
    a[..., -1] = a[..., 0]
    return a


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("coordinates", ["periodic", "linear", "none"])
def test_periodic_boon_on_the_period_has_equal_end_values_exactly(dtype, coordinates):
    for seed in range(3):
        operator = random_operator(seed, coordinates=coordinates).to(dtype)
        with torch.no_grad():  # random weights, not the small initial ones
            for parameter in operator.parameters():
                parameter.normal_()
        model = BoonFNO1d(operator, periodic())
        assert model.on_period and model.hyperparameters["boundary"]["periodic_layers"] == "period"
        a = torch.randn(5, 1, N, dtype=dtype)  # end nodes need not agree: node N-1 is not read
        with torch.no_grad():
            features, u = model.features(a), model(a)
        assert u.dtype == dtype and u.shape == (5, 3, N)
        assert torch.equal(features[..., 0], features[..., -1])
        assert torch.equal(u[..., 0], u[..., -1])
        assert torch.equal(u, features)  # the final average changes nothing
        assert float(periodic().residual(u).abs().max()) == 0.0
        b = a.clone()
        b[..., -1] = torch.randn(5, 1, dtype=dtype)
        with torch.no_grad():
            assert torch.equal(model(b), u)


@pytest.mark.parametrize("shift", [1, 5, N - 2])
def test_periodic_boon_on_the_period_commutes_with_cyclic_shifts(shift):
    # every layer maps (N-1)-periodic sequences to (N-1)-periodic ones: rolling the period of the
    # input rolls the period of the output (no grid features, which would pin absolute positions)
    for seed in range(2):
        model = BoonFNO1d(random_operator(seed, coordinates="none"), periodic())
        a = periodic_input(4)
        rolled = torch.roll(a[..., :-1], shift, dims=-1)
        b = torch.cat([rolled, rolled[..., :1]], dim=-1)
        with torch.no_grad():
            u, v = model(a), model(b)
        expected = torch.roll(u[..., :-1], shift, dims=-1)
        expected = torch.cat([expected, expected[..., :1]], dim=-1)
        assert float((v - expected).abs().max()) < 1e-12 * max(1.0, float(u.abs().max()))
        # the padded kernel-corrected path is not shift equivariant (its period is N - 1 + PAD)
        kernel = BoonFNO1d(model.operator, periodic(), periodic_layers="kernel")
        with torch.no_grad():
            u_k, v_k = kernel(a), kernel(b)
        expected = torch.roll(u_k[..., :-1], shift, dims=-1)
        assert float((v_k[..., :-1] - expected).abs().max()) > 1e-6


def test_periodic_layers_option_is_validated_and_recorded():
    operator = random_operator(10, coordinates="periodic")
    for bad in ("padded", None, 1):
        with pytest.raises(ValueError, match="periodic_layers"):
            BoonFNO1d(operator, periodic(), periodic_layers=bad)
    kernel = BoonFNO1d(operator, periodic(), periodic_layers="kernel")
    assert not kernel.on_period
    assert not BoonFNO1d(operator, periodic(), correct_layers=False).on_period
    assert not BoonFNO1d(operator, dirichlet()).on_period
    a = periodic_input(3)
    for model in (BoonFNO1d(operator, periodic()), kernel):
        boundary = model.hyperparameters["boundary"]
        rebuilt = BoonFNO1d.from_hyperparameters(operator, boundary)
        assert rebuilt.on_period == model.on_period
        with torch.no_grad():
            assert torch.equal(rebuilt(a), model(a))
    # a checkpoint saved before the option existed rebuilds the kernel-corrected layers
    legacy = dict(BoonFNO1d(operator, periodic()).hyperparameters["boundary"])
    del legacy["periodic_layers"]
    rebuilt = BoonFNO1d.from_hyperparameters(operator, legacy)
    assert rebuilt.periodic_layers == "kernel" and not rebuilt.on_period
    with torch.no_grad():
        assert torch.equal(rebuilt(a), kernel(a))
