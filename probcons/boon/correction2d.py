"""BOON in two space dimensions: boundary conditions on all four sides of a 2-D Fourier operator.

Grid (batch, C, n1, n2), axis 0 = x (index i), axis 1 = y (index j). The sides normal to axis 0
("x-sides", i = 0 and i = n1 - 1) carry a 1-D `BoundaryCondition` applied along axis 0 for every
j; the sides normal to axis 1 ("y-sides") one applied along axis 1 for every i. Rows per side
line, R u[:, :, :, j] = g_x[..., j] and R u[:, :, i, :] = g_y[..., i]: Dirichlet values, or
one-sided Neumann stencils of order p with the grid step of that axis (`conditions.py`).

Kernel correction of one Fourier layer along one axis (`CorrectedFourierLayer2d`). The layer
L v = K v + W v (K a 2-D circular convolution with real kernel kappa on the padded grid P1 x P2,
W pointwise without bias) is, after an rfft along the other axis, one 1-D circular convolution
along the corrected axis per frequency f of the other axis. For each f the 1-D BOON elimination
of `correction.py` applies unchanged (complex arithmetic): the anchor lines of the input are
changed, z = v + Psi delta, so that R L z = M R v with M_f = R L_f Psi (r C x r C). Hence the
output's boundary functionals on the corrected sides depend only on the input's, on every line
across the padded grid. K vanishes at the frequencies the weights do not hold (M_f = I (x) W,
delta_f = 0), so only min(modes, P // 2 + 1) systems are solved. Cost per layer and forward:
one inverse FFT of the weights (the impulse response) and its rfft along the other axis, rffts of
the r boundary lines of v and of K v, and one batched complex128 solve shared by the batch; no
extra application of the layer (0 extra K or W applications: the columns are in closed form).

A layer corrects one axis: `BoonFNO2d` alternates x-sides and y-sides through its layers (layer
l corrects axis `axes[l % len(axes)]`), because the two eliminations do not decouple together.
Exactness on all four sides comes from the output solve (`BoundaryCondition2d.enforce`): first
the y-sides on every line i that is not an x-side anchor, then the x-sides on every line j. Each
corner is thus solved from its x-side row. When the data are compatible at the corners (the
functionals of one field, e.g. the cavity's wall values, or zero Neumann data), the y-side rows
through the corners then hold too (the y-stencil of the x-solved line is the x-solve of y-rows
that hold), so every row on all four sides is satisfied up to round-off: about 1e-15 for
Dirichlet and 1e-13 for Neumann (differences over h) in float64; in float32 ~1e-7 (Dirichlet)
and ~1e-5 (Neumann, h = 1/49).
"""

from __future__ import annotations

import torch
from torch import nn

from probcons.boon.correction import MAX_CONDITION, BoundaryCorrectionError
from probcons.constraints.boundary_condition import BoundaryCondition
from probcons.constraints.boundary_condition2d import (
    AXES,
    BoundaryCondition2d,
)
from probcons.errors import UsageError
from probcons.operators.fno import FNO2d, FourierLayer
from probcons.operators.spectral import SpectralConv2d


def _check_conditioning(matrices: torch.Tensor, max_condition: float) -> None:
    singular = torch.linalg.svdvals(matrices.detach())
    smallest = singular[..., -1]
    condition = torch.where(smallest > 0, singular[..., 0] / smallest, torch.inf)
    worst = float(condition.max())
    if not worst <= max_condition:
        raise BoundaryCorrectionError(
            f"layer: boundary block matrix has condition number {worst:.3g}"
            f" > max_condition={max_condition:.3g}; the elimination is not reliable"
        )


