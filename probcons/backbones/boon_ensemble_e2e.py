"""The BOON heat ensemble trained through the constraint: members fine-tuned jointly.

For one input a the E members give u_e (N = m n_x values each, BOON's exact boundary correction
inside every member). The ensemble's Gaussian is `BoonEnsemble`'s,

    mu = (1/E) sum_e u_e,   Sigma = s I + F F^T,   F = [u_e - mu]_e / sqrt(E - 1)   (N, E),

and the heat problem's rows G u = b (`heat_constraints`: one mass row and two Neumann rows per
output time, k = 3 m rows, exact) condition it by the library's exact update
(`probcons.conditioning.conditioned_moments` on the LowRankCovariance, float64, differentiable):

    mu~ = mu + Sigma G^T S^-1 (b - G mu),   v~ = diag(Sigma - Sigma G^T S^-1 G Sigma),
    S = G Sigma G^T = s G G^T + (G F)(G F)^T   (k, k).

The objective scores the truth y under the conditioned marginals N(mu~, v~), pointwise, averaged
over the N points and the samples: "nll" 0.5 (log 2 pi v~ + (y - mu~)^2 / v~), or "crps" the
Gaussian CRPS in closed form. All E members get one gradient through the coupling F F^T; the
noise variance s = exp(log_s) is trained too (initialised at its held-out calibration) unless
frozen. `EnsembleTask` runs it on the training engine (mini-batches, step decay, gradient clip,
checkpoints and resume from `OperatorTask`); `fine_tune` starts from trained members.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

import probcons.training.engine as engine
from probcons import distributed
from probcons.backbones.boon_ensemble import BoonEnsemble, heat_constraints
from probcons.boon.training import (
    OperatorTask,
    TrainingConfig,
    config_dict,
    input_channels,
    model_inputs,
)
from probcons.conditioning import conditioned_moments
from probcons.constraints import LinearConstraint
from probcons.covariance import LowRankCovariance
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction
from probcons.problems.operators import OperatorData, OperatorProblem
from probcons.training.constrained import VARIANCE_FLOOR, mixture_crps
from probcons.training.trainer import Z_90
from probcons.validation import check_choice

E2E_OBJECTIVES = ("nll", "crps")
"""Scores of the conditioned marginals the fine-tuning minimises."""


class HeatRows(NamedTuple):
    """Dense rows of the heat problem per sample: matrix (n, k, N), values (n, k) float64."""

    matrix: torch.Tensor
    values: torch.Tensor


def heat_rows(problem: OperatorProblem, data: OperatorData) -> HeatRows:
    """[conservation; Neumann] of every sample of `data` (`heat_constraints`), dense."""
    if problem.name != "heat-neumann":
        raise UsageError(f"problem: expected the heat-neumann problem, got {problem.name!r}")
    if data.parameters is None or data.boundary is None:
        raise UsageError("data: expected parameters and boundary data for the heat rows")
    matrices, values = [], []
    for index in range(len(data)):
        conservation, neumann = heat_constraints(problem, data, index)
        stacked = conservation.stack(neumann)
        matrices.append(stacked.to_dense())
        values.append(stacked.values.reshape(-1))
    return HeatRows(torch.stack(matrices), torch.stack(values))


class ConditionedMarginals(NamedTuple):
    """Per sample (n, N) float64: prior mean and variance, conditioned mean and variance."""

    prior_mean: torch.Tensor
    prior_variance: torch.Tensor
    mean: torch.Tensor
    variance: torch.Tensor


def conditioned_marginals(
    members: torch.Tensor, noise_variance: torch.Tensor | float, rows: HeatRows
) -> ConditionedMarginals:
    """Exact conditioning of the ensemble Gaussian on G u = b (module docstring), differentiable.

    members (E, n, N) or (E, n, m, n_x) float64 (E >= 2), noise_variance s > 0 (scalar),
    rows: G (n, k, N), b (n, k). Returns marginals on the flattened grid (n, N).
    """
    if members.dim() < 3 or members.shape[0] < 2:
        raise UsageError(f"members: expected (E >= 2, n, ...), got {tuple(members.shape)}")
    members = members.flatten(2).to(torch.float64)
    n_members, n, size = members.shape
    if rows.matrix.shape[0] != n or rows.matrix.shape[2] != size:
        raise UsageError(
            f"rows: expected matrices (n={n}, k, N={size}), got {tuple(rows.matrix.shape)}"
        )
    s = torch.as_tensor(noise_variance, dtype=torch.float64)
    if not bool(s > 0):
        raise UsageError(f"noise_variance: expected a variance > 0, got {float(s)!r}")
    mean = members.mean(0)
    factor = (members - mean) / math.sqrt(n_members - 1)  # (E, n, N)
    grid = Grid.index(1, size)
    exact = torch.zeros(rows.values.shape[1], dtype=torch.float64)[None]
    means, variances = [], []
    for sample in range(n):  # the library's exact update, one sample's Gaussian at a time
        covariance = LowRankCovariance(s.expand(size), factor[:, sample].T)
        prior = GaussianPrediction(mean[sample][None], covariance, grid)
        rows_of_sample = LinearConstraint(
            rows.matrix[sample][None].to(torch.float64),
            rows.values[sample][None].to(torch.float64),
            exact,
        )
        conditioned_mean, conditioned_covariance = conditioned_moments(prior, rows_of_sample)
        means.append(conditioned_mean.reshape(-1))
        variances.append(conditioned_covariance.diagonal())
    prior_variance = s + factor.square().sum(0)
    return ConditionedMarginals(
        mean, prior_variance, torch.stack(means), torch.stack(variances).clamp(min=VARIANCE_FLOOR)
    )


def gaussian_nll(mean: torch.Tensor, variance: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """0.5 (log 2 pi v + (y - mu)^2 / v), pointwise (v raised to VARIANCE_FLOOR)."""
    variance = variance.clamp(min=VARIANCE_FLOOR)
    return 0.5 * (torch.log(2 * math.pi * variance) + (truth - mean).square() / variance)


def gaussian_crps(mean: torch.Tensor, variance: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """CRPS of N(mu, v) at y, pointwise: sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))."""
    return mixture_crps(mean[None], variance[None], truth)


def marginal_scores(marginals: ConditionedMarginals, truth: torch.Tensor) -> dict[str, dict]:
    """rel. L2 of the mean, NLL, CRPS (means over points) and 90 % coverage, before ("prior")
    and after ("conditioned") conditioning; truth (n, N) or (n, m, n_x)."""
    truth = truth.flatten(1).to(torch.float64)
    out = {}
    for key, mean, variance in (
        ("prior", marginals.prior_mean, marginals.prior_variance),
        ("conditioned", marginals.mean, marginals.variance),
    ):
        error = (mean - truth).norm(dim=1) / truth.norm(dim=1)
        inside = (truth - mean).abs() <= Z_90 * variance.sqrt()
        out[key] = {
            "rel_l2": float(error.mean()),
            "nll": float(gaussian_nll(mean, variance, truth).mean()),
            "crps": float(gaussian_crps(mean, variance, truth).mean()),
            "coverage90": float(inside.double().mean()),
        }
    return out


class JointEnsemble(nn.Module):
    """E BOON members and log s as one module; forward gives the members' outputs (E, b, m, n_x)."""

    def __init__(self, members: list[nn.Module], noise_variance: float, train_noise: bool = True):
        super().__init__()
        if len(members) < 2:
            raise UsageError(f"members: expected at least 2 ensemble members, got {len(members)}")
        if not noise_variance > 0:
            raise UsageError(f"noise_variance: expected a variance > 0, got {noise_variance!r}")
        self.members = nn.ModuleList(members)
        log_s = torch.tensor(math.log(noise_variance), dtype=torch.float64)
        self.log_noise_variance = nn.Parameter(log_s, requires_grad=train_noise)

    @property
    def noise_variance(self) -> torch.Tensor:
        return self.log_noise_variance.exp()

    def forward(self, inputs: torch.Tensor, boundary: torch.Tensor) -> torch.Tensor:
        outputs = []
        for member in self.members:
            dtype = next(member.parameters()).dtype
            outputs.append(member(inputs.to(dtype), boundary.to(dtype)).to(torch.float64))
        return torch.stack(outputs)


