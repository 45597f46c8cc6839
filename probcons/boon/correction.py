"""BOON kernel corrections of Fourier layers, and the boundary-corrected FNO.

A Fourier layer's linear part L v = K v + W v (K spectral convolution, W pointwise, no bias)
acts on v (batch, C, P) (P = n physical nodes + padding). The condition has rows R (r, P) with
anchor nodes a_k; Psi (P, r) puts 1 / R[k, a_k] at node a_k, so R Psi = I. The corrected layer
changes only the anchor inputs,

    L_c v = L (v + Psi delta),   delta (batch, r, C) such that   R L_c v = M (R v),

with M = R L Psi, the (rC) x (rC) boundary block matrix of the layer. So the boundary
functionals of the output depend on those of the input alone: for Dirichlet the boundary rows
of L_c only see the boundary inputs (the couplings to interior nodes are eliminated), for
Neumann the output's one-sided derivative only sees the input's, for periodic the end mismatch
maps to M times the input's. Solving, delta = -M^{-1} R K (v - Psi R v). M is built in closed
form for every channel pair, M[(k, o), (j, c)] = sum_n R[k, n] kappa[o, c]((n - a_j) mod P) /
R[j, a_j] + W[o, c] [k = j], from the impulse response kappa = irfft(weights): per layer and
forward pass one inverse FFT of the weights and one float64 (rC) x (rC) solve shared by the
batch, and no extra application of K (K Psi delta uses the closed-form columns). A singular or
ill-conditioned M raises BoundaryCorrectionError (checked in eval mode). The network output is then made to satisfy
R u = g exactly by solving for the anchor nodes (`BoundaryCondition.enforce`).
"""

from __future__ import annotations

import torch
from torch import nn

from probcons.boon.conditions import BoundaryCondition
from probcons.operators.fno import FNO1d, FourierLayer
from probcons.operators.spectral import SpectralConv1d

MAX_CONDITION = 1e10  # largest accepted 2-norm condition number of the boundary block matrix


class BoundaryCorrectionError(ValueError):
    """The boundary block matrix of a layer is singular or too ill-conditioned to eliminate."""


def boundary_columns(kappa: torch.Tensor, anchors: list[int]) -> torch.Tensor:
    """Columns of K at the anchor nodes, (r, C_out, C_in, P): [j, o, c, n] = kappa[o, c, n - a_j]."""
    return torch.stack([torch.roll(kappa, shifts=anchor, dims=-1) for anchor in anchors])


