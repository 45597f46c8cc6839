"""Meta-training of an ANP over a problem's parameter range, with checkpoints and resume.

One step: B functions from a fixed pool of `n_functions` parameters (shuffled each epoch),
fresh contexts and targets per function, one draw of z from the guide, loss

    loss = -ELBO / T  (KL weight annealed 0 -> 1 over `kl_warmup_steps`, free bits per latent
           dimension or a capacity target, optionally beta-NLL weights on the targets)
           [+ softc_lambda * mean(r^2) for SoftC, r the PDE residual of the mean]

and an Adam step with a cosine learning-rate decay. Every `validate_every` steps the
predictive NLL of held-out functions (z ~ p(z | C), `validation_samples` draws mixed) is
measured and the best weights are written to `best.pt`; every `checkpoint_every` steps the
full state (weights, optimizer, random states, epoch order) goes to `last.pt`, atomically,
so `resume=True` continues an interrupted run exactly where it stopped. The loop is the
training engine's (`probcons.training.engine.train`); `ANPTask` says what it trains.

Under torchrun (a process group of K ranks, see `probcons.distributed`) every rank draws the
same global batch of B functions and trains on its B / K rows through DistributedDataParallel;
the averaged gradient is that of the global batch, so K ranks follow the single process's run
(to float rounding) and its checkpoints, written by rank 0 only, resume under any K.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probcons import distributed
from probcons.backbones.anp import (
    ANPConfig,
    AttentiveNeuralProcess,
    LossTerms,
    elbo_loss,
    marginal_likelihood_loss,
)
from probcons.checkpoint import save_checkpoint
from probcons.errors import UsageError
from probcons.mixture import mixture_moments
from probcons.softc import softc_loss, softc_penalty
from probcons.training.data import keep_contexts, sample_batch
from probcons.training.engine import Clock, TrainingTask, cosine_decay
from probcons.validation import (
    check_choice,
    check_in_interval,
    check_nonnegative,
    check_positive_int,
)

BEST = "best.pt"
LAST = "last.pt"
VALIDATION_SEED_OFFSET = 1_000_003
"""Validation functions come from seed + this offset, disjoint from the training stream."""
Z_90 = 1.6448536269514722
"""Standard normal quantile at 0.95: the central 90 % interval is mean +- Z_90 sd."""
OBJECTIVES = ("elbo", "marginal-likelihood", "constrained-nll", "constrained-crps")
CONSTRAINED_OBJECTIVES = ("constrained-nll", "constrained-crps")
"""Objectives scored on the conservation-conditioned posterior (`probcons.training.constrained`)."""
FINAL_LEARNING_RATE_FRACTION = 0.1
"""The cosine schedule decays the learning rate to this fraction of its initial value."""


@dataclass(frozen=True)
class TrainingOptions:
    """How the ANP is trained (stored in every checkpoint).

    n_functions: training functions (parameters) in the pool, the paper used 10,000;
    n_target: random target points per function; free_bits: nats per latent dimension
    below which the batch-mean KL is not penalised; kl_warmup_steps: KL annealing length;
    softc_lambda: weight of the SoftC residual penalty (0 = plain ANP), evaluated at the first
    n_collocation targets of each function; likelihood_beta, kl_capacity: see
    `probcons.backbones.anp.elbo_loss`; deterministic_dropout: probability per function that
    the decoder gets no deterministic-path representation, so that it must read the function
    from z; min_contexts: if set, each batch keeps a random subset of k of the n_strata *
    per_stratum contexts of every function, k uniform in min_contexts..n_strata * per_stratum
    (sparse context sets leave the function uncertain, which is what the latent is for).
    objective: "elbo" (`elbo_loss`, with the KL options above) or "marginal-likelihood"
    (`marginal_likelihood_loss` over marginal_samples prior draws per function; the KL options
    and likelihood_beta do not apply to it), or "constrained-nll" / "constrained-crps"
    (`probcons.training.constrained`: the decoder on slice_times whole x-slices of slice_points
    points per function, each of marginal_samples prior draws conditioned exactly on the
    slice's conservation row, the truth scored by the conditioned mixture's pointwise NLL or
    CRPS; n_target, the KL options and likelihood_beta do not apply). init: a checkpoint
    whose weights start the run (fine-tuning; its ANP hyperparameters must be the run's).
    """

    epochs: int = 2
    n_functions: int = 10_000
    batch_size: int = 16
    n_target: int = 200
    n_strata: int = 10
    per_stratum: int = 10
    learning_rate: float = 1e-3
    kl_warmup_steps: int = 500
    free_bits: float = 0.05
    softc_lambda: float = 0.0
    n_collocation: int = 32
    deterministic_dropout: float = 0.0
    kl_capacity: float = 0.0
    likelihood_beta: float = 0.0
    min_contexts: int | None = None
    objective: str = "elbo"
    marginal_samples: int = 8
    slice_times: int = 4
    slice_points: int = 101
    init: str | None = None
    n_validation: int = 64
    validation_samples: int = 8
    validate_every: int = 125
    checkpoint_every: int = 125
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "n_functions",
            "batch_size",
            "n_target",
            "n_strata",
            "per_stratum",
            "n_validation",
            "n_collocation",
            "validation_samples",
            "marginal_samples",
            "slice_times",
            "validate_every",
            "checkpoint_every",
        ):
            check_positive_int(getattr(self, name), name)
        if isinstance(self.kl_warmup_steps, bool) or not isinstance(self.kl_warmup_steps, int):
            raise UsageError(
                f"kl_warmup_steps: expected an integer >= 0, got {self.kl_warmup_steps!r}"
            )
        if self.kl_warmup_steps < 0:
            raise UsageError(
                f"kl_warmup_steps: expected an integer >= 0, got {self.kl_warmup_steps!r}"
            )
        check_in_interval(self.learning_rate, "learning_rate", 0, math.inf, include_low=False)
        check_nonnegative(self.free_bits, "free_bits")
        check_nonnegative(self.kl_capacity, "kl_capacity")
        check_in_interval(self.likelihood_beta, "likelihood_beta", 0, 1)
        check_in_interval(
            self.deterministic_dropout, "deterministic_dropout", 0, 1, include_high=False
        )
        if self.min_contexts is not None:
            check_positive_int(self.min_contexts, "min_contexts")
            if self.min_contexts > self.n_strata * self.per_stratum:
                raise UsageError(
                    f"min_contexts: expected at most n_strata * per_stratum = "
                    f"{self.n_strata * self.per_stratum}, got {self.min_contexts}"
                )
        check_nonnegative(self.softc_lambda, "softc_lambda")
        check_choice(self.objective, "objective", OBJECTIVES)
        if self.objective != "elbo" and (self.likelihood_beta or self.kl_capacity):
            raise UsageError(
                f"likelihood_beta, kl_capacity: expected 0 with objective={self.objective!r}"
                f" (they weight the ELBO), got {self.likelihood_beta!r}, {self.kl_capacity!r}"
            )
        check_positive_int(self.slice_points, "slice_points")
        if self.slice_points < 2:
            raise UsageError(
                f"slice_points: expected at least 2 points per x-slice, got {self.slice_points}"
            )
        if self.init is not None and (not isinstance(self.init, str) or not self.init):
            raise UsageError(f"init: expected a checkpoint path or None, got {self.init!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"seed: expected an integer >= 0, got {self.seed!r}")
        if self.batch_size > self.n_functions:
            raise UsageError(
                f"batch_size: expected at most n_functions={self.n_functions}, got {self.batch_size}"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.n_functions // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainingResult:
    """Paths of the best and last checkpoints, the best validation NLL, the training time
    (wall seconds and process CPU seconds, summed over resumed sessions)."""

    best_path: Path
    last_path: Path
    best_validation: float
    train_seconds: float
    cpu_seconds: float
    steps: int
    history: list[dict[str, float]]


def hyperparameters(problem, config: ANPConfig, options: TrainingOptions) -> dict[str, Any]:
    """What a checkpoint needs to rebuild the model and to say how it was trained."""
    return {"problem": problem.name, "anp": config.to_dict(), "training": options.to_dict()}


def learning_rate(options: TrainingOptions, step: int) -> float:
    """Cosine decay from learning_rate to FINAL_LEARNING_RATE_FRACTION of it over total_steps."""
    progress = min(step / max(options.total_steps, 1), 1.0)
    return cosine_decay(options.learning_rate, progress, FINAL_LEARNING_RATE_FRACTION)


def kl_weight(options: TrainingOptions, step: int) -> float:
    """KL annealing: linear from 0 to 1 over kl_warmup_steps (1 from the start if 0)."""
    if options.kl_warmup_steps == 0:
        return 1.0
    return min(1.0, step / options.kl_warmup_steps)


def sharded_elbo_loss(
    anp: AttentiveNeuralProcess,
    batch,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    kl_capacity: float = 0.0,
    likelihood_beta: float = 0.0,
) -> LossTerms:
    """`elbo_loss` on this rank's shard of a global batch, for DDP's gradient averaging.

    Per rank r: [ -mean_{b in r} log p(u_b | z_b) + kl_weight * sum_d max(KL_d, free_bits) ] / T
    with KL_d the global batch-mean KL (`distributed.global_mean`; also the mean of the beta-NLL
    weights) and z_b the single process's draws (`distributed.ShardedNoise`); the mean over
    ranks of the gradients is the gradient of `elbo_loss` on the global batch.
    """
    with distributed.ShardedNoise(["z"]):
        return elbo_loss(
            anp,
            batch,
            kl_weight,
            free_bits,
            batch_mean=lambda kl: distributed.global_mean(kl.mean(0)),
            kl_capacity=kl_capacity,
            likelihood_beta=likelihood_beta,
        )


def training_loss(
    anp: AttentiveNeuralProcess, problem, batch, parameters, options: TrainingOptions, step: int
):
    """(loss, terms): the annealed, free-bits ELBO loss (or the marginal-likelihood loss, by
    options.objective), plus the SoftC penalty when lambda > 0.

    In a process group of several ranks, `batch` and `parameters` are this rank's shard and the
    ELBO is `sharded_elbo_loss`; the marginal likelihood has no batch-wide term, and its draws
    are the single process's (`distributed.ShardedNoise`); the SoftC penalty is a mean over
    functions already.
    """
    if options.objective == "marginal-likelihood":
        with distributed.ShardedNoise(["z"]):
            terms = marginal_likelihood_loss(anp, batch, options.marginal_samples)
    else:
        loss_function = sharded_elbo_loss if distributed.world().is_distributed else elbo_loss
        terms = loss_function(
            anp,
            batch,
            kl_weight=kl_weight(options, step),
            free_bits=options.free_bits,
            kl_capacity=options.kl_capacity,
            likelihood_beta=options.likelihood_beta,
        )
    loss = terms.loss
    penalty = torch.zeros(())
    if options.softc_lambda > 0:
        # Collocation points: the first n_collocation targets (uniform random points already).
        tx = batch.target_tx[:, : options.n_collocation].detach().requires_grad_(True)
        mean = anp.network.mean_at(
            batch.context_tx, batch.context_u, tx, terms.z, batch.drop_deterministic
        )
        penalty = softc_penalty(problem, parameters, mean, tx)
        loss = softc_loss(loss, penalty, options.softc_lambda)
    return loss, terms, penalty


def training_batch(problem, parameters, generator: torch.Generator, options: TrainingOptions):
    """One step's `Batch`: stratified contexts (a random subset of k per function if
    min_contexts is set), targets, and the deterministic-dropout mask (if deterministic_dropout
    > 0), all from `generator` so that every rank of a process group draws the same global batch."""
    batch = sample_batch(
        problem, parameters, generator, options.n_target, options.n_strata, options.per_stratum
    )
    n_context = batch.context_u.shape[1]
    if options.min_contexts is not None and options.min_contexts < n_context:
        k = int(torch.randint(options.min_contexts, n_context + 1, (), generator=generator))
        batch = keep_contexts(batch, k, generator)
    if options.deterministic_dropout > 0:
        drop = torch.rand(len(parameters), generator=generator) < options.deterministic_dropout
        batch = batch._replace(drop_deterministic=drop)
    return batch


class TrainingObjective(nn.Module):
    """`training_loss` as a module's forward, so that DistributedDataParallel can wrap it."""

    def __init__(self, anp: AttentiveNeuralProcess, problem, options: TrainingOptions):
        super().__init__()
        self.network = anp.network
        self.anp = anp
        self.problem = problem
        self.options = options

    def forward(self, batch, parameters, step: int):
        return training_loss(self.anp, self.problem, batch, parameters, self.options, step)


