"""Probabilistic BOON: an ensemble of BOON-FNOs as a backbone returning a GaussianPrediction.

For one input a, E members give u_e (m, n_x) (each satisfies the boundary condition exactly).
The prediction on the grid (t = output times, x) is

    mean = (1/E) sum_e u_e,   Sigma = diag(noise_variance) + F F^T,  F = [u_e - mean] / sqrt(E - 1),

a LowRankCovariance. Every column of F satisfies the homogeneous condition and the mean the
inhomogeneous one. The diagonal (aleatoric) variance s is one scalar: the default NOISE_VARIANCE is
a floor that leaves the ensemble over-confident; `calibrate` sets s to the maximiser of the
held-out pointwise Gaussian log-likelihood sum log N(y | mean, s + spread^2), spread^2 the
members' variance (1 / (E - 1) normalisation), over log s in [log floor, log max_variance].

Constraints go through a Pyro model, as on the GPME side: `sites(data)` traces the problem's
model file (models/<problem>.py, found by `probcons.resources.model_file`; heat-neumann ships
one: u ~ the prediction, observed sites "mass" and "neumann") once per sample under
`probcons.inference.ExactConditioning`, and each ConstraintSites gives the unconstrained prior,
the ProbConserv posterior (`.posterior("probconserv")`) on the stacked rows [conservation;
Neumann], whose mean and every draw satisfy both, and the rows themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import torch
from scipy.optimize import minimize_scalar

from probcons.boon.training import TrainingConfig, predict, train_model
from probcons.constraints import conservation_constraint, neumann_constraint
from probcons.covariance import LowRankCovariance
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.inference import (
    ConstraintSites,
    ExactConditioning,
    GaussianField,
    observe_constraint,
)
from probcons.metrics import gaussian_interval_coverage
from probcons.posterior import Posterior
from probcons.prediction import GaussianPrediction
from probcons.problems.operators import OperatorData, OperatorProblem, heat_mass
from probcons.resources import load_model, model_file
from probcons.validation import check_nonnegative, check_positive_int

NOISE_VARIANCE = 1e-8  # diagonal floor of the ensemble covariance (keeps G Sigma G^T invertible)
COVERAGE_LEVEL = 0.9  # central interval whose pointwise coverage `coverage` reports
MODEL_PROBLEMS = ("heat-neumann",)
"""Operator problems with a shipped Pyro model file (models/<problem>.py) of constraint sites."""


def calibrated_noise_variance(
    members: torch.Tensor, targets: torch.Tensor, floor: float = NOISE_VARIANCE
) -> float:
    """argmax_s sum log N(targets | mean, s + spread^2) over s >= floor (one scalar, bounded search).

    members (E, n, ...) member predictions, targets (n, ...) held-out truth; the search runs over
    log s between log floor and log of the largest squared error (beyond which the likelihood
    only decreases).
    """
    if members.dim() < 2 or members.shape[0] < 2 or members.shape[1:] != targets.shape:
        raise UsageError(
            "members, targets: expected (E >= 2, *shape) and (*shape),"
            f" got {tuple(members.shape)} and {tuple(targets.shape)}"
        )
    floor = check_nonnegative(floor, "floor")
    if floor <= 0:
        raise UsageError(f"floor: expected a variance > 0, got {floor!r}")
    members, targets = members.to(torch.float64), targets.to(torch.float64)
    squared = ((members.mean(0) - targets) ** 2).flatten()
    spread = members.var(0, unbiased=True).flatten()
    upper = max(float(squared.max()), floor * 10)

    def negative_log_likelihood(log_s: float) -> float:
        variance = spread + math.exp(log_s)
        return float(0.5 * (variance.log() + squared / variance).sum())

    result = minimize_scalar(
        negative_log_likelihood, bounds=(math.log(floor), math.log(upper)), method="bounded"
    )
    best = max(floor, math.exp(result.x))
    # the bounded search never evaluates the end point itself; keep the floor if it is better
    if negative_log_likelihood(math.log(floor)) < negative_log_likelihood(math.log(best)):
        best = floor
    return best


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
            raise UsageError(f"models: expected at least 2 ensemble members, got {len(models)}")
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

    def calibrate(self, data: OperatorData, floor: float = NOISE_VARIANCE) -> float:
        """Set noise_variance from held-out `data` (`calibrated_noise_variance`); returns it."""
        self.noise_variance = calibrated_noise_variance(
            self.member_predictions(data), data.targets, floor
        )
        return self.noise_variance

    def coverage(self, data: OperatorData, level: float = COVERAGE_LEVEL) -> float:
        """Share of grid values of `data` inside the central `level` interval of the marginals."""
        members = self.member_predictions(data)
        variance = members.var(0, unbiased=True) + self.noise_variance
        inside = gaussian_interval_coverage(members.mean(0), variance, data.targets, level)
        return float(inside.double().mean())

    def predict(self, data: OperatorData) -> list[GaussianPrediction]:
        """One Posterior (a GaussianPrediction with a LowRankCovariance) on grid (times, x) per
        sample of `data`, in order."""
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

    def sites(
        self, data: OperatorData, model: Callable | None = None, noise_std: float = 0.0
    ) -> list[ConstraintSites]:
        """One trace per sample of `data` of the Pyro model (default: the problem's model file,
        `problem_model`) over that sample's prediction: ConstraintSites with `.prior` (the
        ensemble's Gaussian), `.posterior(method)`, `.constraint` and `.columns[site]`."""
        check_nonnegative(noise_std, "noise_std")
        conditioning = ExactConditioning(
            problem_model(self.problem.name) if model is None else model
        )
        return [
            conditioning.collect(prediction, *model_arguments(self.problem, data, index, noise_std))
            for index, prediction in enumerate(self.predict(data))
        ]

    def posteriors(
        self,
        data: OperatorData,
        method: str = "probconserv",
        model: Callable | None = None,
        noise_std: float = 0.0,
    ) -> list[Posterior]:
        """One Posterior per sample of `data` after `method` ("unconstrained", "hardc" or
        "probconserv") on the sites of `model` (`sites`)."""
        return [sites.posterior(method) for sites in self.sites(data, model, noise_std)]


