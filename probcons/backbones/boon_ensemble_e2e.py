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

Calibration of the conditioned predictive: with Sigma = c (s I + F F^T) and exact rows
(sigma_G = 0), S = c S_1, so mu~ = mu + Sigma G^T S^-1 (b - G mu) does not depend on c and
Sigma~ = c (Sigma_1 - Sigma_1 G^T S_1^-1 G Sigma_1) is c times the c = 1 one;
`calibrate_covariance_scale` sets c to the maximiser of the held-out log-likelihood of the
conditioned marginals, sum log N(y | mu~, c v~_1) (`fit_variance_scale`).

The recipe of the shipped heat ensembles and of `benchmarks/boon.py --e2e` (`HeatRecipe`: data,
member and fine-tuning configurations) and `train_heat_ensemble`, which `probcons train
heat-neumann --backbone boon-ensemble` runs: members (the first with the main configuration, the
others with the member one), s calibrated on the validation set, for constrained-* the joint
fine-tuning through the update, then c; every stage checkpointed in a run folder and resumed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

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
    train_model,
)
from probcons.conditioning import conditioned_moments
from probcons.constraints import LinearConstraint
from probcons.covariance import LowRankCovariance
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction
from probcons.problems.operators import OperatorData, OperatorProblem, make_problem
from probcons.training.calibration import fit_variance_scale
from probcons.training.constrained import VARIANCE_FLOOR, mixture_crps
from probcons.training.trainer import Z_90
from probcons.validation import check_choice, check_positive_int

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
    members: torch.Tensor,
    noise_variance: torch.Tensor | float,
    rows: HeatRows,
    covariance_scale: float = 1.0,
) -> ConditionedMarginals:
    """Exact conditioning of the ensemble Gaussian on G u = b (module docstring), differentiable.

    members (E, n, N) or (E, n, m, n_x) float64 (E >= 2), noise_variance s > 0 (scalar),
    rows: G (n, k, N), b (n, k); covariance_scale c > 0 multiplies both variances (the
    conditioned mean does not depend on it). Returns marginals on the flattened grid (n, N).
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
    prior_variance = covariance_scale * (s + factor.square().sum(0))
    variance = (covariance_scale * torch.stack(variances)).clamp(min=VARIANCE_FLOOR)
    return ConditionedMarginals(mean, prior_variance, torch.stack(means), variance)


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

    def state_dict(self) -> dict:
        return {**super().state_dict(), "best_state": self.best_state}

    def extra(self, model, step) -> dict:
        return {"validation": list(self.history), "best_epoch": self.best_epoch}

    def load(self, state: dict, extra: dict) -> None:
        super().load(state, extra)
        self.best_state = state.get("best_state")
        self.history = list(extra.get("validation", []))
        self.best_epoch = int(extra.get("best_epoch", -1))

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
    progress: bool = False,
) -> tuple[BoonEnsemble, dict]:
    """A new BoonEnsemble: `ensemble`'s members fine-tuned jointly on the conditioned score
    (`EnsembleTask`, `config`'s epochs, batch size and learning rate), starting from its members
    and its noise variance (calibrate it first), with c = 1 (fit c afterwards). With
    `validation`, the best epoch's weights (possibly the start, epoch -1). checkpoint: the
    engine's file, written every epoch and continued from when it exists; progress: tqdm bar.
    Returns (ensemble, log: validation history, best epoch, s, seconds)."""
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
        task,
        seed,
        checkpoint,
        resume=True,
        checkpoint_every=task.steps_per_epoch,
        progress=progress,
        desc=f"fine-tuning ({objective})",
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


def ensemble_marginals(
    ensemble: BoonEnsemble, data: OperatorData, covariance_scale: float | None = None
) -> ConditionedMarginals:
    """`conditioned_marginals` of `ensemble` on `data` (no gradients), with the ensemble's
    covariance scale c unless `covariance_scale` is given."""
    scale = ensemble.covariance_scale if covariance_scale is None else covariance_scale
    with torch.no_grad():
        members = ensemble.member_predictions(data)
        return conditioned_marginals(
            members, ensemble.noise_variance, heat_rows(ensemble.problem, data), scale
        )


def fit_covariance_scale(marginals: ConditionedMarginals, truth: torch.Tensor) -> float:
    """argmax_c sum log N(truth | mu~, c v~) over every point of every sample, where mu~, v~ are
    `marginals` computed with c = 1 (`fit_variance_scale` with one latent sample)."""
    truth = truth.flatten(1).to(torch.float64)
    return fit_variance_scale(marginals.mean[None], marginals.variance.sqrt()[None], truth)


def calibrate_covariance_scale(ensemble: BoonEnsemble, data: OperatorData) -> float:
    """Set ensemble.covariance_scale to the maximiser of the held-out log-likelihood of the
    conditioned marginals on `data` (`fit_covariance_scale`); returns it."""
    ensemble.covariance_scale = fit_covariance_scale(
        ensemble_marginals(ensemble, data, covariance_scale=1.0), data.targets
    )
    return ensemble.covariance_scale


# -- the recipe of the shipped heat ensembles ---------------------------------------------------

HEAT_OBJECTIVES = ("posthoc", "constrained-nll", "constrained-crps")
"""How `train_heat_ensemble` trains: members alone (the update applied post hoc), or fine-tuned
through the exact update on the conditioned NLL or CRPS (E2E_OBJECTIVES)."""
HEAT_PROBLEM = "heat-neumann"
"""The one problem with rows the joint fine-tuning knows (`heat_rows`)."""


def boon_config(epochs: int) -> TrainingConfig:
    """TrainingConfig's defaults with `epochs` epochs and four learning-rate decays."""
    return replace(TrainingConfig(), epochs=epochs, decay_every=max(1, epochs // 4))


def fine_tune_config(
    member_config: TrainingConfig, epochs: int, learning_rate: float, batch_size: int
) -> TrainingConfig:
    """The members' configuration for the joint fine-tuning: `epochs` epochs (one decay half
    way), no weight decay and BOON's exact correction from the first step (as `EnsembleTask`
    and `fine_tune` train; recorded as run)."""
    return replace(
        member_config,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        decay_every=max(1, epochs // 2),
        weight_decay=0.0,
        correction_warmup=0.0,
    )


@dataclass(frozen=True)
class HeatRecipe:
    """Data and training sizes of the heat ensemble (defaults: the shipped checkpoints and
    `benchmarks/boon.py --e2e`).

    Data: seed s draws train (n_train), test (n_test) and validation (n_validation) samples in
    that order from one generator seeded with s, on n_x nodes. Members: member 0 trained for
    `epochs` epochs with seed s, member e > 0 for `member_epochs` with seed s + e. Fine-tuning:
    `fine_tune_epochs` epochs, learning rate and batch size as given, seed s.
    """

    members: int = 3
    seed: int = 0
    n_train: int = 200
    n_test: int = 100
    n_validation: int = 50
    n_x: int = 65
    epochs: int = 120
    member_epochs: int = 50
    fine_tune_epochs: int = 40
    fine_tune_learning_rate: float = 1e-4
    fine_tune_batch_size: int = 20

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "epochs", "member_epochs", "fine_tune_epochs"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.fine_tune_batch_size, "fine_tune_batch_size")
        if check_positive_int(self.members, "members") < 2:
            raise UsageError(f"members: expected at least 2 ensemble members, got {self.members}")
        if check_positive_int(self.n_validation, "n_validation") < 2:
            raise UsageError(f"n_validation: expected at least 2, got {self.n_validation}")
        if check_positive_int(self.n_x, "n_x") < 5:
            raise UsageError(f"n_x: expected at least 5 nodes, got {self.n_x}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"seed: expected an integer >= 0, got {self.seed!r}")
        rate = self.fine_tune_learning_rate
        if not isinstance(rate, int | float) or not math.isfinite(rate) or not rate > 0:
            raise UsageError(f"fine_tune_learning_rate: expected a number > 0, got {rate!r}")

    @property
    def config(self) -> TrainingConfig:
        """Member 0's configuration."""
        return boon_config(self.epochs)

    @property
    def member_config(self) -> TrainingConfig:
        """Members 1 .. E - 1's configuration."""
        return boon_config(self.member_epochs)

    @property
    def fine_tune_config(self) -> TrainingConfig:
        return fine_tune_config(
            self.member_config,
            self.fine_tune_epochs,
            self.fine_tune_learning_rate,
            self.fine_tune_batch_size,
        )

    def data(self) -> tuple[OperatorProblem, OperatorData, OperatorData, OperatorData]:
        """(problem, train, test, validation), drawn in the order of the class docstring."""
        problem = make_problem(HEAT_PROBLEM, n_x=self.n_x)
        generator = torch.Generator().manual_seed(self.seed)
        train = problem.generate(self.n_train, generator)
        test = problem.generate(self.n_test, generator)
        validation = problem.generate(self.n_validation, generator)
        return problem, train, test, validation


def train_heat_members(
    recipe: HeatRecipe,
    problem: OperatorProblem,
    train: OperatorData,
    directory: str | Path | None = None,
    progress: bool = False,
) -> tuple[BoonEnsemble, float]:
    """The recipe's members (c = 1, s the floor: calibrate next) and their summed training
    seconds; with `directory`, member e's engine checkpoint is directory/member-e.pt."""
    models, seconds = [], 0.0
    for e in range(recipe.members):
        config = recipe.config if e == 0 else recipe.member_config
        checkpoint = None if directory is None else Path(directory) / f"member-{e}.pt"
        model, spent = train_model(
            "boon",
            problem,
            train,
            config,
            recipe.seed + e,
            checkpoint=checkpoint,
            progress=progress,
            desc=f"member {e}",
        )
        models.append(model)
        seconds += spent
    return BoonEnsemble(models, "boon", problem), seconds


def validation_scores(ensemble: BoonEnsemble, data: OperatorData) -> dict[str, dict]:
    """`marginal_scores` of the ensemble (its own c) on held-out `data`."""
    return marginal_scores(ensemble_marginals(ensemble, data), data.targets)


def train_heat_ensemble(
    recipe: HeatRecipe,
    objective: str = "posthoc",
    directory: str | Path | None = None,
    fit_scale: bool = True,
    progress: bool = False,
) -> BoonEnsemble:
    """Train the heat ensemble of `recipe` with `objective` (HEAT_OBJECTIVES): members
    (`train_heat_members`), s calibrated on the validation set, for constrained-nll / -crps the
    joint fine-tuning (`fine_tune`, best validation epoch), then (fit_scale) c
    (`calibrate_covariance_scale`). directory: engine checkpoints of every stage (member-e.pt,
    fine-tune.pt), continued from where they stopped. The ensemble's `training` records the
    recipe, configurations, objective, validation history and scores, and seconds."""
    check_choice(objective, "objective", HEAT_OBJECTIVES)
    started = time.perf_counter()
    problem, train, _, validation = recipe.data()
    ensemble, members_s = train_heat_members(recipe, problem, train, directory, progress)
    ensemble.calibrate(validation)
    record: dict[str, Any] = {
        "objective": objective,
        "recipe": asdict(recipe),
        "config": config_dict(recipe.config),
        "member_config": config_dict(recipe.member_config),
        "members_s": members_s,
        "noise_variance_posthoc": ensemble.noise_variance,
    }
    if objective != "posthoc":
        checkpoint = None if directory is None else Path(directory) / "fine-tune.pt"
        score = objective.removeprefix("constrained-")
        ensemble, log = fine_tune(
            ensemble,
            train,
            recipe.fine_tune_config,
            score,
            recipe.seed,
            validation,
            checkpoint=checkpoint,
            progress=progress,
        )
        record["fine_tune_config"] = config_dict(recipe.fine_tune_config)
        record["fine_tune"] = log
    record["validation_scores"] = validation_scores(ensemble, validation)
    if fit_scale:
        calibrate_covariance_scale(ensemble, validation)
        record["validation_scores_calibrated"] = validation_scores(ensemble, validation)
    record["covariance_scale"] = ensemble.covariance_scale
    record["seconds"] = time.perf_counter() - started
    ensemble.training = record
    return ensemble


__all__ = [
    "E2E_OBJECTIVES",
    "HEAT_OBJECTIVES",
    "EnsembleTask",
    "HeatRecipe",
    "HeatRows",
    "JointEnsemble",
    "boon_config",
    "calibrate_covariance_scale",
    "conditioned_marginals",
    "ensemble_loss",
    "ensemble_marginals",
    "fine_tune",
    "fine_tune_config",
    "fit_covariance_scale",
    "gaussian_crps",
    "gaussian_nll",
    "heat_rows",
    "marginal_scores",
    "train_heat_ensemble",
    "train_heat_members",
]
