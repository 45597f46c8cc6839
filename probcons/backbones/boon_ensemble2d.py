"""Probabilistic 2-D BOON: an ensemble of one-step BOON-FNOs (or FNOs) rolled out on (t, x, y).

E members, each trained with its own seed (`member_seed`), roll a test trajectory out from its
first `history` states; on the predicted slices t_h, ..., t_K (m = K - h + 1 times) member e
gives u_e (m, C, n, n). The prediction is one Posterior on a flat grid (`ensemble_grid`: the m
times, C n^2 positions per slice, channel-major p = c n^2 + i n + k, the layout of
`Grid2d.flat` for one channel):

    mean = (1/E) sum_e u_e,   Sigma = s I + F F^T,   F = [u_e - mean] / sqrt(E - 1),

a LowRankCovariance (covariance="sample"). With covariance="marginal" the prediction keeps only
its marginal variances, diag(s I + F F^T) (a DiagonalCovariance): the extreme localisation of
the sample covariance. With few members F's sample correlations are mostly noise, and an exact
row then moves every value along them; on the marginals a row's correction lands on the points
it reads, in proportion to their variance (measured: docs/results/boon-2d-ensemble.md, the
"marg." columns). s is one scalar: `calibrate` sets it to the maximiser of the held-out
pointwise Gaussian log-likelihood (`calibrated_noise_variance`, as in 1-D) on validation
trajectories that are neither training nor test data.

Physics (`physics_constraint`), rows per predicted slice, exact (sigma_G = 0):
- cavity: the Dirichlet wall rows of both velocity channels (`boundary_condition2d_constraint`
  with the boundary data BOON receives). The circulation row (`circulation_constraint2d`,
  integral of omega = -U L) is their consequence (discrete Stokes: it reads wall values only),
  so it is reported (`circulation_residual`) and not stacked (it would make S singular).
- wave2d: the one-sided Neumann rows and the mass balance (`wave_balance_constraint2d`: the
  conserved mass of the given initial state, exact on the solver's quadrature).
`posteriors(data)` conditions each sample's Gaussian on them through the Pyro model
`observed_rows` under `ExactConditioning` (`probcons.backbones.boon_ensemble.conserve`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from probcons.backbones.boon_ensemble import NOISE_VARIANCE, calibrated_noise_variance, conserve
from probcons.constraints.balance2d import wave_balance_constraint2d
from probcons.constraints.circulation2d import (
    circulation_constraint2d,
    embed_channel,
    lid_circulation,
)
from probcons.constraints.linear import LinearConstraint
from probcons.constraints.walls2d import boundary_condition2d_constraint
from probcons.covariance import DiagonalCovariance, LowRankCovariance
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.grid2d import Grid2d
from probcons.metrics import gaussian_interval_coverage
from probcons.posterior import Posterior
from probcons.prediction import GaussianPrediction
from probcons.problems.operators2d import OperatorProblem2d, Trajectories2d
from probcons.solvers.cavity import LID_VELOCITY
from probcons.validation import check_choice, check_nonnegative, check_positive_int

COVERAGE_LEVEL = 0.9
"""Central interval whose pointwise coverage `coverage` reports."""
CAVITY_SIDE = 1.0
"""L: the cavity is the unit square."""
ENSEMBLE_KINDS = ("boon", "fno")
"""Member kinds of `probcons.boon.training2d` an ensemble may hold."""
COVARIANCES = ("sample", "marginal")
"""The prediction's covariance: the members' sample covariance, or its marginal variances."""
MEMBER_STREAM = 4099
"""Entropy word of the members' seeds (kept apart from the data's and the draws')."""


def member_seed(seed: int, member: int) -> int:
    """The training seed of member `member` of a run with `seed` (one SeedSequence per run)."""
    state = np.random.SeedSequence([int(seed), MEMBER_STREAM, int(member)]).generate_state(1)
    return int(state[0])


def ensemble_grid(problem: OperatorProblem2d) -> Grid:
    """The flat grid of a rollout's prediction: predicted times t_h..t_K, C n^2 positions."""
    times = problem.times[problem.history :]
    positions = torch.arange(problem.channels * problem.n**2, dtype=torch.float64)
    return Grid(times, positions)


