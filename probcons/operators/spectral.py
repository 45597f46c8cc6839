"""Spectral convolutions: the kernel K of a Fourier layer, with its impulse response in closed form.

1-D: (K v)[o, n] = irfft_n( sum_i R[i, o, k] rfft(v[i])[k] for k < modes ). K is a circular
convolution on the n nodes it is applied to, K[o, i](n, j) = kappa[o, i]((n - j) mod n), with
kappa[o, i] = irfft(R[i, o, :modes]) (the response to a unit impulse). Weights are stored as real
tensors (..., 2) so that `module.double()` casts them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from probcons.errors import UsageError
from probcons.validation import check_positive_int


def _complex(weight: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(weight)


def _init_weight(in_channels: int, out_channels: int, *modes: int) -> nn.Parameter:
    """Uniform complex weights scaled by 1 / (in * out), as in the FNO paper's code base."""
    scale = 1.0 / (in_channels * out_channels)
    return nn.Parameter(scale * torch.rand(in_channels, out_channels, *modes, 2))


class SpectralConv1d(nn.Module):
    """Fourier-space channel mixing of the lowest `modes` frequencies: (batch, in, n) -> (batch, out, n)."""

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.modes = check_positive_int(modes, "modes")
        self.weight = _init_weight(in_channels, out_channels, modes)

    def spectrum(self, n: int) -> torch.Tensor:
        """Complex multipliers on the rfft frequencies of an n-node signal, (in, out, n // 2 + 1)."""
        weight = _complex(self.weight)
        kept = min(self.modes, n // 2 + 1)
        full = weight.new_zeros(self.in_channels, self.out_channels, n // 2 + 1)
        full[..., :kept] = weight[..., :kept]
        return full

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        n = v.shape[-1]
        kept = min(self.modes, n // 2 + 1)
        coefficients = torch.fft.rfft(v, dim=-1)
        out = coefficients.new_zeros(v.shape[0], self.out_channels, n // 2 + 1)
        out[..., :kept] = torch.einsum(
            "bik,iok->bok", coefficients[..., :kept], _complex(self.weight)[..., :kept]
        )
        return torch.fft.irfft(out, n=n, dim=-1)

    def impulse_response(self, n: int) -> torch.Tensor:
        """kappa, (out, in, n): column j of K restricted to channel pair (o, i) is kappa rolled by j."""
        return torch.fft.irfft(self.spectrum(n).transpose(0, 1), n=n, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"


class SpectralConv2d(nn.Module):
    """Fourier-space mixing of frequencies |k1| < modes[0], 0 <= k2 < modes[1]: (batch, in, n1, n2)."""

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, int]) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        if not (isinstance(modes, (tuple, list)) and len(modes) == 2):
            raise UsageError(f"modes: expected a pair of positive integers, got {modes!r}")
        self.modes = (
            check_positive_int(modes[0], "modes[0]"),
            check_positive_int(modes[1], "modes[1]"),
        )
        self.weight_positive = _init_weight(in_channels, out_channels, *self.modes)
        self.weight_negative = _init_weight(in_channels, out_channels, *self.modes)

    def spectrum(self, n1: int, n2: int) -> torch.Tensor:
        """Complex multipliers on the rfft2 frequencies, (in, out, n1, n2 // 2 + 1)."""
        m1 = min(self.modes[0], math.ceil(n1 / 2))
        m2 = min(self.modes[1], n2 // 2 + 1)
        full = _complex(self.weight_positive).new_zeros(
            self.in_channels, self.out_channels, n1, n2 // 2 + 1
        )
        full[:, :, :m1, :m2] = _complex(self.weight_positive)[:, :, :m1, :m2]
        full[:, :, n1 - m1 :, :m2] = _complex(self.weight_negative)[:, :, self.modes[0] - m1 :, :m2]
        if 2 * m1 > n1:  # frequencies kept twice on a tiny grid: the positive weights win
            full[:, :, :m1, :m2] = _complex(self.weight_positive)[:, :, :m1, :m2]
        return full

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        n1, n2 = v.shape[-2:]
        m1 = min(self.modes[0], math.ceil(n1 / 2))
        m2 = min(self.modes[1], n2 // 2 + 1)
        coefficients = torch.fft.rfft2(v, dim=(-2, -1))
        out = coefficients.new_zeros(v.shape[0], self.out_channels, n1, n2 // 2 + 1)
        wp = _complex(self.weight_positive)
        wn = _complex(self.weight_negative)
        out[..., n1 - m1 :, :m2] = torch.einsum(
            "bixy,ioxy->boxy",
            coefficients[..., n1 - m1 :, :m2],
            wn[:, :, self.modes[0] - m1 :, :m2],
        )
        out[..., :m1, :m2] = torch.einsum(
            "bixy,ioxy->boxy", coefficients[..., :m1, :m2], wp[:, :, :m1, :m2]
        )
        return torch.fft.irfft2(out, s=(n1, n2), dim=(-2, -1))

    def impulse_response(self, n1: int, n2: int) -> torch.Tensor:
        """kappa, (out, in, n1, n2): K[o, i]((p, q), (r, s)) = kappa[o, i]((p - r) mod n1, (q - s) mod n2)."""
        spectrum = self.spectrum(n1, n2).transpose(0, 1)
        return torch.fft.irfft2(spectrum, s=(n1, n2), dim=(-2, -1))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"