class ValidationSet:
    """Held-out functions (fixed by the seed) and the predictive NLL of their targets."""

    def __init__(self, problem, options: TrainingOptions):
        generator = torch.Generator().manual_seed(options.seed + VALIDATION_SEED_OFFSET)
        self.parameters = problem.sample_parameters(options.n_validation, generator)
        self.batch = sample_batch(
            problem,
            self.parameters,
            generator,
            options.n_target,
            options.n_strata,
            options.per_stratum,
        )
        self.samples = options.validation_samples
        self.seed = options.seed + VALIDATION_SEED_OFFSET

    @torch.no_grad()
    def evaluate(self, anp: AttentiveNeuralProcess) -> dict[str, float]:
        """val_nll and val_mse of `predictive_scores` on the held-out functions."""
        net = anp.network
        was_training = net.training
        net.eval()
        generator = torch.Generator().manual_seed(self.seed)
        scores = predictive_scores(net, self.batch, self.samples, generator)
        net.train(was_training)
        return {"val_nll": scores["nll"], "val_mse": scores["mse"]}


@torch.no_grad()
def predictive_draws(network, batch, samples: int, generator: torch.Generator):
    """Decoder means and standard deviations at the targets for `samples` draws z_s ~ p(z | C),
    each (S, B, T) in the network's dtype."""
    loc, scale = network.encode_latent(batch.context_tx, batch.context_u)
    noise = torch.randn(samples, *loc.shape, generator=generator, dtype=loc.dtype)
    representation, queries = network.encode_deterministic(
        batch.context_tx, batch.context_u, batch.target_tx
    )
    hidden = network.decode_hidden(representation, queries)
    return network.decode(hidden, loc + scale * noise)


