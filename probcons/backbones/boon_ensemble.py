"""Probabilistic BOON: an ensemble of BOON-FNOs as a backbone returning a GaussianPrediction.

For one input a, E members give u_e (m, n_x) (each satisfies the boundary condition exactly).
The prediction on the grid (t = output times, x) is

    mean = (1/E) sum_e u_e,   Sigma = diag(noise_variance) + F F^T,  F = [u_e - mean] / sqrt(E - 1),

a LowRankCovariance. Every column of F satisfies the homogeneous condition and the mean the
inhomogeneous one. The diagonal (aleatoric) variance s is one scalar: the default NOISE_VARIANCE is
a floor that leaves the ensemble over-confident; `calibrate` sets s to the maximiser of the
held-out pointwise Gaussian log-likelihood sum log N(y | mean, s + spread^2), spread^2 the
members' variance (1 / (E - 1) normalisation), over log s in [log floor, log max_variance].

A scalar covariance scale c (default 1) multiplies the whole covariance, Sigma = c (s I + F F^T),
so that the prediction conditioned on exact rows can be calibrated (`boon_ensemble_e2e.
calibrate_covariance_scale`): with sigma_G = 0 the conditioned mean does not depend on c and the
conditioned covariance is c times the c = 1 one.

`save` writes the whole ensemble (every member's weights and hyperparameters, s, c, the problem
and how it was trained) to one checkpoint file; `BoonEnsemble.load` rebuilds it.

Constraints go through a Pyro model, as on the GPME side: `sites(data)` traces the problem's
model file (models/<problem>.py, found by `probcons.resources.model_file`; heat-neumann ships
one: u ~ the prediction, observed sites "mass" and "neumann") once per sample under
`probcons.inference.ExactConditioning`, and each ConstraintSites gives the unconstrained prior,
the ProbConserv posterior (`.posterior("probconserv")`) on the stacked rows [conservation;
Neumann], whose mean and every draw satisfy both, and the rows themselves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import pyro
import torch
from scipy.optimize import minimize_scalar

from probcons.boon.correction import BoonFNO1d
from probcons.boon.training import TrainingConfig, predict, train_model
from probcons.checkpoint import load_checkpoint, save_checkpoint
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
from probcons.operators.fno import FNO1d, build_operator
from probcons.posterior import Posterior
from probcons.prediction import GaussianPrediction
from probcons.problems.operators import OperatorData, OperatorProblem, heat_mass, make_problem
from probcons.resources import load_model, model_file
from probcons.validation import check_nonnegative, check_positive_int

NOISE_VARIANCE = 1e-8  # diagonal floor of the ensemble covariance (keeps G Sigma G^T invertible)
COVERAGE_LEVEL = 0.9  # central interval whose pointwise coverage `coverage` reports
CHECKPOINT_KIND = "boon-ensemble"
"""hyperparameters["backbone"] of an ensemble checkpoint written by `BoonEnsemble.save`."""
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
    """E trained BOON-FNOs (or FNOs) of one kind for one problem; `predict` gives Gaussians.

    noise_variance s and covariance_scale c: Sigma = c (s I + F F^T) (module docstring).
    """

    name = "boon-ensemble"

    def __init__(
        self,
        models: list,
        kind: str,
        problem: OperatorProblem,
        noise_variance: float = NOISE_VARIANCE,
        covariance_scale: float = 1.0,
    ) -> None:
        if len(models) < 2:
            raise UsageError(f"models: expected at least 2 ensemble members, got {len(models)}")
        self.models = list(models)
        self.kind = kind
        self.problem = problem
        self.noise_variance = check_nonnegative(noise_variance, "noise_variance")
        self.covariance_scale = check_nonnegative(covariance_scale, "covariance_scale")
        if not self.covariance_scale > 0:
            raise UsageError(f"covariance_scale: expected a number > 0, got {covariance_scale!r}")
        self.grid = Grid(problem.times, problem.x)
        self.training: dict[str, Any] = {}  # how it was trained (`save`; set by `load`)

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
        variance = self.covariance_scale * (members.var(0, unbiased=True) + self.noise_variance)
        inside = gaussian_interval_coverage(members.mean(0), variance, data.targets, level)
        return float(inside.double().mean())

    def predict(self, data: OperatorData) -> list[GaussianPrediction]:
        """One Posterior (a GaussianPrediction with a LowRankCovariance) on grid (times, x) per
        sample of `data`, in order."""
        members = self.member_predictions(data)
        mean = members.mean(0)
        scale = self.covariance_scale
        deviations = (members - mean) * math.sqrt(scale / (len(self.models) - 1))
        size = self.grid.size
        out = []
        for i in range(len(data)):
            factor = deviations[:, i].reshape(len(self.models), size).T
            diagonal = torch.full((size,), scale * self.noise_variance, dtype=torch.float64)
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

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, training: dict[str, Any] | None = None) -> None:
        """One checkpoint file (atomic, `probcons.checkpoint.save_checkpoint`): every member's
        weights (state["members"][e], the FNO's) and hyperparameters (its FNO's and, for BOON,
        the boundary correction's), s, c, the problem (name, n_x, n_times) and `training`, plain
        data on how it was trained (objective, configs, validation history, seconds; default
        the ensemble's own `training`)."""
        states, members = [], []
        for model in self.models:
            operator = model.operator if isinstance(model, BoonFNO1d) else model
            states.append({k: v.detach().cpu() for k, v in operator.state_dict().items()})
            members.append(model.hyperparameters)
        hyperparameters = {
            "backbone": CHECKPOINT_KIND,
            "kind": self.kind,
            "members": members,
            "problem": {
                "name": self.problem.name,
                "n_x": self.problem.n_x,
                "n_times": self.problem.n_times,
            },
        }
        extra = {
            "noise_variance": float(self.noise_variance),
            "covariance_scale": float(self.covariance_scale),
            "training": dict(self.training if training is None else training),
        }
        save_checkpoint(path, {"members": states}, hyperparameters, extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BoonEnsemble:
        """The ensemble `save` wrote to `path` (weights_only=True; float32 members, eval mode)."""
        payload = load_checkpoint(path)
        hyperparameters, extra = payload["hyperparameters"], payload["extra"]
        if hyperparameters.get("backbone") != CHECKPOINT_KIND:
            raise UsageError(
                f"checkpoint: {str(path)!r} holds no {CHECKPOINT_KIND} (backbone "
                f"{hyperparameters.get('backbone')!r})"
            )
        settings = hyperparameters["problem"]
        problem = make_problem(settings["name"], n_x=settings["n_x"], n_times=settings["n_times"])
        models = []
        for member, state in zip(
            hyperparameters["members"], payload["state"]["members"], strict=True
        ):
            options = {key: value for key, value in member.items() if key != "boundary"}
            operator = build_operator(options)
            operator.to(next(iter(state.values())).dtype)  # members saved in float64 stay so
            operator.load_state_dict(state)
            if "boundary" in member:
                if not isinstance(operator, FNO1d):
                    raise UsageError(f"checkpoint: {str(path)!r} holds a BOON member not 1-D")
                model = BoonFNO1d.from_hyperparameters(operator, member["boundary"])
            else:
                model = operator
            models.append(model.eval())
        ensemble = cls(
            models,
            hyperparameters["kind"],
            problem,
            extra["noise_variance"],
            extra.get("covariance_scale", 1.0),
        )
        ensemble.training = dict(extra.get("training", {}))
        return ensemble


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
