"""Deep-ensemble backbone: M heteroscedastic MLPs on (t, x, parameter) -> (mean, variance).

Each member m maps the scaled inputs (t, x, p) in [-1, 1]^3 (p scaled by the training range) to
a mean mu_m and a variance s2_m = softplus(raw) + min_variance, trained on the Gaussian NLL

    loss = mean over points of  w (log s2_m + (u - mu_m)^2 / s2_m) / 2,  w = stopgrad(s2_m^beta)

of exact solutions at random (t, x) for random training parameters (beta = 0: the Gaussian NLL;
the default beta = 1/2, the beta-NLL, keeps the mean fitting where the variance is large). The
members differ only in their initial weights and batches. On a grid the ensemble predicts the
Gaussian (see `ensemble_prediction`)

    mean  = (1/M) sum_m mu_m,
    Sigma = diag((1/M) sum_m s2_m) + F F^T,   F = [mu_1 - mean, ..., mu_M - mean] / sqrt(M - ddof),

a LowRankCovariance of rank M (at most M - 1 independent columns). With the default ddof = 0 the
marginal variance is that of the equal-weight mixture of the members' Gaussians (the law of
total variance, as in Lakshminarayanan et al. 2017); ddof = 1 uses the unbiased sample variance
of the member means instead. Conditioning (`probcons.conditioning.condition`) then uses the
low-rank-plus-diagonal (Woodbury) update and never forms an N x N matrix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from probcons.backbones.members import MemberTask, load_members, restore_members
from probcons.covariance import LowRankCovariance
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction
from probcons.problems import Problem, get_problem, sample_targets
from probcons.validation import as_float64_tensor, check_positive_int, describe

MIN_VARIANCE = 1e-6
"""Floor of each member's predicted variance (keeps G Sigma G^T invertible for exact rows)."""
BETA = 0.5
"""Default beta-NLL exponent of the training loss."""
ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU}
CHUNK_POINTS = 1 << 18
"""Grid points evaluated per forward pass in `member_outputs`."""


def gaussian_nll(
    mean: torch.Tensor, variance: torch.Tensor, target: torch.Tensor, beta: float = 0.0
) -> torch.Tensor:
    """Mean of w (log variance + (target - mean)^2 / variance) / 2, log 2 pi dropped.

    w = 1 gives the Gaussian NLL (beta = 0); beta > 0 weights each point by variance^beta with
    the weight held constant under differentiation (beta-NLL, Seitzer et al. 2022), which keeps
    points of large predicted variance from being ignored by the mean.
    """
    pointwise = 0.5 * (variance.log() + (target - mean) ** 2 / variance)
    if beta:
        pointwise = pointwise * variance.detach() ** beta
    return pointwise.mean()


def ensemble_prediction(
    means: torch.Tensor, variances: torch.Tensor, grid: Grid, ddof: int = 0
) -> GaussianPrediction:
    """The structured Gaussian of M members' predictions on `grid`.

    means, variances: (M, n_t, n_x) member means mu_m and variances s2_m >= 0. Returns
    N(mean, diag(mean_m s2_m) + F F^T) with mean = mean_m mu_m and F (N, M) the columns
    (mu_m - mean) / sqrt(M - ddof); ddof 0 (mixture variance) or 1 (unbiased spread).
    """
    if not isinstance(grid, Grid):
        raise UsageError(f"grid: expected a probcons.grid.Grid, got {type(grid).__name__}")
    means = as_float64_tensor(means, "means")
    variances = as_float64_tensor(variances, "variances")
    if means.dim() != 3 or tuple(means.shape[1:]) != grid.shape:
        raise UsageError(
            f"means: expected shape (M, {grid.n_t}, {grid.n_x}), got {describe(means)}"
        )
    if variances.shape != means.shape:
        raise UsageError(
            f"variances: expected the shape of means {tuple(means.shape)}, "
            f"got {describe(variances)}"
        )
    if bool((variances < 0).any()):
        raise UsageError(
            f"variances: expected values >= 0, got minimum {float(variances.min()):.3g}"
        )
    if ddof not in (0, 1):
        raise UsageError(f"ddof: expected 0 (mixture) or 1 (unbiased), got {ddof!r}")
    members = means.shape[0]
    if members - ddof < 1:
        raise UsageError(
            f"means: expected at least {ddof + 1} members for ddof={ddof}, got {members}"
        )
    mean = means.mean(dim=0)
    factor = (means - mean).reshape(members, grid.size).T / math.sqrt(members - ddof)
    diagonal = variances.mean(dim=0).reshape(grid.size)
    return GaussianPrediction(mean, LowRankCovariance(diagonal, factor.contiguous()), grid)


