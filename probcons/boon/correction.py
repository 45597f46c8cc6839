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
maps to M times the input's. Solving, delta = -M^{-1} R K (v - Psi R v). Everything is
evaluated on the K' retained Fourier modes in closed form, for every channel pair: with
rows_hat[m, k] = sum_n R[k, n] w_m e^{2 pi i m n / P} / P (R after the inverse rfft) and
anchor_hat[j, m] = e^{-2 pi i m a_j / P} / R[j, a_j] (rfft of Psi's columns),
M[(k, o), (j, c)] = Re sum_m W_K[c, o, m] anchor_hat[j, m] rows_hat[m, k] + W[o, c] [k = j],
R K v = Re (K v)_hat rows_hat, and K Psi delta = irfft(W_K (delta anchor_hat)). Per layer and
forward pass: the layer's own rfft and irfft, O(r C^2 K') extra work and one float64
(rC) x (rC) solve shared by the batch; no impulse response, no extra application of K. A
singular or ill-conditioned M raises BoundaryCorrectionError (checked in eval mode). The
network output is then made to satisfy R u = g exactly by solving for the anchor nodes
(`BoundaryCondition.enforce`).

Periodic conditions (default, periodic_layers="period"): no kernel correction is needed. The
grid x_0..x_{n-1} holds both ends (x_{n-1} = x_0 + period), so the FNO is run on one period:
the lift is applied on all n nodes (grid features included), then the duplicate node n-1 is
dropped and there is NO zero padding, v (batch, C, n-1). Every layer sigma(K v + W v) then maps
(n-1)-periodic sequences to (n-1)-periodic sequences (K is a circular convolution of period
n-1, W and sigma are pointwise), i.e. commutes with cyclic shifts; the projection's output
(batch, m, n-1) is completed by u_{n-1} = u_0, so u_0 - u_{n-1} = 0 exactly. The input's node
n-1 is not read. periodic_layers="kernel" keeps the padded FNO with the corrected layers above.
"""

from __future__ import annotations

import torch
from torch import nn

from probcons.constraints.boundary_condition import BoundaryCondition
from probcons.errors import UsageError
from probcons.operators.fno import FNO1d, FourierLayer
from probcons.operators.spectral import SpectralConv1d

MAX_CONDITION = 1e10  # largest accepted 2-norm condition number of the boundary block matrix
# BoonFNO1d's layers for a periodic condition: the FNO on one period, or the padded FNO with
# kernel-corrected layers (the only path before "period" existed: the default for old checkpoints)
PERIODIC_LAYERS = ("period", "kernel")
LEGACY_PERIODIC_LAYERS = "kernel"


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


def _irfft_weights(kept: int, length: int, dtype) -> torch.Tensor:
    """w_k with irfft(X)[n] = (1 / P) sum_{k < kept} w_k Re(X_k e^{2 pi i k n / P}); (kept,)."""
    weights = torch.full((kept,), 2.0, dtype=dtype)
    weights[0] = 1.0
    if length % 2 == 0 and kept == length // 2 + 1:
        weights[-1] = 1.0  # Nyquist term counted once
    return weights / length


class CorrectedFourierLayer(nn.Module):
    """L_c v = K_c v + W v for one `FourierLayer` with a 1-D spectral convolution (see module doc).

    Cost per forward: the layer's own rfft and irfft, plus O(r C^2 modes) for M and the anchor
    terms (no impulse response, no extra application of K): the boundary rows of K v, the
    columns K Psi and the spectrum of Psi delta are evaluated on the retained modes only.
    """

    def __init__(
        self,
        layer: FourierLayer,
        condition: BoundaryCondition,
        max_condition: float = MAX_CONDITION,
        check: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(layer, FourierLayer) or not isinstance(layer.spectral, SpectralConv1d):
            raise UsageError(f"layer: expected a 1-D FourierLayer, got {type(layer).__name__}")
        if layer.spectral.in_channels != layer.spectral.out_channels:
            raise UsageError("layer: the correction needs as many output as input channels")
        if not isinstance(condition, BoundaryCondition):
            raise UsageError(
                f"condition: expected a BoundaryCondition, got {type(condition).__name__}"
            )
        self.layer = layer
        self.condition = condition
        self.max_condition = float(max_condition)
        self.check = bool(check)

    def modal_rows(self, n: int, length: int):
        """Rows R (r, P), anchors, pivots R[k, a_k] (r,), and on the kept modes k < K':
        rows_hat[k, j] = sum_n R[j, n] w_k e^{2 pi i k n / P} / P (R applied after irfft) and
        anchor_hat[j, k] = e^{-2 pi i k a_j / P} / R[j, a_j] (rfft of Psi's columns), float64.
        """
        key = (n, length)
        if getattr(self, "_modal_key", None) != key:
            self._modal_cache = self._modal_rows(n, length)
            self._modal_key = key
        return self._modal_cache

    def _modal_rows(self, n: int, length: int):
        """modal_rows without the cache (they depend on n, length and the condition only)."""
        rows, anchors = self.condition.rows(n, length)
        kept = min(self.layer.spectral.modes, length // 2 + 1)
        frequencies = torch.arange(kept, dtype=torch.float64)
        nodes = torch.arange(length, dtype=torch.float64)
        phase = torch.polar(
            torch.ones(kept, length, dtype=torch.float64),
            2 * torch.pi * frequencies[:, None] * nodes[None] / length,
        )
        rows_hat = (phase * _irfft_weights(kept, length, torch.float64)[:, None]) @ rows.T.to(
            phase.dtype
        )
        pivots = rows[torch.arange(len(anchors)), anchors]
        anchor_hat = phase[:, anchors].conj().T / pivots[:, None]
        return rows, anchors, pivots, rows_hat, anchor_hat

    def system(self, n: int, length: int):
        """Closed-form pieces for n physical nodes stored in `length`.

        Returns rows R (r, P), anchors, pivots (r,), rows_hat (K', r), anchor_hat (r, K'), the K
        part R K Psi and M = R K Psi + I_r (x) W, both (rC, rC) float64.
        """
        rows, anchors, pivots, rows_hat, anchor_hat = self.modal_rows(n, length)
        kept = rows_hat.shape[0]
        weight = _complex_weight(self.layer.spectral, kept).to(
            torch.complex128
        )  # (C_in, C_out, K')
        # R K Psi [(k, o), (j, c)] = Re sum_m W[c, o, m] anchor_hat[j, m] rows_hat[m, k]
        kernel_part = torch.einsum("com,jm,mk->kojc", weight, anchor_hat, rows_hat).real
        r, c = len(anchors), weight.shape[0]
        kernel_part = kernel_part.reshape(r * c, r * c)
        pointwise = self.layer.pointwise.weight[..., 0].to(torch.float64)
        matrix = kernel_part + torch.kron(torch.eye(r, dtype=torch.float64), pointwise)
        if self.check and not self.training:  # checked at evaluation; training skips the SVD
            check_conditioning(matrix, self.max_condition, "layer")
        return rows, anchors, pivots, rows_hat, anchor_hat, kernel_part, matrix

    def forward(self, v: torch.Tensor, n: int | None = None, strength: float = 1.0) -> torch.Tensor:
        """(batch, C, P) -> (batch, C, P); the physical nodes are the first n (default P).

        strength in [0, 1] scales the anchor shift, L (v + strength Psi delta): 1 is the exact
        correction, 0 the plain layer (a training warm-up ramps it from 0 to 1).
        """
        length = v.shape[-1]
        n = length if n is None else n
        rows, anchors, pivots, rows_hat, anchor_hat, kernel_part, matrix = self.system(n, length)
        batch, r, kept = v.shape[0], len(anchors), rows_hat.shape[0]
        complex_dtype = _complex(v)  # batch work in the model's precision, M solved in float64
        weight = _complex_weight(self.layer.spectral, kept).to(complex_dtype)
        coefficients = torch.fft.rfft(v, dim=-1)[..., :kept]
        spectrum = torch.einsum("bcm,com->bom", coefficients, weight)  # K v on the kept modes
        applied = torch.einsum("bom,mk->bko", spectrum, rows_hat.to(complex_dtype)).real  # R K v
        functional = torch.einsum("kn,bcn->bkc", rows.to(v.dtype), v)  # R v
        rhs = functional.reshape(batch, -1).to(torch.float64) @ kernel_part.T - applied.reshape(
            batch, -1
        ).to(torch.float64)
        delta = torch.linalg.solve(matrix, rhs.T).T.reshape(batch, r, -1).to(v.dtype)
        if strength != 1.0:
            delta = strength * delta
        shift = torch.einsum("bjc,jm->bcm", delta.to(complex_dtype), anchor_hat.to(complex_dtype))
        spectrum = spectrum + torch.einsum("bcm,com->bom", shift, weight)  # K (v + Psi delta)
        full = spectrum.new_zeros(batch, spectrum.shape[1], length // 2 + 1)
        full[..., :kept] = spectrum
        kz = torch.fft.irfft(full, n=length, dim=-1)
        anchor_values = delta / pivots.to(v.dtype)[None, :, None]  # (batch, r, C)
        z = v.index_add(-1, torch.tensor(anchors), anchor_values.transpose(1, 2))
        return kz + self.layer.pointwise(z)


def _complex(v: torch.Tensor) -> torch.dtype:
    return torch.complex128 if v.dtype == torch.float64 else torch.complex64


def _complex_weight(spectral: SpectralConv1d, kept: int) -> torch.Tensor:
    """The spectral weights on the kept modes, complex (C_in, C_out, K')."""
    return torch.view_as_complex(spectral.weight)[..., :kept]


class BoonFNO1d(nn.Module):
    """Boundary-corrected FNO: every Fourier layer of `operator` corrected, output made exact.

    forward(a, data): a (batch, in_channels, n), data (batch, out_channels, r) boundary values
    (Dirichlet values / Neumann derivatives, per side; None for periodic or zero data) ->
    u (batch, out_channels, n) with condition.residual(u, data) = 0 up to round-off.
    correct_layers=False keeps the layers as they are (only the final boundary solve: the
    overwrite-only ablation, which isolates what the kernel correction adds).
    periodic_layers (periodic conditions with correct_layers only): "period" runs the operator on
    the n - 1 nodes of one period without padding and appends u_{n-1} = u_0 (every layer maps
    periodic sequences to periodic ones, so the model commutes with cyclic shifts of a[..., :n-1]
    when coordinates="none"); "kernel" the padded operator with kernel-corrected layers.
    """

    def __init__(
        self,
        operator: FNO1d,
        condition: BoundaryCondition,
        max_condition: float = MAX_CONDITION,
        check_conditioning: bool = True,
        correct_layers: bool = True,
        periodic_layers: str = "period",
    ) -> None:
        super().__init__()
        if not isinstance(operator, FNO1d):
            raise UsageError(f"operator: expected an FNO1d, got {type(operator).__name__}")
        if not isinstance(periodic_layers, str) or periodic_layers not in PERIODIC_LAYERS:
            raise UsageError(
                f"periodic_layers: expected one of {PERIODIC_LAYERS}, got {periodic_layers!r}"
            )
        self.operator = operator
        self.condition = condition
        self.corrected = nn.ModuleList(
            CorrectedFourierLayer(layer, condition, max_condition, check_conditioning)
            for layer in operator.layers
        )
        self.correct_layers = bool(correct_layers)
        self.periodic_layers = periodic_layers
        self.correction_strength = 1.0  # < 1 only during a training warm-up of the correction

    @property
    def on_period(self) -> bool:
        """Whether the layers run on one period (periodic condition, periodic_layers="period")."""
        return (
            self.correct_layers
            and self.condition.kind == "periodic"
            and self.periodic_layers == "period"
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
                "correct_layers": self.correct_layers,
                "periodic_layers": self.periodic_layers,
            },
        }

    @classmethod
    def from_hyperparameters(cls, operator: FNO1d, boundary: dict, **options) -> BoonFNO1d:
        """The BOON around `operator` described by hyperparameters["boundary"] (as saved in a
        checkpoint's extra["boundary"]); a dict without "periodic_layers" (saved before that
        option existed) gives the kernel-corrected periodic layers it was trained with."""
        condition = BoundaryCondition(
            boundary["kind"], tuple(boundary["sides"]), boundary["step"], boundary["order"]
        )
        return cls(
            operator,
            condition,
            correct_layers=boundary.get("correct_layers", True),
            periodic_layers=boundary.get("periodic_layers", LEGACY_PERIODIC_LAYERS),
            **options,
        )

    def features(self, a: torch.Tensor) -> torch.Tensor:
        """Output before the final boundary solve, (batch, out_channels, n)."""
        self.operator._check_input(a)
        n = a.shape[-1]
        if n < self.condition.minimum_nodes():
            raise UsageError(
                f"a: expected at least {self.condition.minimum_nodes()} nodes, got {n}"
            )
        if self.on_period:
            return self._features_on_period(a)
        v = self.operator.lift_input(a)
        for index, layer in enumerate(self.corrected):
            v = layer(v, n, self.correction_strength) if self.correct_layers else layer.layer(v)
            if index < len(self.corrected) - 1:
                v = self.operator.activation(v)
        return self.operator.project(v, (n,))

    def _features_on_period(self, a: torch.Tensor) -> torch.Tensor:
        """The operator on nodes 0..n-2 (one period, no padding), node n-1 a copy of node 0."""
        n = a.shape[-1]
        # pointwise lift (grid features of the n-node grid), then keep nodes 0..n-2: the
        # padding appended after node n-1 goes with it
        v = self.operator.lift_input(a)[..., : n - 1]
        u = self.operator.project(self.operator.fourier_layers(v), (n - 1,))
        return torch.cat([u, u[..., :1]], dim=-1)

    def forward(self, a: torch.Tensor, data=None) -> torch.Tensor:
        return self.condition.enforce(self.features(a), data)
