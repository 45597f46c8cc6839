"""Training through the constraint: the ANP scored by its conservation-conditioned posterior.

Post-hoc ProbConserv moves each latent draw's mean by Sigma G^T (G Sigma G^T)^-1 (b - G mu):
the correction goes where the decoder's variance is. This objective trains that variance (and
the mean) for the posterior that is actually used. Per training function p (B per step):

    slices   J times t_j (one uniform time per stratum of t_range, sorted), each a whole uniform
             x-slice of n_x points (ends included), so the slice's mass row is available:
             w . u(t_j, .) = U(t_j),  w the trapezoid weights (the benchmark's rule), U exact
    decode   S draws z_s ~ p(z | C) (reparametrised), decoder (mu_s, sigma_s^2) on the slices
    condition  per draw and slice, exactly (sigma_G = 0; float64):
             s = sum_i w_i^2 v_i,   mu~ = mu + v w (U - w . mu) / s,   v~ = v - (v w)^2 / s
    score    the truth u under the equal-weight mixture of N(mu~_s, v~_s), pointwise:
             "constrained-nll":  -log (1/S) sum_s N(u | mu~_s, v~_s)
             "constrained-crps": CRPS of the mixture (closed form, `mixture_crps`)
             averaged over the B J n_x points.

The conditioning is `probcons.conditioning`'s diagonal update with one row per slice, written
for a batch of (function, draw, slice) triples so that one step is a few tensor operations;
tests check it against `probcons.condition`. `ConstrainedANPTask` runs it on the training engine
(resume, DDP: every rank draws the global batch and keeps its functions; the draws of z are the
single process's through `distributed.ShardedNoise`), validates on the same conditioned score
and can start from a trained checkpoint (`TrainingOptions.init`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from probcons import distributed
from probcons.backbones.anp import (
    ANPConfig,
    ANPNetwork,
    AttentiveNeuralProcess,
    Batch,
    load_anp_network,
)
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.problems import sample_contexts
from probcons.softc import softc_loss, softc_penalty
from probcons.training.data import keep_contexts
from probcons.training.trainer import (
    CONSTRAINED_OBJECTIVES,
    VALIDATION_SEED_OFFSET,
    Z_90,
    ANPTask,
    TrainingObjective,
    TrainingOptions,
)
from probcons.validation import check_choice, check_positive_int, describe

VARIANCE_FLOOR = 1e-12
"""Smallest conditioned marginal variance the score divides by (float64): a point that carries
nearly all of its slice's variance is left with v~ ~ 0 by the exact update."""
SQRT_2PI = math.sqrt(2 * math.pi)


class SliceBatch(NamedTuple):
    """B functions with targets on whole x-slices.

    batch: the ANP's `Batch` (float32), targets (B, J n_x, 2) in slice-major order;
    truth (B, J, n_x), mass (B, J) float64 (U(t_j) of each function); weights (n_x,) float64,
    the trapezoid weights of the x-slice; times (B, J) float64.
    """

    batch: Batch
    truth: torch.Tensor
    mass: torch.Tensor
    weights: torch.Tensor
    times: torch.Tensor

    def functions(self, index) -> SliceBatch:
        """The functions `index` selects (weights are shared)."""
        return SliceBatch(
            self.batch.functions(index),
            self.truth[index],
            self.mass[index],
            self.weights,
            self.times[index],
        )


def stratified_times(
    t_range: tuple[float, float], n_slices: int, generator: torch.Generator
) -> torch.Tensor:
    """(n_slices,) float64 times, one uniform in each of n_slices equal strata of t_range (sorted)."""
    lo, hi = (float(v) for v in t_range)
    width = (hi - lo) / n_slices
    return lo + width * (
        torch.arange(n_slices, dtype=torch.float64)
        + torch.rand(n_slices, generator=generator, dtype=torch.float64)
    )


