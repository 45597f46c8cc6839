"""Backbones: probabilistic surrogates that return a GaussianPrediction (or a mixture of them)."""

from __future__ import annotations

from probcons.errors import UsageError

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