@dataclass(frozen=True)
class EnsembleConfig:
    """One member: `layers` hidden layers of width `hidden`, activation, variance floor;
    `points_per_function`: random (t, x) targets per training function and step; `beta`: the
    beta-NLL exponent of the loss (0 = plain Gaussian NLL, see `gaussian_nll`)."""

    hidden: int = 128
    layers: int = 3
    activation: str = "silu"
    min_variance: float = MIN_VARIANCE
    points_per_function: int = 128
    beta: float = BETA

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "points_per_function"):
            check_positive_int(getattr(self, name), name)
        if self.activation not in ACTIVATIONS:
            raise UsageError(
                f"activation: expected one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        if not float(self.min_variance) > 0:
            raise UsageError(f"min_variance: expected a number > 0, got {self.min_variance!r}")
        if not 0 <= float(self.beta) <= 1:
            raise UsageError(f"beta: expected a number in [0, 1], got {self.beta!r}")


class HeteroscedasticMLP(nn.Module):
    """(t, x, p) -> (mean, variance): inputs scaled to [-1, 1] by `ranges` ((lo, hi) each)."""

    def __init__(self, ranges: tuple[tuple[float, float], ...], config: EnsembleConfig) -> None:
        super().__init__()
        low = torch.tensor([lo for lo, _ in ranges], dtype=torch.float32)
        high = torch.tensor([hi for _, hi in ranges], dtype=torch.float32)
        self.register_buffer("input_center", (low + high) / 2)
        self.register_buffer("input_half_width", (high - low) / 2)
        self.min_variance = float(config.min_variance)
        activation = ACTIVATIONS[config.activation]
        layers: list[nn.Module] = []
        width_in = len(ranges)
        for _ in range(config.layers):
            layers += [nn.Linear(width_in, config.hidden), activation()]
            width_in = config.hidden
        layers.append(nn.Linear(width_in, 2))
        self.network = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (..., 3) [t, x, p] -> mean (...), variance (...), in the network's dtype."""
        scaled = (inputs.to(self.input_center.dtype) - self.input_center) / self.input_half_width
        raw = self.network(scaled)
        return raw[..., 0], nn.functional.softplus(raw[..., 1]) + self.min_variance


@dataclass(frozen=True)
class DeepEnsembleTask(MemberTask):
    """Training task of one deep-ensemble member on `problem` (a registry name)."""

    problem: str
    config: EnsembleConfig = EnsembleConfig()
    backbone = "ensemble"

    def __post_init__(self) -> None:
        object.__setattr__(self, "problem", get_problem(self.problem).name)
        if not isinstance(self.config, EnsembleConfig):
            raise UsageError(
                f"config: expected an EnsembleConfig, got {type(self.config).__name__}"
            )

    @property
    def problem_name(self) -> str:
        return self.problem

    def build(self) -> HeteroscedasticMLP:
        problem = get_problem(self.problem)
        ranges = (problem.t_range, problem.x_range, problem.train_range)
        return HeteroscedasticMLP(ranges, self.config)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Inputs (B * P, 3) [t, x, p] and exact u (B * P,), P = points_per_function."""
        problem = get_problem(self.problem)
        inputs, targets = [], []
        for parameter in problem.sample_parameters(batch_size, generator).tolist():
            points = sample_targets(problem, parameter, self.config.points_per_function, generator)
            inputs.append(
                torch.stack([points.t, points.x, torch.full_like(points.t, parameter)], dim=-1)
            )
            targets.append(points.u)
        return torch.cat(inputs), torch.cat(targets)

    def loss(self, model, batch_size, generator):
        inputs, targets = self.sample(batch_size, generator)
        dtype = model.input_center.dtype
        mean, variance = model(inputs.to(dtype))
        return gaussian_nll(mean, variance, targets.to(dtype), self.config.beta)

    def hyperparameters(self) -> dict[str, Any]:
        return {"problem": self.problem, "config": asdict(self.config)}

    @classmethod
    def from_hyperparameters(cls, hyperparameters: dict[str, Any]) -> DeepEnsembleTask:
        return cls(hyperparameters["problem"], EnsembleConfig(**hyperparameters["config"]))


def _check_members(members, kind: type) -> list:
    members = list(members)
    if not members or not all(isinstance(m, kind) for m in members):
        raise UsageError(
            f"members: expected a non-empty list of {kind.__name__}, got "
            f"{[type(m).__name__ for m in members]}"
        )
    return members


def _check_problem(problem: Any, trained_on: str) -> Problem:
    if not isinstance(problem, Problem):
        raise UsageError(f"problem: expected a probcons Problem, got {describe(problem)}")
    if problem.name != trained_on:
        raise UsageError(
            f"problem: this ensemble was trained on {trained_on!r}, got {problem.name!r}"
        )
    return problem


class DeepEnsembleBackbone:
    """M trained HeteroscedasticMLP members for one problem; `predict` gives the structured
    Gaussian of `ensemble_prediction`. The members see the parameter itself, so the contexts
    passed to `predict` are not used (a parametric surrogate, not a conditional process)."""

    name = "ensemble"

    def __init__(
        self,
        members,
        task: DeepEnsembleTask,
        ddof: int = 0,
        chunk_points: int = CHUNK_POINTS,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.members = [m.eval() for m in _check_members(members, HeteroscedasticMLP)]
        if not isinstance(task, DeepEnsembleTask):
            raise UsageError(f"task: expected a DeepEnsembleTask, got {type(task).__name__}")
        if ddof not in (0, 1) or ddof >= len(self.members):
            raise UsageError(f"ddof: expected 0, or 1 with at least 2 members, got {ddof!r}")
        self.task = task
        self.problem = task.problem
        self.ddof = ddof
        self.chunk_points = check_positive_int(chunk_points, "chunk_points")
        self.metadata = dict(metadata or {})

    @classmethod
    def from_checkpoint(cls, path, **options) -> DeepEnsembleBackbone:
        """From a member directory or bundle written by `probcons.backbones.member_training`."""
        _, hyperparameters, states, extra = load_members(path, cls.name)
        task = DeepEnsembleTask.from_hyperparameters(hyperparameters)
        return cls(restore_members(task, states), task, metadata=extra, **options)

    @torch.no_grad()
    def member_outputs(self, problem, parameter, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        """Member means and variances on `grid`, each (M, n_t, n_x) float64."""
        problem = _check_problem(problem, self.problem)
        value = problem.check_parameter(parameter)
        if not isinstance(grid, Grid):
            raise UsageError(f"grid: expected a probcons.grid.Grid, got {type(grid).__name__}")
        points = grid.points()
        inputs = torch.cat([points, torch.full_like(points[:, :1], value)], dim=1)
        means = torch.empty(len(self.members), grid.size, dtype=torch.float64)
        variances = torch.empty_like(means)
        for start in range(0, grid.size, self.chunk_points):
            chunk = inputs[start : start + self.chunk_points]
            for index, member in enumerate(self.members):
                mean, variance = member(chunk)
                means[index, start : start + chunk.shape[0]] = mean
                variances[index, start : start + chunk.shape[0]] = variance
        shape = (len(self.members), *grid.shape)
        return means.reshape(shape), variances.reshape(shape)

    def predict(self, problem, parameter, contexts, grid: Grid, generator=None):
        """GaussianPrediction on `grid` with a LowRankCovariance (diagonal + rank M)."""
        means, variances = self.member_outputs(problem, parameter, grid)
        return ensemble_prediction(means, variances, grid, self.ddof)

    def __repr__(self) -> str:
        return f"DeepEnsembleBackbone(problem={self.problem!r}, members={len(self.members)})"


__all__ = [
    "DeepEnsembleBackbone",
    "DeepEnsembleTask",
    "EnsembleConfig",
    "HeteroscedasticMLP",
    "ensemble_prediction",
    "gaussian_nll",
]
