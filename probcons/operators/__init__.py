"""Neural operators: a compact Fourier neural operator for 1-D and 2-D grids (channels first)."""

from probcons.operators.fno import FNO1d, FNO2d, FourierLayer, build_operator, load_operator
from probcons.operators.spectral import SpectralConv1d, SpectralConv2d

__all__ = [
    "FNO1d",
    "FNO2d",
    "FourierLayer",
    "SpectralConv1d",
    "SpectralConv2d",
    "build_operator",
    "load_operator",
]