def boundary_blocks(columns: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """M = R K E as a (r C_out, r C_in) matrix from the anchor columns (r, C_out, C_in, P)."""
    r, c_out, c_in, _ = columns.shape
    blocks = torch.einsum("kn,jocn->kojc", rows.to(columns.dtype), columns)
    return blocks.reshape(r * c_out, r * c_in)


def check_conditioning(matrix: torch.Tensor, max_condition: float, name: str) -> None:
    """Raise BoundaryCorrectionError if cond_2(matrix) exceeds max_condition (or is not finite)."""
    singular = torch.linalg.svdvals(matrix.detach())
    condition = float(singular[0] / singular[-1]) if float(singular[-1]) > 0 else float("inf")
    if not condition <= max_condition:
        raise BoundaryCorrectionError(
            f"{name}: boundary block matrix has condition number {condition:.3g}"
            f" > max_condition={max_condition:.3g}; the elimination is not reliable"
        )


class CorrectedFourierLayer(nn.Module):
    """L_c v = K_c v + W v for one `FourierLayer` with a 1-D spectral convolution (see module doc)."""

    def __init__(
        self,
        layer: FourierLayer,
        condition: BoundaryCondition,
        max_condition: float = MAX_CONDITION,
        check: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(layer, FourierLayer) or not isinstance(layer.spectral, SpectralConv1d):
            raise ValueError(f"layer: expected a 1-D FourierLayer, got {type(layer).__name__}")
        if layer.spectral.in_channels != layer.spectral.out_channels:
            raise ValueError("layer: the correction needs as many output as input channels")
        if not isinstance(condition, BoundaryCondition):
            raise ValueError(
                f"condition: expected a BoundaryCondition, got {type(condition).__name__}"
            )
        self.layer = layer
        self.condition = condition
        self.max_condition = float(max_condition)
        self.check = bool(check)

    def system(self, n: int, length: int):
        """Closed-form pieces for n physical nodes stored in `length`.

        Returns rows R (r, P), anchors, pivots R[k, a_k] (r,), the columns K Psi (r, C, C, P),
        the K part R K Psi and M = R K Psi + I_r (x) W, both (rC, rC) float64.
        """
        rows, anchors = self.condition.rows(n, length)
        kappa = self.layer.spectral.impulse_response(length)
        pivots = rows[torch.arange(len(anchors)), anchors].to(kappa.dtype)
        columns = boundary_columns(kappa, anchors) / pivots[:, None, None, None]
        weight = self.layer.pointwise.weight[..., 0].to(torch.float64)
        kernel_part = boundary_blocks(columns.to(torch.float64), rows)
        matrix = kernel_part + torch.kron(torch.eye(len(anchors), dtype=torch.float64), weight)
        if self.check and not self.training:  # checked at evaluation; training skips the SVD
            check_conditioning(matrix, self.max_condition, "layer")
        return rows.to(kappa.dtype), anchors, pivots, columns, kernel_part, matrix

    def forward(self, v: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """(batch, C, P) -> (batch, C, P); the physical nodes are the first n (default P)."""
        length = v.shape[-1]
        n = length if n is None else n
        rows, anchors, pivots, columns, kernel_part, matrix = self.system(n, length)
        batch, r = v.shape[0], len(anchors)
        kv = self.layer.spectral(v)
        functional = torch.einsum("kn,bcn->bkc", rows, v).reshape(batch, -1)  # R v
        applied = torch.einsum("kn,bcn->bkc", rows, kv).reshape(batch, -1)  # R K v
        rhs = functional.to(torch.float64) @ kernel_part.T - applied.to(torch.float64)
        delta = torch.linalg.solve(matrix, rhs.T).T.to(v.dtype).reshape(batch, r, -1)
        z = v.clone()
        for k, anchor in enumerate(anchors):
            z[..., anchor] = z[..., anchor] + delta[:, k] / pivots[k]
        kz = kv + torch.einsum("jocn,bjc->bon", columns, delta)
        return kz + self.layer.pointwise(z)


class BoonFNO1d(nn.Module):
    """Boundary-corrected FNO: every Fourier layer of `operator` corrected, output made exact.

    forward(a, data): a (batch, in_channels, n), data (batch, out_channels, r) boundary values
    (Dirichlet values / Neumann derivatives, per side; None for periodic or zero data) ->
    u (batch, out_channels, n) with condition.residual(u, data) = 0 up to round-off.
    """

    def __init__(
        self,
        operator: FNO1d,
        condition: BoundaryCondition,
        max_condition: float = MAX_CONDITION,
        check_conditioning: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(operator, FNO1d):
            raise ValueError(f"operator: expected an FNO1d, got {type(operator).__name__}")
        self.operator = operator
        self.condition = condition
        self.corrected = nn.ModuleList(
            CorrectedFourierLayer(layer, condition, max_condition, check_conditioning)
            for layer in operator.layers
        )

    @property
    def hyperparameters(self) -> dict:
        return {
            **self.operator.hyperparameters,
            "boundary": {
                "kind": self.condition.kind,
                "sides": list(self.condition.sides),
                "step": self.condition.step,
                "order": self.condition.order,
            },
        }

    def features(self, a: torch.Tensor) -> torch.Tensor:
        """Output before the final boundary solve, (batch, out_channels, n)."""
        self.operator._check_input(a)
        n = a.shape[-1]
        if n < self.condition.minimum_nodes():
            raise ValueError(
                f"a: expected at least {self.condition.minimum_nodes()} nodes, got {n}"
            )
        v = self.operator.lift_input(a)
        for index, layer in enumerate(self.corrected):
            v = layer(v, n)
            if index < len(self.corrected) - 1:
                v = self.operator.activation(v)
        return self.operator.project(v, (n,))

    def forward(self, a: torch.Tensor, data=None) -> torch.Tensor:
        return self.condition.enforce(self.features(a), data)