def problem_model(problem: str) -> Callable:
    """The `model` function of models/<problem>.py (working directory first, then the shipped
    one), read anew on each call; called as model(prediction, *model_arguments(...))."""
    if problem not in MODEL_PROBLEMS:
        raise UsageError(
            f"problem: expected one of {list(MODEL_PROBLEMS)} (operator problems with a Pyro "
            f"model file), got {problem!r}"
        )
    return load_model(model_file(problem))


def model_arguments(
    problem: OperatorProblem, data: OperatorData, index: int, noise_std: float = 0.0
) -> tuple:
    """What a BOON model file's model(prediction, ...) takes after the prediction for sample
    `index`: (problem, parameter (p,), boundary data (m, r), noise_std)."""
    if data.parameters is None or data.boundary is None:
        raise UsageError(
            "data: expected parameters and boundary data for the model's sites, got "
            f"parameters {data.parameters is not None}, boundary {data.boundary is not None}"
        )
    return problem, data.parameters[index], data.boundary[index], noise_std


def heat_constraints(problem: OperatorProblem, data: OperatorData, index: int, order: int = 2):
    """[conservation (mass from the exact boundary fluxes); Neumann rows] for sample `index`:
    the rows of models/heat-neumann.py's sites "mass" and "neumann", as LinearConstraints."""
    grid = Grid(problem.times, problem.x)
    mass = heat_mass(problem, data.parameters[index : index + 1])[0]
    conservation = conservation_constraint(grid, mass)
    boundary = data.boundary[index]
    neumann = neumann_constraint(grid, left=boundary[:, 0], right=boundary[:, 1], order=order)
    return conservation, neumann


def observed_rows(prediction: Posterior, constraints) -> torch.Tensor:
    """A Pyro model: u ~ `prediction`; constraint k an observed site "rows_k" of u."""
    u = pyro.sample("u", GaussianField(prediction))
    for index, constraint in enumerate(constraints):
        observe_constraint(f"rows_{index}", constraint, u)
    return u


def conserve(prediction: Posterior, constraints) -> Posterior:
    """ProbConserv posterior given all `constraints` exactly (sigma_G = 0), through
    ExactConditioning of the model `observed_rows`."""
    return ExactConditioning(observed_rows).posterior(prediction, list(constraints))