class CorrectedFourierLayer2d(nn.Module):
    """L_c v = K (v + Psi delta) + W (v + Psi delta) for the sides normal to `axis` (module doc)."""

    def __init__(
        self,
        layer: FourierLayer,
        condition: BoundaryCondition,
        axis: int,
        max_condition: float = MAX_CONDITION,
        check: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(layer, FourierLayer) or not isinstance(layer.spectral, SpectralConv2d):
            raise UsageError(f"layer: expected a 2-D FourierLayer, got {type(layer).__name__}")
        if layer.spectral.in_channels != layer.spectral.out_channels:
            raise UsageError("layer: the correction needs as many output as input channels")
        if not isinstance(condition, BoundaryCondition) or condition.kind == "periodic":
            raise UsageError(
                f"condition: expected a Dirichlet or Neumann condition, got {condition!r}"
            )
        if axis not in AXES:
            raise UsageError(f"axis: expected one of {AXES}, got {axis!r}")
        self.layer = layer
        self.condition = condition
        self.axis = axis
        self.max_condition = float(max_condition)
        self.check = bool(check)

    def system(self, n: int, shape: tuple[int, int]):
        """Closed-form pieces for n physical nodes along `axis` on the padded grid `shape`.

        Returns rows R (r, P), anchors, pivots (r,), columns K Psi per frequency
        (r, O, C, P, F) in the kernel's complex dtype, the K part R K Psi and M = R K Psi + I (x) W,
        both (F, rC, rC) complex128; F = frequencies of the other axis where K is not zero.
        """
        spectral = self.layer.spectral
        kappa = spectral.impulse_response(*shape)  # (O, C, P1, P2)
        if self.axis == 1:
            kappa = kappa.transpose(-1, -2)
        length, other = kappa.shape[-2:]
        # nonzero rfft bins of kappa along the other axis: 0..m2-1 along y; along x the
        # weights hold k1 in [-m1, m1 - 1], so bins 0..m1
        nonzero = spectral.modes[1] if self.axis == 0 else spectral.modes[0] + 1
        used = min(nonzero, other // 2 + 1)
        rows, anchors = self.condition.rows(n, length)
        pivots = rows[torch.arange(len(anchors)), anchors]
        kappa_hat = torch.fft.rfft(kappa, dim=-1)[..., :used]  # (O, C, P, F)
        columns = (
            torch.stack([torch.roll(kappa_hat, shifts=anchor, dims=-2) for anchor in anchors])
            / pivots.to(kappa.dtype)[:, None, None, None, None]
        )
        r, c_out, c_in = columns.shape[:3]
        kernel_part = torch.einsum(
            "kn,jocnf->fkojc", rows.to(torch.complex128), columns.to(torch.complex128)
        )
        kernel_part = kernel_part.reshape(used, r * c_out, r * c_in)
        weight = self.layer.pointwise.weight[..., 0, 0].to(torch.float64)
        matrix = kernel_part + torch.kron(torch.eye(r, dtype=torch.float64), weight)
        if self.check and not self.training:  # checked at evaluation; training skips the SVD
            _check_conditioning(matrix, self.max_condition)
        return rows.to(kappa.dtype), anchors, pivots.to(kappa.dtype), columns, kernel_part, matrix

    def forward(self, v: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, C, P1, P2) -> (B, C, P1, P2); physical nodes [:n1, :n2] (`shape`, default all)."""
        shape = tuple(v.shape[-2:]) if shape is None else tuple(shape)
        kv = self.layer.spectral(v)
        rows, anchors, pivots, columns, kernel_part, matrix = self.system(
            shape[self.axis], tuple(v.shape[-2:])
        )
        if self.axis == 1:
            v, kv = v.transpose(-1, -2), kv.transpose(-1, -2)
        batch, other = v.shape[0], v.shape[-1]
        r, used = len(anchors), columns.shape[-1]
        # R v and R K v along the corrected axis first, then the rfft of those r lines only
        functional = torch.fft.rfft(torch.einsum("kn,bcnq->bkcq", rows, v), dim=-1)[..., :used]
        applied = torch.fft.rfft(torch.einsum("kn,bcnq->bkcq", rows, kv), dim=-1)[..., :used]
        functional = functional.permute(0, 3, 1, 2).reshape(batch, used, -1)  # (B, F, r C)
        applied = applied.permute(0, 3, 1, 2).reshape(batch, used, -1)
        rhs = torch.einsum("fij,bfj->bfi", kernel_part, functional.to(torch.complex128))
        rhs = rhs - applied.to(torch.complex128)
        delta = torch.linalg.solve(matrix.unsqueeze(0), rhs.unsqueeze(-1))[..., 0]
        delta = delta.to(columns.dtype).reshape(batch, used, r, -1)  # (B, F, r, C)
        lines = torch.fft.irfft(delta.permute(0, 2, 3, 1), n=other, dim=-1)  # (B, r, C, Q)
        z = v.clone()
        for k, anchor in enumerate(anchors):
            z[:, :, anchor, :] = z[:, :, anchor, :] + lines[:, k] / pivots[k]
        correction = torch.einsum("jocnf,bfjc->bonf", columns, delta)
        kz = kv + torch.fft.irfft(correction, n=other, dim=-1)
        if self.axis == 1:
            kz, z = kz.transpose(-1, -2), z.transpose(-1, -2)
        return kz + self.layer.pointwise(z)


class BoonFNO2d(nn.Module):
    """Boundary-corrected 2-D FNO: layer l corrected along axes[l % len(axes)], output made exact.

    forward(a, data): a (batch, in_channels, n1, n2), data = (g_x, g_y) as in
    `BoundaryCondition2d` -> u (batch, out_channels, n1, n2) with every boundary row satisfied up
    to round-off. skip=True adds the first out_channels input channels before the output solve
    (u = enforce(a[:, :out] + features(a)), the increment form of a time step).
    """

    def __init__(
        self,
        operator: FNO2d,
        condition: BoundaryCondition2d,
        axes: tuple[int, ...] = AXES,
        skip: bool = False,
        max_condition: float = MAX_CONDITION,
        check_conditioning: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(operator, FNO2d):
            raise UsageError(f"operator: expected an FNO2d, got {type(operator).__name__}")
        if not isinstance(condition, BoundaryCondition2d):
            raise UsageError(
                f"condition: expected a BoundaryCondition2d, got {type(condition).__name__}"
            )
        axes = tuple(axes)
        if not axes or any(axis not in AXES for axis in axes):
            raise UsageError(f"axes: expected a non-empty sequence of 0 and 1, got {axes!r}")
        if skip and operator.in_channels < operator.out_channels:
            raise UsageError("skip: needs at least as many input as output channels")
        self.operator = operator
        self.condition = condition
        self.axes = axes
        self.skip = bool(skip)
        self.corrected = nn.ModuleList(
            CorrectedFourierLayer2d(
                layer,
                condition.along(axes[index % len(axes)]),
                axes[index % len(axes)],
                max_condition,
                check_conditioning,
            )
            for index, layer in enumerate(operator.layers)
        )

    @property
    def hyperparameters(self) -> dict:
        def describe(c: BoundaryCondition) -> dict:
            return {"kind": c.kind, "sides": list(c.sides), "step": c.step, "order": c.order}

        return {
            **self.operator.hyperparameters,
            "boundary": {"x": describe(self.condition.x), "y": describe(self.condition.y)},
            "axes": list(self.axes),
            "skip": self.skip,
        }

    def features(self, a: torch.Tensor) -> torch.Tensor:
        """Output before the final boundary solve, (batch, out_channels, n1, n2)."""
        self.operator._check_input(a)
        self.condition.check_shape(tuple(a.shape), "a")
        shape = tuple(a.shape[-2:])
        v = self.operator.lift_input(a)
        for index, layer in enumerate(self.corrected):
            v = layer(v, shape)
            if index < len(self.corrected) - 1:
                v = self.operator.activation(v)
        out = self.operator.project(v, shape)
        return out + a[:, : out.shape[1]] if self.skip else out

    def forward(self, a: torch.Tensor, data=None) -> torch.Tensor:
        return self.condition.enforce(self.features(a), data)
