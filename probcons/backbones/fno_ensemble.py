"""FNO-ensemble backbone: M Fourier neural operators from a problem's known inputs to its solution.

Each member is a `probcons.operators.FNO2d` on the (t, x) grid, channels first,
(batch, channels, n_t, n_x). Its input channels are the known data of one function, broadcast
over the grid: "parameter" (the PDE parameter scaled to [-1, 1] by the training range) and, on
request, "initial" (the initial condition u(t_0, x), constant along t); the FNO appends the
(t, x) coordinates itself. Two output channels give the mean and the variance
softplus(raw) + min_variance of u on the grid, trained on the (beta-)NLL of exact solutions.
The zero padding of the lifted field is a fixed fraction of each axis, so the operator sees the
same padded domain at every resolution and can be evaluated on grids finer than `train_grid`.

The prediction on a grid is the same structured Gaussian as the deep ensemble's
(`probcons.backbones.ensemble.ensemble_prediction`): mean of the members, covariance
diag(mean variance) + F F^T with F the member deviations / sqrt(M - ddof) (ddof = 0 default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from probcons.backbones.ensemble import (
    BETA,
    MIN_VARIANCE,
    _check_members,
    _check_problem,
    ensemble_prediction,
    gaussian_nll,
)
from probcons.backbones.members import MemberTask, load_members, restore_members
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.operators import FNO2d
from probcons.problems import get_problem
from probcons.validation import check_positive_int

INPUTS = ("parameter", "initial")
"""Known inputs a member may take, one channel each."""
UNIFORM_TOLERANCE = 1e-9
"""Relative deviation from a uniform grid over the problem's domain accepted by `predict`."""


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise UsageError(f"{name}: expected an int or a pair of ints, got {value!r}")
    return (check_positive_int(value[0], f"{name}[0]"), check_positive_int(value[1], f"{name}[1]"))


@dataclass(frozen=True)
class FNOEnsembleConfig:
    """One member: FNO2d with `modes` (t, x), `width` channels, `layers` Fourier layers,
    `projection_width`; zero padding `padding_fraction` of each axis; trained on a uniform
    `train_grid` (n_t, n_x) of exact solutions; `inputs` a subset of INPUTS; `beta` the beta-NLL
    exponent of the loss (`probcons.backbones.ensemble.gaussian_nll`)."""

    inputs: tuple[str, ...] = ("parameter",)
    modes: tuple[int, int] = (6, 6)  # the shipped checkpoints' sizes (1.7 MB for 5 members)
    width: int = 12
    layers: int = 4
    projection_width: int = 64
    padding_fraction: float = 0.125
    train_grid: tuple[int, int] = (48, 48)
    min_variance: float = MIN_VARIANCE
    beta: float = BETA

    def __post_init__(self) -> None:
        inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
        if (
            not inputs
            or any(name not in INPUTS for name in inputs)
            or len(set(inputs)) < len(inputs)
        ):
            raise UsageError(f"inputs: expected distinct names from {INPUTS}, got {self.inputs!r}")
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "modes", _pair(self.modes, "modes"))
        object.__setattr__(self, "train_grid", _pair(self.train_grid, "train_grid"))
        for name in ("width", "layers", "projection_width"):
            check_positive_int(getattr(self, name), name)
        if not 0 <= float(self.padding_fraction) <= 1:
            raise UsageError(
                f"padding_fraction: expected a number in [0, 1], got {self.padding_fraction!r}"
            )
        if not float(self.min_variance) > 0:
            raise UsageError(f"min_variance: expected a number > 0, got {self.min_variance!r}")
        if not 0 <= float(self.beta) <= 1:
            raise UsageError(f"beta: expected a number in [0, 1], got {self.beta!r}")


class FNOMember(nn.Module):
    """FNO2d with a variance head: (B, C, n_t, n_x) -> mean, variance (B, n_t, n_x)."""

    def __init__(self, config: FNOEnsembleConfig) -> None:
        super().__init__()
        self.operator = FNO2d(
            in_channels=len(config.inputs),
            out_channels=2,
            modes=config.modes,
            width=config.width,
            layers=config.layers,
            padding=0,
            coordinates="linear",
            projection_width=config.projection_width,
        )
        self.padding_fraction = float(config.padding_fraction)
        self.min_variance = float(config.min_variance)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The padding is an attribute of FNO2d read by its forward; set it for this resolution.
        self.operator.padding = tuple(round(self.padding_fraction * n) for n in inputs.shape[-2:])
        raw = self.operator(inputs)
        return raw[:, 0], nn.functional.softplus(raw[:, 1]) + self.min_variance