def ensemble_loss(
    network: nn.Module,
    inputs: torch.Tensor,
    boundary: torch.Tensor,
    rows: HeatRows,
    truth: torch.Tensor,
    objective: str = "nll",
) -> torch.Tensor:
    """Per-sample loss (b,): the conditioned marginals' mean NLL or CRPS of `truth` (b, m, n_x)."""
    check_choice(objective, "objective", E2E_OBJECTIVES)
    members = network(inputs, boundary)
    model = distributed.unwrap(network)
    marginals = conditioned_marginals(members, model.noise_variance, rows)
    score = gaussian_nll if objective == "nll" else gaussian_crps
    return score(marginals.mean, marginals.variance, truth.flatten(1).to(torch.float64)).mean(1)


class EnsembleTask(OperatorTask):
    """Joint fine-tuning of a BOON ensemble on the conditioned score (`ensemble_loss`), as an
    `OperatorTask` (epochs of shuffled mini-batches, step decay, gradient clip, checkpoints).

    validation: held-out data; after each epoch the conditioned score on it is computed and the
    best weights (the start included, `initial_validation`) are kept in `best_state`.
    """

    def __init__(
        self,
        members: list[nn.Module],
        problem: OperatorProblem,
        train: OperatorData,
        config: TrainingConfig,
        noise_variance: float,
        objective: str = "nll",
        seed: int = 0,
        validation: OperatorData | None = None,
        train_noise: bool = True,
    ):
        check_choice(objective, "objective", E2E_OBJECTIVES)
        super().__init__(config, len(train), seed)
        self.weight_decay = 0.0  # fine-tuning: no pull of the trained weights (or log s) to 0
        self.initial = [copy.deepcopy(m) for m in members]
        self.problem, self.data, self.objective = problem, train, objective
        self.noise_variance, self.train_noise = noise_variance, train_noise
        channels = input_channels(members[0])
        self.inputs = model_inputs("boon", train, channels)
        self.boundary = train.boundary
        self.rows = heat_rows(problem, train)
        self.validation = validation
        if validation is not None:
            self.validation_inputs = model_inputs("boon", validation, channels)
            self.validation_rows = heat_rows(problem, validation)
        self.history: list[float] = []
        self.best_state: dict | None = None
        self.best_epoch = -1

    def build(self) -> nn.Module:
        members = [copy.deepcopy(m) for m in self.initial]
        for member in members:
            member.correction_strength = 1.0  # BOON's exact correction throughout
        model = JointEnsemble(members, self.noise_variance, self.train_noise)
        if self.validation is not None:
            self.history = [self.validation_score(model)]
            self.best_state = copy.deepcopy(model.state_dict())
        return model

    def hyperparameters(self) -> dict:
        return {
            "task": "boon-ensemble-e2e",
            "problem": self.problem.name,
            "members": len(self.initial),
            "objective": self.objective,
            "config": config_dict(self.config),
            "train_noise": self.train_noise,
        }

    def batch_loss(self, network, step, index):
        return ensemble_loss(
            network,
            self.inputs[index],
            self.boundary[index],
            HeatRows(self.rows.matrix[index], self.rows.values[index]),
            self.data.targets[index],
            self.objective,
        )

    @torch.no_grad()
    def validation_score(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        loss = ensemble_loss(
            model,
            self.validation_inputs,
            self.validation.boundary,
            self.validation_rows,
            self.validation.targets,
            self.objective,
        )
        model.train(was_training)
        return float(loss.mean())

    def end_epoch(self, model, epoch, logs):
        if self.validation is None:
            return None
        score = self.validation_score(model)
        self.history.append(score)
        if score <= min(self.history[:-1]):
            self.best_state = copy.deepcopy(model.state_dict())
            self.best_epoch = epoch
        return {"val": f"{score:.4g}"}


def fine_tune(
    ensemble: BoonEnsemble,
    train: OperatorData,
    config: TrainingConfig,
    objective: str = "nll",
    seed: int = 0,
    validation: OperatorData | None = None,
    train_noise: bool = True,
    checkpoint: str | Path | None = None,
) -> tuple[BoonEnsemble, dict]:
    """A new BoonEnsemble: `ensemble`'s members fine-tuned jointly on the conditioned score
    (`EnsembleTask`, `config`'s epochs, batch size and learning rate), starting from its members
    and its noise variance (calibrate it first). With `validation`, the best epoch's weights
    (possibly the start, epoch -1). Returns (ensemble, log: validation history, best epoch, s,
    seconds)."""
    if ensemble.kind != "boon":
        raise UsageError(f"ensemble: expected an ensemble of BOON members, got {ensemble.kind!r}")
    config = replace(config, correction_warmup=0.0)
    task = EnsembleTask(
        ensemble.models,
        ensemble.problem,
        train,
        config,
        ensemble.noise_variance,
        objective,
        seed,
        validation,
        train_noise,
    )
    model, _, clock = engine.train(
        task, seed, checkpoint, resume=True, checkpoint_every=task.steps_per_epoch
    )
    if task.best_state is not None:
        model.load_state_dict(task.best_state)
    model.eval()
    tuned = BoonEnsemble(
        list(model.members), "boon", ensemble.problem, float(model.noise_variance.detach())
    )
    log = {
        "validation": task.history,
        "best_epoch": task.best_epoch,
        "noise_variance": tuned.noise_variance,
        "seconds": clock.seconds,
    }
    return tuned, log


def ensemble_marginals(ensemble: BoonEnsemble, data: OperatorData) -> ConditionedMarginals:
    """`conditioned_marginals` of `ensemble` on `data` (no gradients)."""
    with torch.no_grad():
        members = ensemble.member_predictions(data)
        return conditioned_marginals(
            members, ensemble.noise_variance, heat_rows(ensemble.problem, data)
        )


__all__ = [
    "E2E_OBJECTIVES",
    "EnsembleTask",
    "HeatRows",
    "JointEnsemble",
    "conditioned_marginals",
    "ensemble_loss",
    "ensemble_marginals",
    "fine_tune",
    "gaussian_crps",
    "gaussian_nll",
    "heat_rows",
    "marginal_scores",
]
