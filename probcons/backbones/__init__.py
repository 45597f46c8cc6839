"""Backbones: probabilistic surrogates that return a GaussianPrediction (or a mixture of them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from probcons.errors import UsageError

if TYPE_CHECKING:
    import torch

    from probcons.grid import Grid
    from probcons.posterior import Posterior
    from probcons.problems import Contexts, Problem


@runtime_checkable
class Backbone(Protocol):
    """A GPME backbone (every class `get_backbone` returns): a name and
    `predict(problem, parameter, contexts, grid, generator) -> Posterior` on `grid` (n_t, n_x).

    The BOON ensemble (`probcons.backbones.boon_ensemble.BoonEnsemble`) is an operator
    backbone: `predict(data: OperatorData) -> list[Posterior]`, one per sample on its fixed
    (times, x) grid, so it does not satisfy this signature, although `isinstance` (which sees
    member names only) cannot tell; both meet at `Posterior`.
    """

    name: str

    def predict(
        self,
        problem: Problem,
        parameter: float,
        contexts: Contexts,
        grid: Grid,
        generator: torch.Generator | None = None,
    ) -> Posterior: ...


BACKBONES = {
    "gp": "GPyTorch exact GP on (t, x), fitted per function to its contexts",
    "anp": "attentive neural process (Pyro), meta-trained across the PDE parameter",
    "ensemble": "deep ensemble of heteroscedastic MLPs on (t, x, parameter); low-rank covariance",
    "fno-ensemble": "ensemble of FNOs from the parameter on the (t, x) grid; low-rank covariance",
}


def get_backbone(name: str, **options):
    """A backbone by name; `options` go to its constructor."""
    if name == "gp":
        from probcons.backbones.gp import GPBackbone

        return GPBackbone(**options)
    if name == "anp":
        from probcons.backbones.anp import load_anp_backbone

        return load_anp_backbone(**options)
    if name in ("ensemble", "fno-ensemble"):
        from probcons.backbones.member_training import load_ensemble_backbone

        return load_ensemble_backbone(name, **options)
    raise UsageError(f"backbone: expected one of {', '.join(BACKBONES)}, got {name!r}")