@dataclass(frozen=True)
class FNOEnsembleTask(MemberTask):
    """Training task of one FNO-ensemble member on `problem` (a registry name)."""

    problem: str
    config: FNOEnsembleConfig = FNOEnsembleConfig()
    backbone = "fno-ensemble"

    def __post_init__(self) -> None:
        object.__setattr__(self, "problem", get_problem(self.problem).name)
        if not isinstance(self.config, FNOEnsembleConfig):
            raise UsageError(
                f"config: expected an FNOEnsembleConfig, got {type(self.config).__name__}"
            )

    @property
    def problem_name(self) -> str:
        return self.problem

    def build(self) -> FNOMember:
        return FNOMember(self.config)

    def inputs(self, parameters: list[float], grid: Grid) -> torch.Tensor:
        """Input channels for each parameter on `grid`, (B, C, n_t, n_x) float32."""
        problem = get_problem(self.problem)
        lo, hi = problem.train_range
        channels = []
        for parameter in parameters:
            planes = []
            for name in self.config.inputs:
                if name == "parameter":
                    scaled = (2 * parameter - lo - hi) / (hi - lo)
                    planes.append(torch.full(grid.shape, scaled, dtype=torch.float64))
                else:
                    initial = problem.solution(grid.t[:1], grid.x, parameter)
                    planes.append(initial.expand(grid.shape))
            channels.append(torch.stack(planes))
        return torch.stack(channels).to(torch.float32)

    def loss(self, model, batch_size, generator):
        problem = get_problem(self.problem)
        grid = problem.grid(*self.config.train_grid)
        parameters = problem.sample_parameters(batch_size, generator).tolist()
        times, positions = grid.mesh()
        targets = torch.stack([problem.solution(times, positions, p) for p in parameters])
        mean, variance = model(self.inputs(parameters, grid))
        return gaussian_nll(mean, variance, targets.to(mean.dtype), self.config.beta)

    def hyperparameters(self) -> dict[str, Any]:
        config = asdict(self.config)
        config.update(
            inputs=list(config["inputs"]),
            modes=list(config["modes"]),
            train_grid=list(config["train_grid"]),
        )
        return {"problem": self.problem, "config": config}

    @classmethod
    def from_hyperparameters(cls, hyperparameters: dict[str, Any]) -> FNOEnsembleTask:
        return cls(hyperparameters["problem"], FNOEnsembleConfig(**hyperparameters["config"]))


def check_domain_grid(problem, grid: Grid) -> None:
    """Raise unless `grid` is uniform in t and x and spans the problem's t_range and x_range."""
    if not isinstance(grid, Grid):
        raise UsageError(f"grid: expected a probcons.grid.Grid, got {type(grid).__name__}")
    for axis, values, (lo, hi) in (
        ("t", grid.t, problem.t_range),
        ("x", grid.x, problem.x_range),
    ):
        expected = torch.linspace(lo, hi, values.numel(), dtype=torch.float64)
        if values.numel() < 2 or (values - expected).abs().max() > UNIFORM_TOLERANCE * (hi - lo):
            raise UsageError(
                f"grid: expected {axis} uniform over [{lo:g}, {hi:g}] with at least 2 points "
                f"(an FNO sees the whole domain), got {values.numel()} points over "
                f"[{float(values[0]):g}, {float(values[-1]):g}]"
            )


class FNOEnsembleBackbone:
    """M trained FNO members for one problem; `predict` returns the structured Gaussian on any
    uniform grid over the problem's domain. The members see the parameter (and initial
    condition), so the contexts passed to `predict` are not used."""

    name = "fno-ensemble"

    def __init__(
        self,
        members,
        task: FNOEnsembleTask,
        ddof: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.members = [m.eval() for m in _check_members(members, FNOMember)]
        if not isinstance(task, FNOEnsembleTask):
            raise UsageError(f"task: expected an FNOEnsembleTask, got {type(task).__name__}")
        if ddof not in (0, 1) or ddof >= len(self.members):
            raise UsageError(f"ddof: expected 0, or 1 with at least 2 members, got {ddof!r}")
        self.task = task
        self.problem = task.problem
        self.ddof = ddof
        self.metadata = dict(metadata or {})

    @classmethod
    def from_checkpoint(cls, path, **options) -> FNOEnsembleBackbone:
        """From a member directory or bundle written by `probcons.backbones.member_training`."""
        _, hyperparameters, states, extra = load_members(path, cls.name)
        task = FNOEnsembleTask.from_hyperparameters(hyperparameters)
        return cls(restore_members(task, states), task, metadata=extra, **options)

    @torch.no_grad()
    def member_outputs(self, problem, parameter, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        """Member means and variances on `grid`, each (M, n_t, n_x) float64."""
        problem = _check_problem(problem, self.problem)
        value = problem.check_parameter(parameter)
        check_domain_grid(problem, grid)
        inputs = self.task.inputs([value], grid)
        outputs = [member(inputs) for member in self.members]
        means = torch.cat([mean for mean, _ in outputs]).to(torch.float64)
        variances = torch.cat([variance for _, variance in outputs]).to(torch.float64)
        return means, variances

    def predict(self, problem, parameter, contexts, grid: Grid, generator=None):
        """GaussianPrediction on `grid` with a LowRankCovariance (diagonal + rank M)."""
        means, variances = self.member_outputs(problem, parameter, grid)
        return ensemble_prediction(means, variances, grid, self.ddof)

    def __repr__(self) -> str:
        return f"FNOEnsembleBackbone(problem={self.problem!r}, members={len(self.members)})"


__all__ = [
    "INPUTS",
    "FNOEnsembleBackbone",
    "FNOEnsembleConfig",
    "FNOEnsembleTask",
    "FNOMember",
    "check_domain_grid",
]
