"""Probabilistic BOON: an ensemble of BOON-FNOs as a backbone returning a GaussianPrediction.

For one input a, E members give u_e (m, n_x) (each satisfies the boundary condition exactly).
The prediction on the grid (t = output times, x) is

    mean = (1/E) sum_e u_e,   Sigma = diag(noise_variance) + F F^T,  F = [u_e - mean] / sqrt(E - 1),

a LowRankCovariance. Every column of F satisfies the homogeneous condition and the mean the
inhomogeneous one. The ProbConserv update (`probcons.conditioning.condition`) on the stacked
constraint [conservation; boundary rows] then gives a posterior whose mean satisfies both.
"""

from __future__ import annotations

import math

import torch

from probcons.boon.problems import OperatorData, OperatorProblem, heat_mass
from probcons.boon.training import TrainingConfig, predict, train_model
from probcons.conditioning import condition
from probcons.constraints import conservation_constraint, neumann_constraint
from probcons.covariance import LowRankCovariance
from probcons.grid import Grid
from probcons.prediction import GaussianPrediction
from probcons.validation import check_nonnegative, check_positive_int

NOISE_VARIANCE = 1e-8  # diagonal floor of the ensemble covariance (keeps G Sigma G^T invertible)


class BoonEnsemble:
    """E trained BOON-FNOs (or FNOs) of one kind for one problem; `predict` gives Gaussians."""

    name = "boon-ensemble"

    def __init__(
        self,
        models: list,
        kind: str,
        problem: OperatorProblem,
        noise_variance: float = NOISE_VARIANCE,
    ) -> None:
        if len(models) < 2:
            raise ValueError(f"models: expected at least 2 ensemble members, got {len(models)}")
        self.models = list(models)
        self.kind = kind
        self.problem = problem
        self.noise_variance = check_nonnegative(noise_variance, "noise_variance")
        self.grid = Grid(problem.times, problem.x)

    @classmethod
    def train(
        cls,
        problem: OperatorProblem,
        train: OperatorData,
        config: TrainingConfig,
        members: int = 4,
        seed: int = 0,
        kind: str = "boon",
        noise_variance: float = NOISE_VARIANCE,
    ) -> BoonEnsemble:
        """Train `members` models with seeds seed, seed + 1, ... (different inits and batches)."""
        check_positive_int(members, "members")
        models = [train_model(kind, problem, train, config, seed + e)[0] for e in range(members)]
        return cls(models, kind, problem, noise_variance)

    def member_predictions(self, data: OperatorData) -> torch.Tensor:
        """(E, n, m, n_x) float64."""
        return torch.stack([predict(m, self.kind, data).to(torch.float64) for m in self.models])

    def predict(self, data: OperatorData) -> list[GaussianPrediction]:
        """One GaussianPrediction on grid (times, x) per sample of `data`."""
        members = self.member_predictions(data)
        mean = members.mean(0)
        deviations = (members - mean) / math.sqrt(len(self.models) - 1)
        size = self.grid.size
        out = []
        for i in range(len(data)):
            factor = deviations[:, i].reshape(len(self.models), size).T
            diagonal = torch.full((size,), self.noise_variance, dtype=torch.float64)
            out.append(GaussianPrediction(mean[i], LowRankCovariance(diagonal, factor), self.grid))
        return out


def heat_constraints(problem: OperatorProblem, data: OperatorData, index: int, order: int = 2):
    """[conservation (mass from the exact boundary fluxes); Neumann rows] for sample `index`."""
    grid = Grid(problem.times, problem.x)
    mass = heat_mass(problem, data.parameters[index : index + 1])[0]
    conservation = conservation_constraint(grid, mass)
    boundary = data.boundary[index]
    neumann = neumann_constraint(grid, left=boundary[:, 0], right=boundary[:, 1], order=order)
    return conservation, neumann


def conserve(prediction: GaussianPrediction, constraints) -> GaussianPrediction:
    """ProbConserv posterior given all `constraints` exactly (sigma_G = 0)."""
    return condition(prediction, list(constraints))
