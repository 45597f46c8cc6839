"""Names the command line needs before any heavy import (checked against the registries in
tests/cli/test_cli.py): problems, methods and the backbones `probcons train` and `run` accept."""

from __future__ import annotations

GPME_PROBLEMS = ("diffusion", "pme", "stefan")
"""probcons.problems.PROBLEMS: GPME problems, solved by `probcons run` with a backbone and methods."""
OPERATOR_PROBLEMS = (
    "heat-neumann",
    "stokes",
    "burgers-dirichlet",
    "burgers-periodic",
    "wave",
    "cavity",
    "wave2d",
)
"""probcons.boon OPERATOR_PROBLEMS and OPERATOR_PROBLEMS_2D: BOON problems, trained by `run`."""
METHODS = ("unconstrained", "hardc", "probconserv")
"""probcons.runner.METHODS."""
OPERATOR_BACKBONES = ("fno", "fno-bc", "boon-fno", "boon-ensemble")
"""probcons.operator_runner.BACKBONES: trained and evaluated by `probcons run` on BOON problems."""
ANP_BACKBONES = ("anp",)
"""probcons.training.command.BACKBONES: `probcons train` with the ANP's flags."""
ENSEMBLE_BACKBONES = ("ensemble", "fno-ensemble")
"""probcons.backbones.member_training.BACKBONE_KINDS: `probcons train` with the members' flags."""
TRAINABLE_BACKBONES = ANP_BACKBONES + ENSEMBLE_BACKBONES
"""The --backbone choices of `probcons train`'s ANP flags (the ensembles routed to theirs)."""
OPERATOR_TRAINABLE_BACKBONES = ("boon-ensemble",)
"""Operator backbones `probcons train` also trains, with their own flags (probcons.cli.train)."""
ENSEMBLE_COVARIANCES = ("sample", "marginal")
"""probcons.backbones.boon_ensemble2d.COVARIANCES: `probcons run cavity|wave2d
--ensemble-covariance`."""
BOON_TRAIN_PROBLEMS = ("heat-neumann",)
"""probcons.backbones.boon_ensemble_e2e.HEAT_PROBLEM: what `probcons train --backbone
boon-ensemble` trains on."""

__all__ = [
    "ANP_BACKBONES",
    "BOON_TRAIN_PROBLEMS",
    "ENSEMBLE_BACKBONES",
    "ENSEMBLE_COVARIANCES",
    "GPME_PROBLEMS",
    "METHODS",
    "OPERATOR_BACKBONES",
    "OPERATOR_PROBLEMS",
    "OPERATOR_TRAINABLE_BACKBONES",
    "TRAINABLE_BACKBONES",
]