def slice_batch(
    problem,
    parameters: torch.Tensor,
    generator: torch.Generator,
    n_slices: int,
    n_points: int,
    n_strata: int = 10,
    per_stratum: int = 10,
) -> SliceBatch:
    """Contexts (as `probcons.training.data.sample_batch`) and J = n_slices whole x-slices of
    n_points points per function, with the exact solution and mass; all draws from `generator`."""
    parameters = torch.as_tensor(parameters, dtype=torch.float64).reshape(-1)
    if parameters.numel() == 0:
        raise UsageError(f"parameters: expected at least one value, got {describe(parameters)}")
    check_positive_int(n_slices, "n_slices")
    check_positive_int(n_points, "n_points")
    x = torch.linspace(*(float(v) for v in problem.x_range), n_points, dtype=torch.float64)
    context_tx, context_u, target_tx, truth, mass, times = [], [], [], [], [], []
    for p in parameters.tolist():
        contexts = sample_contexts(problem, p, generator, n_strata, per_stratum)
        t = stratified_times(problem.t_range, n_slices, generator)
        grid = Grid(t, x)
        tt, xx = grid.mesh()
        context_tx.append(contexts.points())
        context_u.append(contexts.u)
        target_tx.append(grid.points())
        truth.append(problem.solution(tt, xx, p))
        mass.append(problem.mass(t, p))
        times.append(t)
    weights = Grid(times[0], x).trapezoid_weights()
    as32 = torch.float32
    batch = Batch(
        torch.stack(context_tx).to(as32),
        torch.stack(context_u).to(as32),
        torch.stack(target_tx).to(as32),
        torch.stack(truth).reshape(len(truth), -1).to(as32),
    )
    return SliceBatch(batch, torch.stack(truth), torch.stack(mass), weights, torch.stack(times))