def ensemble_grid2d(problem: OperatorProblem2d) -> Grid2d:
    """The (t, x, y) grid of one channel of a rollout's prediction."""
    return Grid2d(problem.times[problem.history :], problem.nodes, problem.nodes)


def _flatten(states: torch.Tensor) -> torch.Tensor:
    """(..., m, C, n, n) -> (..., m, C n^2), channel-major."""
    return states.reshape(*states.shape[:-3], -1)


def physics_constraint(problem: OperatorProblem2d, states: torch.Tensor) -> LinearConstraint:
    """The exact rows of one trajectory's prediction (module docstring), on `ensemble_grid`.

    states (K + 1, C, n, n): the trajectory; only its first `history` states (the rollout's
    inputs) and the boundary data of its predicted states (BOON's inputs) are read.
    """
    expected = (problem.n_steps + 1, problem.channels, problem.n, problem.n)
    if tuple(states.shape) != expected:
        raise UsageError(f"states: expected shape {expected}, got {tuple(states.shape)}")
    grid2d = ensemble_grid2d(problem)
    predicted = states[problem.history :].to(torch.float64)
    data = problem.boundary_data(predicted)  # (g_x, g_y) over (m, C, ...), or None (zero)
    parts = []
    for channel in range(problem.channels):
        channel_data = None if data is None else tuple(d[:, channel : channel + 1] for d in data)
        walls = boundary_condition2d_constraint(problem.condition, grid2d, channel_data)
        parts.append(embed_channel(walls, channel, problem.channels))
    if problem.name == "wave2d":
        initial = states[0, 0].to(torch.float64)
        parts.append(wave_balance_constraint2d(grid2d, initial))
    return parts[0].stack(*parts[1:])


def circulation_residual(problem: OperatorProblem2d, fields: torch.Tensor) -> torch.Tensor:
    """Cavity: integral of omega + U L per slice for fields (..., m, 2 n^2), (..., m)."""
    grid2d = ensemble_grid2d(problem)
    constraint = circulation_constraint2d(grid2d, lid_circulation(LID_VELOCITY, CAVITY_SIDE))
    return constraint.residual(fields)[..., 0]


def balance_residual(problem: OperatorProblem2d, fields: torch.Tensor, initial) -> torch.Tensor:
    """wave2d: M(t_j) - M(t_0) on the solver's quadrature for fields (..., m, n^2), (..., m)."""
    constraint = wave_balance_constraint2d(ensemble_grid2d(problem), initial)
    return constraint.residual(fields)[..., 0]