def mixture_log_likelihood(
    means: torch.Tensor,
    stds: torch.Tensor,
    targets: torch.Tensor,
    variance_scale: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """log (1/S) sum_s N(targets | means_s, variance_scale * stds_s^2) per target; means, stds
    (S, *shape), targets (*shape) -> (*shape), in the inputs' dtype; variance_scale a number or
    a tensor that broadcasts against targets (one scale per function: (B, 1))."""
    variance = variance_scale * stds**2
    log_pdf = -0.5 * ((targets - means) ** 2 / variance + torch.log(2 * math.pi * variance))
    return torch.logsumexp(log_pdf, dim=0) - math.log(means.shape[0])


def mixture_scores(
    means: torch.Tensor,
    stds: torch.Tensor,
    targets: torch.Tensor,
    variance_scale: float | torch.Tensor = 1.0,
) -> dict[str, float]:
    """nll (mean over targets), mse of the mixture mean, latent_share (between-sample variance
    / total, summed over targets) and coverage_90 (targets inside the central 90 % interval of
    N(mixture mean, total variance)) of the mixture with decoder variances scaled."""
    mixture_mean, between, total = mixture_moments(means, stds, variance_scale)
    inside = (targets - mixture_mean).abs() <= Z_90 * total.sqrt()
    log_likelihood = mixture_log_likelihood(means, stds, targets, variance_scale)
    return {
        "nll": float(-log_likelihood.mean()),
        "mse": float(((mixture_mean - targets) ** 2).mean()),
        "latent_share": float(between.sum() / total.sum()),
        "coverage_90": float(inside.float().mean()),
    }


def predictive_scores(
    network, batch, samples: int, generator: torch.Generator, variance_scale: float = 1.0
) -> dict[str, float]:
    """`mixture_scores` of the ANP's predictive mixture over `samples` draws z_s ~ p(z | C) at
    the targets (decoder variances times `variance_scale`)."""
    means, stds = predictive_draws(network, batch, samples, generator)
    return mixture_scores(means, stds, batch.target_u, variance_scale)


def _check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """The saved run must match the requested one except for the number of epochs (options
    added since the run was saved take their defaults, as when it was trained)."""
    training = TrainingOptions.from_dict(saved["training"]).to_dict()
    a = {**saved, "training": {**training, "epochs": None}}
    b = {**current, "training": {**current["training"], "epochs": None}}
    if a != b:
        differing = sorted(
            key
            for section in ("anp", "training")
            for key in set(a[section]) | set(b[section])
            if a[section].get(key) != b[section].get(key)
        )
        if a["problem"] != b["problem"]:
            differing.insert(0, "problem")
        raise UsageError(
            f"resume: {str(path)!r} was trained with other settings ({', '.join(differing)}); "
            "use the same arguments or another --out"
        )


class ANPTask(TrainingTask):
    """ANP meta-training as a training-engine task (`probcons.training.engine`).

    The built module is the `TrainingObjective`; its `network` is what Adam optimizes and what
    checkpoints hold under "network" (the key `probcons.backbones.anp.load_anp_network` reads).
    Step s: batch positions s mod S of the epoch's permutation of the pool (S = steps_per_epoch,
    a new permutation from `rng_data` at each epoch start), contexts and targets from `rng_data`,
    z from torch's global generator; learning rate `learning_rate(options, s)`. After each step
    the logged terms are averaged over ranks; every `validate_every` steps (and at the last)
    rank 0 scores the validation set, appends to `history` and writes `best.pt` on a new best.
    """

    weights_key = "network"
    uses_global_rng = True
    selection_key = "val_nll"
    """The validation score (lower is better) that picks best.pt."""
    shown_logs = (("loss", 3), ("kl", 2))
    """Logged values on the progress bar: (key, decimals)."""

    def __init__(self, problem, config: ANPConfig, options: TrainingOptions, best_path: Path):
        self.problem, self.config, self.options = problem, config, options
        self.best_path = Path(best_path)
        self.world = distributed.world()
        self.rows = distributed.shard(options.batch_size, self.world)
        self.rng_data = torch.Generator().manual_seed(options.seed)
        self.pool = problem.sample_parameters(options.n_functions, self.rng_data)
        self.permutation: torch.Tensor | None = None
        self.best_validation = math.inf
        self.history: list[dict[str, float]] = []
        self.validation = ValidationSet(problem, options) if self.world.is_main else None

    @property
    def total_steps(self) -> int:
        return self.options.total_steps

    def build(self) -> nn.Module:
        return TrainingObjective(AttentiveNeuralProcess(self.config), self.problem, self.options)

    def weights(self, model: nn.Module) -> nn.Module:
        return model.network

    def learning_rate(self, step: int) -> float:
        return learning_rate(self.options, step)

    def hyperparameters(self) -> dict[str, Any]:
        return hyperparameters(self.problem, self.config, self.options)

    def check_resumable(self, hyperparameters: dict[str, Any], path: Path) -> None:
        _check_resumable(hyperparameters, self.hyperparameters(), path)

    def step_parameters(self, step: int) -> torch.Tensor:
        """The global batch's parameters (B,) of step `step`: positions s mod S of the epoch's
        permutation of the pool (a new permutation from `rng_data` at each epoch start)."""
        options = self.options
        position = step % options.steps_per_epoch
        if position == 0 or self.permutation is None:
            self.permutation = torch.randperm(options.n_functions, generator=self.rng_data)
        rows = slice(position * options.batch_size, (position + 1) * options.batch_size)
        return self.pool[self.permutation[rows]]

    def loss(self, network: nn.Module, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        options = self.options
        parameters = self.step_parameters(step)
        batch = training_batch(self.problem, parameters, self.rng_data, options)
        if self.world.is_distributed:  # every rank drew the global batch; keep this rank's rows
            batch = batch.functions(self.rows)
            parameters = parameters[self.rows]
        loss, terms, penalty = network(batch, parameters, step)
        return loss, {
            "loss": float(loss.detach()),
            "nll": float(terms.nll.detach()),
            "kl": float(terms.kl.detach()),
            "softc": float(penalty.detach()),
        }

    def after_step(
        self, model: nn.Module, step: int, logs: dict[str, float], clock: Clock
    ) -> dict[str, str]:
        logs = distributed.average(logs)  # the global batch's values
        shown = {key: f"{logs[key]:.{digits}f}" for key, digits in self.shown_logs}
        options = self.options
        validate = step % options.validate_every == 0 or step == options.total_steps
        if validate and self.world.is_main:
            clock.lap()
            scores = self.validation.evaluate(model.anp)
            epoch = step / options.steps_per_epoch
            self.history.append({"step": step, "epoch": epoch, **logs, **scores})
            if scores[self.selection_key] < self.best_validation:
                self.save_best(model, step, clock, scores)
            shown["val"] = f"{scores[self.selection_key]:.3f}"
        return shown

    def save_best(
        self, model: nn.Module, step: int, clock: Clock, scores: dict[str, float]
    ) -> None:
        """Write best.pt: the network after `step` steps, its validation scores, the time so
        far (`train_seconds`: wall; `cpu_seconds`: process CPU)."""
        self.best_validation = scores[self.selection_key]
        save_checkpoint(
            self.best_path,
            {"network": model.network.state_dict()},
            self.hyperparameters(),
            {
                "step": step,
                "train_seconds": clock.seconds,
                "cpu_seconds": clock.cpu_seconds,
                **scores,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng_data": self.rng_data.get_state(),
            "pool": self.pool,
            "permutation": self.permutation,
        }

    def extra(self, model: nn.Module, step: int) -> dict[str, Any]:
        return {"best_validation": self.best_validation, "history": list(self.history)}

    def load(self, state: dict[str, Any], extra: dict[str, Any]) -> None:
        self.rng_data.set_state(state["rng_data"])
        self.pool = state["pool"]
        self.permutation = state["permutation"]
        self.best_validation = float(extra["best_validation"])
        self.history = list(extra["history"])