def condition_slices(
    mean: torch.Tensor, variance: torch.Tensor, weights: torch.Tensor, mass: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact update of independent N(mean, diag variance) x-slices on w . u = U per slice.

    mean, variance (..., n_x) float64, variance > 0; weights (n_x,); mass (...,) ->
    (mu~, v~), each (..., n_x): s = sum w^2 v, mu~ = mu + v w (U - w . mu) / s,
    v~ = v - (v w)^2 / s (clamped at 0 against round-off). Differentiable in mean and variance.
    """
    spread = variance * weights
    system = (spread * weights).sum(-1, keepdim=True)
    residual = mass[..., None] - (mean * weights).sum(-1, keepdim=True)
    conditioned_mean = mean + spread * (residual / system)
    conditioned_variance = (variance - spread.square() / system).clamp(min=0)
    return conditioned_mean, conditioned_variance


def mixture_nll(means: torch.Tensor, variances: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """-log (1/S) sum_s N(truth | means_s, variances_s) pointwise: (S, *shape), (*shape) -> (*shape).

    Variances below VARIANCE_FLOOR are raised to it."""
    variances = variances.clamp(min=VARIANCE_FLOOR)
    log_pdf = -0.5 * ((truth - means).square() / variances + torch.log(2 * math.pi * variances))
    return -(torch.logsumexp(log_pdf, dim=0) - math.log(means.shape[0]))


def expected_absolute(location: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """E|X| for X ~ N(location, variance): sigma (z (2 Phi(z) - 1) + 2 phi(z)), z = location / sigma."""
    scale = variance.clamp(min=VARIANCE_FLOOR).sqrt()
    z = location / scale
    density = torch.exp(-0.5 * z.square()) / SQRT_2PI
    return scale * (z * (2 * torch.special.ndtr(z) - 1) + 2 * density)


def mixture_crps(means: torch.Tensor, variances: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """CRPS of the equal-weight mixture of N(means_s, variances_s) at truth, pointwise, closed form:

    CRPS = (1/S) sum_s E|X_s - y| - (1 / 2S^2) sum_{s,r} E|X_s - X_r|,
    X_s - y ~ N(mu_s - y, v_s), X_s - X_r ~ N(mu_s - mu_r, v_s + v_r) (independent components).
    means, variances (S, *shape), truth (*shape) -> (*shape).
    """
    to_truth = expected_absolute(means - truth, variances).mean(0)
    between = expected_absolute(
        means[:, None] - means[None, :], variances[:, None] + variances[None, :]
    ).mean((0, 1))
    return to_truth - 0.5 * between


class ConditionedDraws(NamedTuple):
    """Per draw and slice: conditioned means and variances (B, S, J, n_x) float64, and the
    decoder's own (unconditioned) ones; z (B, S, d) the draws."""

    means: torch.Tensor
    variances: torch.Tensor
    prior_means: torch.Tensor
    prior_variances: torch.Tensor
    z: torch.Tensor


def conditioned_draws(
    network: ANPNetwork, slices: SliceBatch, samples: int, noise: torch.Tensor | None = None
) -> ConditionedDraws:
    """Decode S = `samples` draws z ~ p(z | C) on the slices and condition each exactly.

    noise: standard normal (B, S, d) for z = loc + scale * noise (validation, fixed draws); None
    draws z at the Pyro sample site "z" (training: torch's global generator, sharded under DDP).
    """
    batch = slices.batch
    loc, scale = network.encode_latent(batch.context_tx, batch.context_u)
    shape = (loc.shape[0], samples, loc.shape[1])
    if noise is None:
        z = pyro.sample("z", dist.Normal(loc[:, None].expand(shape), scale[:, None].expand(shape)))
    else:
        z = loc[:, None] + scale[:, None] * noise
    representation, queries = network.encode_deterministic(
        batch.context_tx, batch.context_u, batch.target_tx, batch.drop_deterministic
    )
    mean, std = network.decode(network.decode_hidden(representation, queries)[:, None], z)
    n_functions, n_slices, n_x = slices.truth.shape
    mean = mean.double().reshape(n_functions, samples, n_slices, n_x)
    variance = std.double().square().reshape(n_functions, samples, n_slices, n_x)
    conditioned_mean, conditioned_variance = condition_slices(
        mean, variance, slices.weights, slices.mass[:, None]
    )
    return ConditionedDraws(conditioned_mean, conditioned_variance, mean, variance, z)


class ConstrainedTerms(NamedTuple):
    """loss: the objective (scalar); nll, crps: the conditioned mixture's pointwise NLL and
    CRPS (means over points); prior_nll: the unconditioned mixture's NLL; conservation:
    max |w . mu~ - U| over draws and slices; draws: the `ConditionedDraws`."""

    loss: torch.Tensor
    nll: torch.Tensor
    crps: torch.Tensor
    prior_nll: torch.Tensor
    conservation: torch.Tensor
    draws: ConditionedDraws


def constrained_loss(
    network: ANPNetwork,
    slices: SliceBatch,
    samples: int,
    objective: str = "constrained-nll",
    noise: torch.Tensor | None = None,
) -> ConstrainedTerms:
    """The conditioned mixture's mean pointwise NLL ("constrained-nll") or CRPS
    ("constrained-crps") of the truth on the slices (module docstring); the other is reported."""
    check_choice(objective, "objective", CONSTRAINED_OBJECTIVES)
    check_positive_int(samples, "samples")
    draws = conditioned_draws(network, slices, samples, noise)
    truth = slices.truth  # (B, J, n_x); the draws go first: one mixture per point
    means, variances = draws.means.transpose(0, 1), draws.variances.transpose(0, 1)
    nll = mixture_nll(means, variances, truth).mean()
    prior_nll = mixture_nll(
        draws.prior_means.transpose(0, 1), draws.prior_variances.transpose(0, 1), truth
    ).mean()
    if objective == "constrained-crps":
        crps = mixture_crps(means, variances, truth).mean()
        loss = crps
    else:
        with torch.no_grad():
            crps = mixture_crps(means, variances, truth).mean()
        loss = nll
    with torch.no_grad():
        defect = (draws.means * slices.weights).sum(-1) - slices.mass[:, None]
    return ConstrainedTerms(loss, nll, crps, prior_nll, defect.abs().max(), draws)


class ConstrainedObjective(TrainingObjective):
    """`constrained_loss` (+ the SoftC penalty when softc_lambda > 0) as a module's forward, so
    that DistributedDataParallel can wrap it; `network` is what is trained (the attributes are
    `TrainingObjective`'s, the forward is this objective's)."""

    def forward(self, slices: SliceBatch, parameters: torch.Tensor, collocation: torch.Tensor):
        options = self.options
        with distributed.ShardedNoise(["z"]):
            terms = constrained_loss(
                self.network, slices, options.marginal_samples, options.objective
            )
        loss = terms.loss.float()
        penalty = torch.zeros(())
        if options.softc_lambda > 0:  # the residual of the first draw's mean
            tx = collocation.detach().requires_grad_(True)
            batch = slices.batch
            mean = self.network.mean_at(batch.context_tx, batch.context_u, tx, terms.draws.z[:, 0])
            penalty = softc_penalty(self.problem, parameters, mean, tx)
            loss = softc_loss(loss, penalty, options.softc_lambda)
        return loss, terms, penalty


def sparse_contexts(batch: Batch, options: TrainingOptions, generator) -> Batch:
    """As `probcons.training.trainer.training_batch`: a random k of each function's contexts, k
    uniform in min_contexts..C (if min_contexts is set), and the deterministic-dropout mask."""
    n_context = batch.context_u.shape[1]
    if options.min_contexts is not None and options.min_contexts < n_context:
        k = int(torch.randint(options.min_contexts, n_context + 1, (), generator=generator))
        batch = keep_contexts(batch, k, generator)
    if options.deterministic_dropout > 0:
        drop = torch.rand(batch.context_u.shape[0], generator=generator)
        batch = batch._replace(drop_deterministic=drop < options.deterministic_dropout)
    return batch


def collocation_points(problem, n_functions: int, n_points: int, generator) -> torch.Tensor:
    """(B, n_points, 2) float32 [t, x] uniform over the domain (SoftC's collocation points)."""
    unit = torch.rand(n_functions, n_points, 2, generator=generator, dtype=torch.float64)
    lo = torch.tensor([problem.t_range[0], problem.x_range[0]], dtype=torch.float64)
    hi = torch.tensor([problem.t_range[1], problem.x_range[1]], dtype=torch.float64)
    return (lo + (hi - lo) * unit).float()


class ConstrainedValidation:
    """Held-out functions (fixed by the seed, disjoint from training) on slices, and the
    conditioned mixture's scores over `validation_samples` fixed draws."""

    def __init__(self, problem, options: TrainingOptions):
        self.seed = options.seed + VALIDATION_SEED_OFFSET
        generator = torch.Generator().manual_seed(self.seed)
        parameters = problem.sample_parameters(options.n_validation, generator)
        self.slices = slice_batch(
            problem,
            parameters,
            generator,
            options.slice_times,
            options.slice_points,
            options.n_strata,
            options.per_stratum,
        )
        self.samples = options.validation_samples
        self.objective = options.objective

    @torch.no_grad()
    def evaluate(self, anp: AttentiveNeuralProcess) -> dict[str, float]:
        """val_nll, val_crps, val_mse and val_coverage_90 of the conditioned mixture (moments
        by the law of total variance), val_prior_nll of the unconditioned one, val_conservation
        = max |w . mu~ - U|."""
        net = anp.network
        was_training = net.training
        net.eval()
        generator = torch.Generator().manual_seed(self.seed)
        n_functions = self.slices.truth.shape[0]
        noise = torch.randn(
            n_functions, self.samples, net.config.latent_dim, generator=generator
        ).to(net.input_center.dtype)
        terms = constrained_loss(net, self.slices, self.samples, self.objective, noise)
        net.train(was_training)
        means, variances = terms.draws.means, terms.draws.variances
        mean = means.mean(1)
        total = variances.mean(1) + means.var(1, unbiased=False)
        truth = self.slices.truth
        inside = (truth - mean).abs() <= Z_90 * total.sqrt()
        return {
            "val_nll": float(terms.nll),
            "val_crps": float(terms.crps),
            "val_mse": float((mean - truth).square().mean()),
            "val_coverage_90": float(inside.double().mean()),
            "val_prior_nll": float(terms.prior_nll),
            "val_conservation": float(terms.conservation),
        }


def load_initial_weights(network: ANPNetwork, path: str | Path) -> None:
    """Copy the weights of the checkpoint at `path` into `network` (same ANP hyperparameters)."""
    if not Path(path).is_file():
        raise UsageError(f"init: expected an ANP checkpoint file, got {str(path)!r}")
    initial, _ = load_anp_network(path)
    if initial.config != network.config:
        raise UsageError(
            f"init: {str(path)!r} holds an ANP with other hyperparameters "
            f"({initial.config.to_dict()}), expected {network.config.to_dict()}"
        )
    network.load_state_dict(initial.state_dict())


def init_config(path: str | Path) -> ANPConfig:
    """The ANP hyperparameters of the checkpoint at `path` (for a run started from it)."""
    if not Path(path).is_file():
        raise UsageError(f"init: expected an ANP checkpoint file, got {str(path)!r}")
    return load_anp_network(path)[0].config


class ConstrainedANPTask(ANPTask):
    """ANP training on the conditioned posterior as a training-engine task.

    As `ANPTask` (pool, epoch permutations, checkpoints, resume, DDP sharding, best.pt), but a
    step's batch is a `SliceBatch` (with min_contexts, a random k of its contexts; and, with
    SoftC, n_collocation uniform points per function) from `rng_data`, the loss is `ConstrainedObjective`'s, and best.pt is chosen by the
    validation set's conditioned NLL ("constrained-nll") or CRPS ("constrained-crps").
    """

    shown_logs = (("loss", 4), ("nll", 3))

    def __init__(self, problem, config: ANPConfig, options: TrainingOptions, best_path: Path):
        check_choice(options.objective, "objective", CONSTRAINED_OBJECTIVES)
        super().__init__(problem, config, options, best_path)
        self.selection_key = "val_crps" if options.objective == "constrained-crps" else "val_nll"
        if self.world.is_main:
            self.validation = ConstrainedValidation(problem, options)

    def build(self) -> nn.Module:
        anp = AttentiveNeuralProcess(self.config)
        if self.options.init is not None:
            load_initial_weights(anp.network, self.options.init)
        return ConstrainedObjective(anp, self.problem, self.options)

    def loss(self, network: nn.Module, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        options = self.options
        parameters = self.step_parameters(step)
        slices = slice_batch(
            self.problem,
            parameters,
            self.rng_data,
            options.slice_times,
            options.slice_points,
            options.n_strata,
            options.per_stratum,
        )
        slices = slices._replace(batch=sparse_contexts(slices.batch, options, self.rng_data))
        collocation = collocation_points(
            self.problem, len(parameters), options.n_collocation, self.rng_data
        )
        if self.world.is_distributed:  # every rank drew the global batch; keep this rank's rows
            slices = slices.functions(self.rows)
            parameters, collocation = parameters[self.rows], collocation[self.rows]
        loss, terms, penalty = network(slices, parameters, collocation)
        return loss, {
            "loss": float(loss.detach()),
            "nll": float(terms.nll.detach()),
            "crps": float(terms.crps.detach()),
            "prior_nll": float(terms.prior_nll.detach()),
            "conservation": float(terms.conservation),
            "softc": float(penalty.detach()),
        }


__all__ = [
    "ConstrainedANPTask",
    "ConstrainedObjective",
    "ConstrainedValidation",
    "SliceBatch",
    "condition_slices",
    "conditioned_draws",
    "constrained_loss",
    "init_config",
    "mixture_crps",
    "mixture_nll",
    "slice_batch",
]