class BoonEnsemble2d:
    """E trained one-step models of one kind ("boon" or "fno") for one 2-D problem."""

    def __init__(
        self,
        models: list,
        kind: str,
        problem: OperatorProblem2d,
        noise_variance: float = NOISE_VARIANCE,
        covariance: str = "sample",
    ) -> None:
        self.covariance = check_choice(covariance, "covariance", COVARIANCES)
        if len(models) < 2:
            raise UsageError(f"models: expected at least 2 ensemble members, got {len(models)}")
        if kind not in ENSEMBLE_KINDS:
            raise UsageError(f"kind: expected one of {list(ENSEMBLE_KINDS)}, got {kind!r}")
        self.models = list(models)
        self.kind = kind
        self.problem = problem
        self.noise_variance = check_nonnegative(noise_variance, "noise_variance")
        self.grid = ensemble_grid(problem)

    @property
    def name(self) -> str:
        return "boon-ensemble" if self.kind == "boon" else "fno-ensemble"

    @classmethod
    def train(
        cls,
        problem: OperatorProblem2d,
        train: Trajectories2d,
        config,
        members: int = 3,
        seed: int = 0,
        kind: str = "boon",
        noise_variance: float = NOISE_VARIANCE,
        progress: bool = False,
        covariance: str = "sample",
    ) -> tuple[BoonEnsemble2d, float]:
        """Train `members` one-step models with seeds `member_seed(seed, e)`; (ensemble, seconds)."""
        from probcons.boon.training2d import train_model2d

        check_positive_int(members, "members")
        if kind not in ENSEMBLE_KINDS:
            raise UsageError(f"kind: expected one of {list(ENSEMBLE_KINDS)}, got {kind!r}")
        models, seconds = [], 0.0
        for member in range(members):
            model, spent = train_model2d(
                kind, problem, train, config, member_seed(seed, member), progress=progress
            )
            models.append(model)
            seconds += spent
        return cls(models, kind, problem, noise_variance, covariance), seconds

    def member_rollouts(self, data: Trajectories2d) -> torch.Tensor:
        """(E, n, m, C, n, n) float64: every member's rollout on the predicted slices."""
        from probcons.boon.training2d import rollout

        first = self.problem.history
        return torch.stack(
            [
                rollout(model, self.kind, self.problem, data, torch.float64)[:, first:]
                for model in self.models
            ]
        )

    def calibrate(self, data: Trajectories2d, floor: float = NOISE_VARIANCE, members=None) -> float:
        """Set noise_variance from held-out trajectories (`calibrated_noise_variance`)."""
        members = self.member_rollouts(data) if members is None else members
        truth = data.states[:, self.problem.history :].to(torch.float64)
        self.noise_variance = calibrated_noise_variance(members, truth, floor)
        return self.noise_variance

    def predict(self, data: Trajectories2d, members=None) -> list[GaussianPrediction]:
        """One GaussianPrediction on `self.grid` per trajectory of `data` (a LowRankCovariance,
        or its marginals in a DiagonalCovariance with covariance="marginal"); members:
        `member_rollouts(data)` when already computed."""
        members = self.member_rollouts(data) if members is None else members
        flat = _flatten(members)  # (E, n, m, P)
        mean = flat.mean(0)
        deviations = (flat - mean) / math.sqrt(len(self.models) - 1)
        size = self.grid.size
        out = []
        for i in range(flat.shape[1]):
            factor = deviations[:, i].reshape(len(self.models), size).T.contiguous()
            diagonal = torch.full((size,), self.noise_variance, dtype=torch.float64)
            prediction = GaussianPrediction(mean[i], LowRankCovariance(diagonal, factor), self.grid)
            if self.covariance == "marginal":
                marginal = DiagonalCovariance(prediction.variance.reshape(-1))
                prediction = GaussianPrediction(mean[i], marginal, self.grid)
            out.append(prediction)
        return out

    def coverage(self, data: Trajectories2d, level: float = COVERAGE_LEVEL) -> float:
        """Share of predicted grid values inside the central `level` interval of the marginals."""
        predictions = self.predict(data)
        truth = _flatten(data.states[:, self.problem.history :].to(torch.float64))
        inside = [
            gaussian_interval_coverage(p.mean, p.variance, truth[i], level).double().mean()
            for i, p in enumerate(predictions)
        ]
        return float(torch.stack(inside).mean())

    def constraints(self, data: Trajectories2d) -> list[LinearConstraint]:
        """`physics_constraint` of each trajectory of `data`."""
        return [physics_constraint(self.problem, states) for states in data.states]

    def posteriors(
        self, data: Trajectories2d, predictions: list[Posterior] | None = None
    ) -> list[Posterior]:
        """The exact posterior of each trajectory given its `physics_constraint` rows."""
        predictions = self.predict(data) if predictions is None else predictions
        return [
            conserve(prediction, [constraint])
            for prediction, constraint in zip(predictions, self.constraints(data), strict=True)
        ]


def flat_truth(problem: OperatorProblem2d, data: Trajectories2d) -> torch.Tensor:
    """(n, m, C n^2) float64: the test trajectories on `ensemble_grid`."""
    return _flatten(data.states[:, problem.history :].to(torch.float64))


__all__ = [
    "COVARIANCES",
    "COVERAGE_LEVEL",
    "ENSEMBLE_KINDS",
    "BoonEnsemble2d",
    "balance_residual",
    "circulation_residual",
    "ensemble_grid",
    "ensemble_grid2d",
    "flat_truth",
    "member_seed",
    "physics_constraint",
]
