"""Fourier neural operators (Li et al. 2021) for 1-D and 2-D grids, channels first.

    v_0 = P(a, grid)                    pointwise lift to `width` channels (zero-padded by `padding`)
    v_{l+1} = sigma(K_l v_l + W_l v_l)  K_l spectral convolution, W_l pointwise linear, NO bias
    u = Q(v_L)                          crop, pointwise two-layer projection to `out_channels`

sigma is skipped after the last Fourier layer. Keeping W_l free of a bias makes K_l + W_l a
linear operator, which the boundary corrections of `probcons.boon` rely on.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from probcons.checkpoint import load_checkpoint, save_checkpoint
from probcons.errors import UsageError
from probcons.operators.spectral import SpectralConv1d, SpectralConv2d
from probcons.validation import check_positive_int

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "identity": nn.Identity}
# Grid features appended to the input: s in [0, 1] per axis ("linear"), (sin 2 pi s, cos 2 pi s)
# per axis ("periodic": equal at both ends, so a periodic input stays periodic), or nothing.
COORDINATES = ("linear", "periodic", "none")
FEATURES_PER_AXIS = {"linear": 1, "periodic": 2, "none": 0}


def _check_nonnegative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{name}: expected an integer >= 0, got {value!r}")
    return value


def _check_coordinates(coordinates: str) -> str:
    if coordinates not in COORDINATES:
        raise UsageError(f"coordinates: expected one of {COORDINATES}, got {coordinates!r}")
    return coordinates


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise UsageError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


class FourierLayer(nn.Module):
    """Pre-activation Fourier layer v -> K v + W v (linear: W has no bias)."""

    def __init__(self, spectral: nn.Module, pointwise: nn.Module) -> None:
        super().__init__()
        self.spectral = spectral
        self.pointwise = pointwise

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.spectral(v) + self.pointwise(v)


class _FNO(nn.Module):
    """Shared lift / layers / projection; subclasses fix the grid dimension."""

    dimension: int

    def _build(self, in_channels, out_channels, width, layers, projection_width, activation):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.width = check_positive_int(width, "width")
        self.n_layers = check_positive_int(layers, "layers")
        self.projection_width = check_positive_int(projection_width, "projection_width")
        self.activation_name = _check_activation(activation)
        self.activation = ACTIVATIONS[activation]()
        extra = self.dimension * FEATURES_PER_AXIS[self.coordinates_name]
        conv = nn.Conv1d if self.dimension == 1 else nn.Conv2d
        self.lift = conv(in_channels + extra, width, 1)
        self.layers = nn.ModuleList(
            FourierLayer(self._spectral(), conv(width, width, 1, bias=False)) for _ in range(layers)
        )
        self.project_hidden = conv(width, projection_width, 1)
        self.project_out = conv(projection_width, out_channels, 1)

    # -- pieces, reused by the boundary-corrected wrappers -------------------------------------
    def _check_input(self, a: torch.Tensor) -> None:
        if not isinstance(a, torch.Tensor) or a.dim() != self.dimension + 2:
            raise UsageError(
                f"a: expected a tensor (batch, channels, *grid) with {self.dimension} grid axes,"
                f" got {a.shape if isinstance(a, torch.Tensor) else type(a).__name__}"
            )
        if a.shape[1] != self.in_channels:
            raise UsageError(f"a: expected {self.in_channels} channels, got {a.shape[1]}")

    def coordinates(self, a: torch.Tensor) -> torch.Tensor:
        """Grid features, (batch, features, *grid); see COORDINATES."""
        shape = a.shape[2:]
        axes = [torch.linspace(0, 1, n, dtype=a.dtype, device=a.device) for n in shape]
        mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        if self.coordinates_name == "periodic":
            angle = 2 * torch.pi * mesh
            mesh = torch.cat([torch.sin(angle), torch.cos(angle)])
        return mesh.expand(a.shape[0], *mesh.shape)

    def lift_input(self, a: torch.Tensor) -> torch.Tensor:
        """(batch, in, *grid) -> (batch, width, *padded grid)."""
        if self.coordinates_name != "none":
            a = torch.cat([a, self.coordinates(a)], dim=1)
        v = self.lift(a)
        pads = []
        for p in reversed(self.padding):
            pads += [0, p]
        return nn.functional.pad(v, pads) if any(self.padding) else v

    def project(self, v: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Crop the padding and project, (batch, width, *padded) -> (batch, out, *shape)."""
        index = (slice(None), slice(None)) + tuple(slice(0, n) for n in shape)
        return self.project_out(self.activation(self.project_hidden(v[index])))

    def fourier_layers(self, v: torch.Tensor) -> torch.Tensor:
        """The Fourier layers with the activation between them, (batch, width, *P) -> same."""
        for index, layer in enumerate(self.layers):
            v = layer(v)
            if index < self.n_layers - 1:
                v = self.activation(v)
        return v

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, *grid) -> (batch, out_channels, *grid)."""
        self._check_input(a)
        return self.project(self.fourier_layers(self.lift_input(a)), tuple(a.shape[2:]))

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        """Weights and the hyperparameters that rebuild this model (`load_operator`)."""
        state = {key: value.detach().cpu() for key, value in self.state_dict().items()}
        save_checkpoint(path, state, self.hyperparameters, extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> _FNO:
        model = load_operator(path)
        if not isinstance(model, cls):
            raise UsageError(
                f"path: expected a {cls.__name__} checkpoint, got {type(model).__name__}"
            )
        return model


class FNO1d(_FNO):
    """FNO on (batch, channels, x); `modes` Fourier modes kept, `width` channels, `layers` layers."""

    dimension = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: int = 16,
        width: int = 64,
        layers: int = 4,
        padding: int = 0,
        coordinates: str = "linear",
        projection_width: int = 128,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.modes = check_positive_int(modes, "modes")
        self.padding = (_check_nonnegative_int(padding, "padding"),)
        self.coordinates_name = _check_coordinates(coordinates)
        self._build(in_channels, out_channels, width, layers, projection_width, activation)

    def _spectral(self) -> nn.Module:
        return SpectralConv1d(self.width, self.width, self.modes)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "class": "FNO1d",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "modes": self.modes,
            "width": self.width,
            "layers": self.n_layers,
            "padding": self.padding[0],
            "coordinates": self.coordinates_name,
            "projection_width": self.projection_width,
            "activation": self.activation_name,
        }


class FNO2d(_FNO):
    """FNO on (batch, channels, x, t) or (batch, channels, x, y); modes and padding per axis."""

    dimension = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: tuple[int, int] = (12, 12),
        width: int = 32,
        layers: int = 4,
        padding: tuple[int, int] | int = 0,
        coordinates: str = "linear",
        projection_width: int = 128,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if isinstance(modes, int):
            modes = (modes, modes)
        if not (isinstance(modes, (tuple, list)) and len(modes) == 2):
            raise UsageError(f"modes: expected an int or a pair of ints, got {modes!r}")
        self.modes = (
            check_positive_int(modes[0], "modes[0]"),
            check_positive_int(modes[1], "modes[1]"),
        )
        if isinstance(padding, int):
            padding = (padding, padding)
        self.padding = tuple(_check_nonnegative_int(p, "padding") for p in padding)
        if len(self.padding) != 2:
            raise UsageError(f"padding: expected an int or a pair of ints, got {padding!r}")
        self.coordinates_name = _check_coordinates(coordinates)
        self._build(in_channels, out_channels, width, layers, projection_width, activation)

    def _spectral(self) -> nn.Module:
        return SpectralConv2d(self.width, self.width, self.modes)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {
            "class": "FNO2d",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "modes": list(self.modes),
            "width": self.width,
            "layers": self.n_layers,
            "padding": list(self.padding),
            "coordinates": self.coordinates_name,
            "projection_width": self.projection_width,
            "activation": self.activation_name,
        }


OPERATOR_CLASSES = {"FNO1d": FNO1d, "FNO2d": FNO2d}


def build_operator(hyperparameters: dict[str, Any]) -> _FNO:
    """Rebuild an (untrained) operator from its `hyperparameters` dict."""
    options = dict(hyperparameters)
    name = options.pop("class", None)
    if name not in OPERATOR_CLASSES:
        raise UsageError(
            f"hyperparameters['class']: expected one of {sorted(OPERATOR_CLASSES)}, got {name!r}"
        )
    if name == "FNO2d":
        options["modes"] = tuple(options["modes"])
        options["padding"] = tuple(options["padding"])
    return OPERATOR_CLASSES[name](**options)


def load_operator(path: str | os.PathLike) -> _FNO:
    """Rebuild an operator saved with `.save(path)`; weights loaded with weights_only=True."""
    payload = load_checkpoint(path)
    model = build_operator(payload["hyperparameters"])
    model.load_state_dict(payload["state"])
    return model
