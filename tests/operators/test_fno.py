"""FNO: shapes, the closed-form impulse response of the spectral convolutions, checkpoints."""

import pytest
import torch

from probcons.operators import (
    FNO1d,
    FNO2d,
    SpectralConv1d,
    SpectralConv2d,
    build_operator,
    load_operator,
)

torch.set_num_threads(1)


def test_fno1d_shapes_any_channels():
    for in_c, out_c, pad, coordinates in [
        (1, 1, 0, "linear"),
        (3, 5, 4, "periodic"),
        (2, 2, 0, "none"),
    ]:
        model = FNO1d(in_c, out_c, modes=5, width=8, layers=2, padding=pad, coordinates=coordinates)
        assert model(torch.randn(4, in_c, 17)).shape == (4, out_c, 17)


def test_fno2d_shapes_x_t():
    model = FNO2d(2, 3, modes=(4, 3), width=6, layers=2, padding=(3, 2))
    assert model(torch.randn(2, 2, 12, 9)).shape == (2, 3, 12, 9)


def test_pointwise_maps_in_layers_have_no_bias():
    model = FNO1d(1, 1, modes=4, width=4, layers=3)
    assert all(layer.pointwise.bias is None for layer in model.layers)


def test_spectral_conv1d_impulse_response_matches_the_operator_matrix():
    torch.manual_seed(0)
    conv = SpectralConv1d(3, 2, modes=5).double()
    n = 16
    basis = torch.eye(3 * n, dtype=torch.float64).reshape(3 * n, 3, n)
    matrix = conv(basis)  # [input (c, j), o, i]
    kappa = conv.impulse_response(n)  # (out, in, n)
    index = (torch.arange(n)[:, None] - torch.arange(n)[None, :]) % n  # (i, j)
    expected = kappa[:, :, index]  # (o, c, i, j)
    got = matrix.reshape(3, n, 2, n).permute(2, 0, 3, 1)
    assert torch.allclose(got, expected, atol=1e-14)


def test_spectral_conv2d_impulse_response_matches_a_delta():
    torch.manual_seed(1)
    conv = SpectralConv2d(2, 2, modes=(3, 3)).double()
    delta = torch.zeros(1, 2, 8, 6, dtype=torch.float64)
    delta[0, 1, 0, 0] = 1.0
    assert torch.allclose(conv(delta)[0], conv.impulse_response(8, 6)[:, 1], atol=1e-14)


def test_double_cast_keeps_complex_weights_consistent():
    model = FNO1d(1, 1, modes=4, width=4, layers=2).double()
    a = torch.randn(2, 1, 12, dtype=torch.float64)
    assert model(a).dtype == torch.float64


def test_checkpoint_roundtrip(tmp_path):
    model = FNO2d(1, 2, modes=(3, 2), width=4, layers=2, padding=(1, 2))
    path = tmp_path / "fno.pt"
    model.save(path, extra={"note": "x"})
    loaded = load_operator(path)
    a = torch.randn(2, 1, 8, 7)
    assert torch.equal(model(a), loaded(a))
    assert loaded.hyperparameters == model.hyperparameters
    with pytest.raises(ValueError, match="FNO1d"):
        FNO1d.load(path)


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="modes"):
        FNO1d(1, 1, modes=0)
    with pytest.raises(ValueError, match="coordinates"):
        FNO1d(1, 1, coordinates="polar")
    with pytest.raises(ValueError, match="activation"):
        FNO1d(1, 1, activation="swish")
    with pytest.raises(ValueError, match="padding"):
        FNO2d(1, 1, padding=-1)
    with pytest.raises(ValueError, match="class"):
        build_operator({"class": "UNet"})
    with pytest.raises(ValueError, match="channels"):
        FNO1d(2, 1, modes=2, width=4, layers=1)(torch.randn(1, 3, 8))
