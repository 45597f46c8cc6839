"""Attentive neural process (ANP) as a Pyro model and guide, and its backbone object.

Given a context set C = {(t_c, x_c, u_c)} and target points T = {(t, x)}:

    latent path        s_c = SelfAttn^L(MLP(t_c, x_c, u_c)),  z ~ N(mu(mean_c s_c), sigma(...))
                       or, with latent_aggregation="bayes", (r_c, v_c) = MLP(s_c) and
                       z ~ N(m, diag w): 1/w = 1 + sum_c 1/v_c,  m = w * sum_c r_c / v_c
    deterministic path r_c = SelfAttn^D(MLP(t_c, x_c, u_c)),  r(t, x) = CrossAttn(q(t, x), k_c, r_c)
    decoder            (mu, sigma)(t, x) = MLP(r(t, x), z, e(t, x)),  sigma = softplus + min_scale

Model: z ~ p(z | C) (the latent path on the contexts), u(t, x) ~ N(mu, sigma^2) independently.
Guide: z ~ q(z | C u T) (the same latent path on contexts and observed targets).
The ELBO is E_q[log p(u_T | z, C)] - KL(q(z | C u T) || p(z | C)); `elbo_loss` adds KL
annealing (a weight on the KL) and free bits (a floor on the batch-mean KL per latent
dimension) against posterior collapse. `marginal_likelihood_loss` is the alternative objective
log (1/S) sum_s p(u_T | z_s, C), z_s ~ p(z | C): the likelihood the predictive mixture is
scored on, with no KL term. The network runs in float32; predictions are float64.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.distributions import kl_divergence

from probcons.backbones.context_scale import ContextCountScales, context_scale_factor
from probcons.checkpoint import load_checkpoint
from probcons.errors import UsageError
from probcons.grid import Grid
from probcons.resources import checkpoint_path, shipped_checkpoints
from probcons.validation import check_choice, check_in_interval, check_positive_int

PYRO_MODULE_NAME = "anp"
LATENT_AGGREGATIONS = ("mean", "bayes")
DECODE_CHUNK_POINTS = 40_804
"""Decoder rows (latent draws x grid points) per chunk: 4 draws on 101 x 101. Intermediates of
(chunk, decoder width) float32 stay near 10 MB, which keeps the decode in cache and free of
the page faults a 1e6-point chunk (256 MB per layer) costs, several seconds per run."""
STORED = "stored"
"""`ANPBackbone.from_checkpoint(count_scales=STORED)`: apply the checkpoint's own count scales."""


@dataclass(frozen=True)
class ANPConfig:
    """Hyperparameters of the ANP (the reference used hidden 128, 4 heads, decoder 3 x 384).

    t_range, x_range: the problem's domain, mapped to [-1, 1] inside the network.
    min_scale: floor of the decoder's standard deviation; latent_min_scale: of the latent's
    (with "bayes" aggregation: of each set element's observation noise sqrt(v_c)).
    latent_aggregation: "bayes" (default) treats each element as a Gaussian observation
    r_c ~ N(z, diag v_c) of z ~ N(0, I), so z's posterior narrows as elements are added
    (Bayesian context aggregation); "mean" pools the set by its mean, as the reference ANP
    does, and then the spread of z cannot depend on how many contexts there are.
    """

    t_range: tuple[float, float] = (0.0, 1.0)
    x_range: tuple[float, float] = (0.0, 1.0)
    hidden: int = 64
    heads: int = 4
    latent_dim: int = 32
    latent_self_attention: int = 2
    deterministic_self_attention: int = 2
    cross_attention: int = 1
    decoder_layers: int = 3
    decoder_width: int = 64
    min_scale: float = 1e-3
    latent_min_scale: float = 1e-2
    latent_aggregation: str = "bayes"

    def __post_init__(self) -> None:
        for name in ("hidden", "heads", "latent_dim", "decoder_layers", "decoder_width"):
            check_positive_int(getattr(self, name), name)
        for name in ("latent_self_attention", "deterministic_self_attention", "cross_attention"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"{name}: expected an integer >= 0, got {value!r}")
        if self.hidden % self.heads:
            raise UsageError(
                f"heads: expected a divisor of hidden={self.hidden}, got {self.heads!r}"
            )
        for name in ("t_range", "x_range"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not hi > lo:
                raise UsageError(f"{name}: expected (lo, hi) with hi > lo, got {(lo, hi)}")
            object.__setattr__(self, name, (lo, hi))
        for name in ("min_scale", "latent_min_scale"):
            if not float(getattr(self, name)) > 0:
                raise UsageError(f"{name}: expected a number > 0, got {getattr(self, name)!r}")
        check_choice(self.latent_aggregation, "latent_aggregation", LATENT_AGGREGATIONS)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ANPConfig:
        """Inverse of `to_dict`; unknown keys are rejected. A checkpoint written before
        latent_aggregation existed used mean pooling."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"hyperparameters: unknown ANP keys {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        values.setdefault("latent_aggregation", "mean")
        return cls(**values)


class Batch(NamedTuple):
    """A batch of B functions: contexts (B, C, 2) [t, x] and (B, C); targets (B, T, 2), (B, T).

    target_u is None at prediction time. drop_deterministic (B,) bool, training only: functions
    whose decoder gets no deterministic-path representation (only z and the target embedding).
    """

    context_tx: torch.Tensor
    context_u: torch.Tensor
    target_tx: torch.Tensor
    target_u: torch.Tensor | None = None
    drop_deterministic: torch.Tensor | None = None

    def functions(self, index) -> Batch:
        """The batch of the functions `index` selects (a slice, indices or a mask over B)."""
        return Batch(*(None if field is None else field[index] for field in self))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[index], sizes[index + 1]))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_h)) V per head, heads concatenated: (B, Q, H), (B, K, H) -> (B, Q, H).

    Written out (not torch's fused kernel) so that SoftC can differentiate it twice.
    """

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, tensor: torch.Tensor) -> torch.Tensor:
        *lead, n, hidden = tensor.shape
        return tensor.reshape(*lead, n, self.heads, hidden // self.heads).transpose(-3, -2)

    def forward(self, query, key, value):
        q, k, v = (
            self._split(self.query(query)),
            self._split(self.key(key)),
            self._split(self.value(value)),
        )
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        attended = (weights @ v).transpose(-3, -2)
        return self.out(attended.reshape(*attended.shape[:-2], -1))


class AttentionBlock(nn.Module):
    """Multi-head attention with residual connections and layer norms: (B, Q, H) -> (B, Q, H)."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.attention = MultiHeadAttention(hidden, heads)
        self.norm1 = nn.LayerNorm(hidden)
        self.feedforward = _mlp([hidden, hidden, hidden])
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, query, key, value):
        hidden = self.norm1(query + self.attention(query, key, value))
        return self.norm2(hidden + self.feedforward(hidden))


def bayesian_aggregation(observation: torch.Tensor, noise: torch.Tensor):
    """Posterior of z ~ N(0, I) given r_c ~ N(z, diag v_c), c = 1..n, per latent dimension.

    observation r, noise v: (B, n, d) -> loc, scale (B, d), with
    1/w = 1 + sum_c 1/v_c,  loc = w sum_c r_c / v_c,  scale = sqrt(w).
    """
    precision = 1 + (1 / noise).sum(dim=-2)
    variance = 1 / precision
    return variance * (observation / noise).sum(dim=-2), variance.sqrt()


class ANPNetwork(nn.Module):
    """The ANP's encoders and decoder (no sampling here; see `AttentiveNeuralProcess`)."""

    def __init__(self, config: ANPConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        t_lo, t_hi = config.t_range
        x_lo, x_hi = config.x_range
        self.register_buffer(
            "input_center", torch.tensor([(t_lo + t_hi) / 2, (x_lo + x_hi) / 2]), persistent=False
        )
        self.register_buffer(
            "input_halfwidth",
            torch.tensor([(t_hi - t_lo) / 2, (x_hi - x_lo) / 2]),
            persistent=False,
        )
        self.latent_embed = _mlp([3, h, h])
        self.latent_attention = nn.ModuleList(
            AttentionBlock(h, config.heads) for _ in range(config.latent_self_attention)
        )
        self.latent_head = _mlp([h, h, 2 * config.latent_dim])
        self.deterministic_embed = _mlp([3, h, h])
        self.deterministic_attention = nn.ModuleList(
            AttentionBlock(h, config.heads) for _ in range(config.deterministic_self_attention)
        )
        self.query_embed = _mlp([2, h, h])
        self.cross_attention = nn.ModuleList(
            AttentionBlock(h, config.heads) for _ in range(max(config.cross_attention, 1))
        )
        width = config.decoder_width
        self.decoder_input = nn.Linear(h + config.latent_dim + h, width)
        self.decoder = _mlp([width] * config.decoder_layers + [2])

    def normalize(self, tx: torch.Tensor) -> torch.Tensor:
        """Map [t, x] (..., 2) from the problem's domain to [-1, 1]^2."""
        return (tx.to(self.input_center.dtype) - self.input_center) / self.input_halfwidth

    def encode_latent(self, tx, u):
        """Latent path on a set (B, n, 2), (B, n) -> loc, scale, each (B, latent_dim)."""
        s = self.latent_embed(torch.cat([self.normalize(tx), u[..., None].to(tx.dtype)], -1))
        for block in self.latent_attention:
            s = block(s, s, s)
        if self.config.latent_aggregation == "bayes":
            observation, raw = self.latent_head(s).chunk(2, dim=-1)
            noise = self.config.latent_min_scale**2 + nn.functional.softplus(raw)
            return bayesian_aggregation(observation, noise)
        loc, raw = self.latent_head(s.mean(dim=1)).chunk(2, dim=-1)
        scale = self.config.latent_min_scale + (1 - self.config.latent_min_scale) * torch.sigmoid(
            raw
        )
        return loc, scale

    def encode_deterministic(self, context_tx, context_u, target_tx, drop=None):
        """Deterministic path: (B, C, 2), (B, C), (B, T, 2) -> r (B, T, H) and e(t, x) (B, T, H).

        drop (B,) bool: r = e(t, x) for those functions, as with no cross-attention, so their
        decoder must take the function from z (deterministic-path dropout against collapse).
        """
        r = self.deterministic_embed(
            torch.cat([self.normalize(context_tx), context_u[..., None].to(context_tx.dtype)], -1)
        )
        for block in self.deterministic_attention:
            r = block(r, r, r)
        keys = self.query_embed(self.normalize(context_tx))
        queries = self.query_embed(self.normalize(target_tx))
        representation = queries
        if self.config.cross_attention == 0:
            return representation, queries
        for block in self.cross_attention:
            representation = block(representation, keys, r)
        if drop is not None:
            representation = torch.where(drop[:, None, None], queries, representation)
        return representation, queries

    def decode_hidden(self, representation, queries):
        """The z-independent part of the decoder's first layer: (B, T, H) -> (B, T, width)."""
        weight = self.decoder_input.weight
        h = self.config.hidden
        d = self.config.latent_dim
        return (
            representation @ weight[:, :h].T
            + queries @ weight[:, h + d :].T
            + self.decoder_input.bias
        )

    def mean_at(self, context_tx, context_u, target_tx, z, drop=None):
        """Decoder mean (B, T) at target points (B, T, 2) for latents z (B, d); differentiable."""
        representation, queries = self.encode_deterministic(context_tx, context_u, target_tx, drop)
        mean, _ = self.decode(self.decode_hidden(representation, queries), z)
        return mean

    def decode(self, hidden, z):
        """Decoder from the precomputed first layer (..., T, width) and z (..., d) -> loc, scale."""
        d = self.config.latent_dim
        h = self.config.hidden
        z_part = z @ self.decoder_input.weight[:, h : h + d].T
        out = self.decoder(torch.relu(hidden + z_part[..., None, :]))
        loc, raw = out[..., 0], out[..., 1]
        return loc, self.config.min_scale + nn.functional.softplus(raw)


class AttentiveNeuralProcess:
    """The ANP as a Pyro model and guide around an `ANPNetwork`."""

    def __init__(self, config: ANPConfig | None = None, network: ANPNetwork | None = None):
        if network is None:
            network = ANPNetwork(config or ANPConfig())
        self.network = network
        self.config = network.config

    def model(self, batch: Batch):
        """z ~ p(z | C);  u(t, x) ~ N(mu(t, x, z, C), sigma(t, x, z, C)^2), targets observed."""
        pyro.module(PYRO_MODULE_NAME, self.network)
        net = self.network
        loc, scale = net.encode_latent(batch.context_tx, batch.context_u)
        representation, queries = net.encode_deterministic(
            batch.context_tx, batch.context_u, batch.target_tx, batch.drop_deterministic
        )
        hidden = net.decode_hidden(representation, queries)
        with pyro.plate("functions", batch.context_tx.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            mean, std = net.decode(hidden, z)
            pyro.sample("u", dist.Normal(mean, std).to_event(1), obs=batch.target_u)
        return mean, std

    def guide(self, batch: Batch):
        """z ~ q(z | C u T) when targets are observed, else the conditional prior p(z | C)."""
        pyro.module(PYRO_MODULE_NAME, self.network)
        tx, u = batch.context_tx, batch.context_u
        if batch.target_u is not None:
            tx = torch.cat([tx, batch.target_tx], dim=1)
            u = torch.cat([u, batch.target_u], dim=1)
        loc, scale = self.network.encode_latent(tx, u)
        with pyro.plate("functions", batch.context_tx.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class LossTerms(NamedTuple):
    """loss: the objective per target point; nll: -E_q log p(u_T | z) per target point;
    kl: KL(q || p) per function (nats), all scalars; mean: the decoder mean (B, T) at the
    targets for the drawn z; z: that draw (B, d)."""

    loss: torch.Tensor
    nll: torch.Tensor
    kl: torch.Tensor
    mean: torch.Tensor
    z: torch.Tensor


def elbo_loss(
    anp: AttentiveNeuralProcess,
    batch: Batch,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    batch_mean=None,
    kl_capacity: float = 0.0,
    likelihood_beta: float = 0.0,
) -> LossTerms:
    """Negative ELBO per target point, one reparametrized draw of z from the guide.

    loss = [ -mean_b log p(u_T,b | z_b) + kl_weight * sum_d max(mean_b KL_bd, free_bits) ] / T.
    With kl_weight = 1 and free_bits = 0 this is Pyro's TraceMeanField_ELBO loss / (B T).
    kl_capacity C > 0 replaces the free-bits term by |sum_d mean_b KL_bd - C| (a capacity target).
    likelihood_beta > 0 (beta-NLL) weights each target's log-density by w = sigma^(2 beta) / mean w,
    w without gradient: at beta = 1 every target pulls the mean like a squared error, so a
    large sigma no longer lets the mean ignore hard regions (the Stefan front).
    batch_mean: (B, k) -> (k,), the mean over functions (default this batch; data-parallel
    training passes the mean over the global batch).
    """
    if batch.target_u is None:
        raise UsageError("batch.target_u: expected observed targets for the ELBO, got None")
    guide_trace = poutine.trace(anp.guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(anp.model, trace=guide_trace)).get_trace(batch)
    likelihood = model_trace.nodes["u"]["fn"]
    pointwise = likelihood.base_dist.log_prob(batch.target_u)  # (B, T)
    log_likelihood = pointwise.sum(-1)  # (B,)
    fitted = log_likelihood
    if likelihood_beta > 0:  # beta-NLL: point weights sigma^(2 beta) (no gradient), mean 1
        weight = likelihood.base_dist.scale.detach() ** (2 * likelihood_beta)
        weight_mean = weight.mean() if batch_mean is None else batch_mean(weight.mean(-1, True))
        fitted = (pointwise * weight / weight_mean).sum(-1)
    posterior = guide_trace.nodes["z"]["fn"].base_dist
    prior = model_trace.nodes["z"]["fn"].base_dist
    kl_per_dim = kl_divergence(posterior, prior)  # (B, d)
    n_target = batch.target_u.shape[-1]
    kl_mean = kl_per_dim.mean(0) if batch_mean is None else batch_mean(kl_per_dim)
    if kl_capacity > 0:  # capacity target: hold the KL near kl_capacity nats per function
        penalised = (kl_mean.sum() - kl_capacity).abs()
    else:
        penalised = torch.clamp(kl_mean, min=free_bits).sum()
    loss = (-fitted.mean() + kl_weight * penalised) / n_target
    mean = model_trace.nodes["_RETURN"]["value"][0]
    z = guide_trace.nodes["z"]["value"]
    return LossTerms(loss, -log_likelihood.mean() / n_target, kl_per_dim.sum(-1).mean(), mean, z)


def marginal_likelihood_loss(anp: AttentiveNeuralProcess, batch: Batch, samples: int) -> LossTerms:
    """Negative log marginal likelihood per target point, S reparametrized draws from the prior.

    loss = -mean_b log (1/S) sum_s prod_t N(u_bt | mu(t, z_bs, C_b), sigma(t, z_bs, C_b)^2) / T
    with z_bs ~ p(z | C_b) (the Pyro site "z", shape (B, S, d), so `distributed.ShardedNoise`
    gives every rank the single process's draws). The joint likelihood of a function's targets
    is mixed over latent draws, so a spread of whole functions across z is rewarded wherever it
    covers the function better than per-point decoder variance; the ELBO instead pulls
    p(z | C) onto q(z | C u T), and with many exact contexts both see the same evidence, which
    lets the latent collapse. Returns LossTerms with nll = -mean_{b,s} log p(u_T,b | z_bs) / T,
    kl = KL(q(z | C u T) || p(z | C)) per function (a diagnostic without gradient: q is not
    trained by this objective), mean and z of the first draw.
    """
    if batch.target_u is None:
        raise UsageError("batch.target_u: expected observed targets, got None")
    check_positive_int(samples, "samples")
    net = anp.network
    loc, scale = net.encode_latent(batch.context_tx, batch.context_u)
    shape = (loc.shape[0], samples, loc.shape[1])
    z = pyro.sample("z", dist.Normal(loc[:, None].expand(shape), scale[:, None].expand(shape)))
    representation, queries = net.encode_deterministic(
        batch.context_tx, batch.context_u, batch.target_tx, batch.drop_deterministic
    )
    mean, std = net.decode(net.decode_hidden(representation, queries)[:, None], z)  # (B, S, T)
    log_likelihood = dist.Normal(mean, std).log_prob(batch.target_u[:, None]).sum(-1)  # (B, S)
    log_marginal = torch.logsumexp(log_likelihood, dim=1) - math.log(samples)
    n_target = batch.target_u.shape[-1]
    with torch.no_grad():
        tx = torch.cat([batch.context_tx, batch.target_tx], dim=1)
        u = torch.cat([batch.context_u, batch.target_u], dim=1)
        posterior = dist.Normal(*net.encode_latent(tx, u))
        kl = kl_divergence(posterior, dist.Normal(loc, scale)).sum(-1).mean()
    return LossTerms(
        -log_marginal.mean() / n_target,
        -log_likelihood.mean() / n_target,
        kl,
        mean[:, 0],
        z[:, 0],
    )


def stored_count_scales(extra: dict[str, Any]) -> ContextCountScales | None:
    """The context-count scales a checkpoint's extra holds ("count_scales"), or None."""
    stored = extra.get("count_scales")
    return None if stored is None else ContextCountScales.from_dict(stored)


def load_anp_network(path: str | os.PathLike) -> tuple[ANPNetwork, dict[str, Any]]:
    """The ANPNetwork of a checkpoint written by `probcons.training` (best.pt, last.pt or an
    export; weights_only load) and the checkpoint's payload."""
    payload = load_checkpoint(path)
    if "anp" not in payload["hyperparameters"]:
        raise UsageError(f"path: {str(path)!r} holds no ANP hyperparameters")
    network = ANPNetwork(ANPConfig.from_dict(payload["hyperparameters"]["anp"]))
    network.load_state_dict(payload["state"].get("network", payload["state"]))
    return network, payload


def decode_chunks(n_samples: int, per_chunk: int) -> list[tuple[int, int]]:
    """(start, stop) ranges of latent draws decoded together: `per_chunk` at a time, and never
    a chunk of one draw when there are more (a one-row z goes through a matrix-vector product
    whose float32 rounding differs from the matrix-matrix one, so the numbers would depend on
    the chunking); the last chunk absorbs a remainder of one."""
    per_chunk = max(2, per_chunk)
    bounds = list(range(0, n_samples, per_chunk)) + [n_samples]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class DecoderDraws(NamedTuple):
    """One prediction's decoder output before calibration: means, stds (S, n_t, n_x) float64,
    one row per latent draw, the grid, and the context factor f (None if not computed)."""

    means: torch.Tensor
    stds: torch.Tensor
    grid: Grid
    context_factor: float | None

    def mixture(self, variance_multiplier: float = 1.0):
        """GaussianMixture of N(means[s], diag variance_multiplier * stds[s]^2) over s."""
        from probcons.covariance import DiagonalCovariance
        from probcons.mixture import GaussianMixture
        from probcons.prediction import GaussianPrediction

        return GaussianMixture(
            [
                GaussianPrediction(m, DiagonalCovariance(variance_multiplier * s**2), self.grid)
                for m, s in zip(self.means, self.stds, strict=True)
            ]
        )


class ANPBackbone:
    """A trained ANP as a backbone: one Gaussian (diagonal covariance) per latent sample.

    predict(...) draws `n_samples` z ~ p(z | C) and returns the `GaussianMixture` of the
    decoder's N(mu(., z), diag variance_scale * f^context_exponent * sigma(., z)^2) on the
    grid, float64, each (n_t, n_x); f is the prediction's fit to its own contexts
    (`probcons.backbones.context_scale`). variance_scale = 1 and context_exponent = 0: the
    decoder as trained; the held-out fit that `probcons calibrate` stores in the checkpoint
    otherwise (`probcons.training.calibration`). count_scales (`ContextCountScales`, None: 1)
    multiplies the variance by c(k), k the function's number of contexts: the held-out fit of
    the conditioned predictive that `probcons calibrate --conditioned` stores
    (`probcons.training.conditioned_calibration`).
    """

    def __init__(
        self,
        network: ANPNetwork,
        n_samples: int = 100,
        name: str = "anp",
        problem: str | None = None,
        chunk_points: int = DECODE_CHUNK_POINTS,
        metadata: dict[str, Any] | None = None,
        variance_scale: float = 1.0,
        context_exponent: float = 0.0,
        count_scales: ContextCountScales | None = None,
    ):
        if count_scales is not None and not isinstance(count_scales, ContextCountScales):
            raise UsageError(
                "count_scales: expected a ContextCountScales or None, got "
                f"{type(count_scales).__name__}"
            )
        self.count_scales = count_scales
        self.variance_scale = check_in_interval(
            variance_scale, "variance_scale", 0, math.inf, include_low=False
        )
        self.context_exponent = check_in_interval(context_exponent, "context_exponent", 0, math.inf)
        self.network = network.eval()
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.name = name
        self.problem = problem
        self.chunk_points = check_positive_int(chunk_points, "chunk_points")
        self.metadata = dict(metadata or {})

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        n_samples: int = 100,
        name: str | None = None,
        variance_scale: float | None = None,
        context_exponent: float | None = None,
        count_scales: ContextCountScales | None | str = STORED,
    ) -> ANPBackbone:
        """Rebuild from a checkpoint written by `probcons.training` (weights_only load).

        variance_scale, context_exponent: None applies the checkpoint's stored calibration
        (from `probcons calibrate`; 1 and 0 if it has none); a number overrides it
        (1 and 0 = the decoder's variance as trained). count_scales: STORED applies the
        checkpoint's context-count scales (none if it has none); None or a ContextCountScales
        overrides them.
        """
        network, payload = load_anp_network(path)
        hyper = payload["hyperparameters"]
        extra = payload.get("extra", {})
        softc = float(hyper.get("training", {}).get("softc_lambda", 0.0) or 0.0)
        default_name = "softc-anp" if softc > 0 else "anp"
        return cls(
            network,
            n_samples=n_samples,
            name=name or default_name,
            problem=hyper.get("problem"),
            metadata={"hyperparameters": hyper, "extra": extra},
            variance_scale=(
                float(extra.get("variance_scale", 1.0))
                if variance_scale is None
                else variance_scale
            ),
            context_exponent=(
                float(extra.get("context_exponent", 0.0))
                if context_exponent is None
                else context_exponent
            ),
            count_scales=(stored_count_scales(extra) if count_scales == STORED else count_scales),
        )

    @torch.no_grad()
    def predict(self, problem, parameter, contexts, grid: Grid, generator=None):
        """Mixture over `n_samples` latent draws of the ANP's prediction on `grid`."""
        draws = self.decoder_draws(
            problem, parameter, contexts, grid, generator, with_factor=self.context_exponent > 0
        )
        multiplier = self.variance_multiplier(draws.context_factor, len(contexts.u))
        return draws.mixture(multiplier)

    def variance_multiplier(
        self, context_factor: float | None, n_contexts: int | None = None
    ) -> float:
        """variance_scale * f^context_exponent * c(k), the calibrated decoder variance over
        sigma^2 (c(k) = count_scales(n_contexts), 1 without count scales)."""
        multiplier = self.variance_scale
        if self.context_exponent != 0:
            if context_factor is None:
                raise UsageError("context_factor: expected a number when context_exponent > 0")
            multiplier *= float(context_factor) ** self.context_exponent
        if self.count_scales is not None:
            if n_contexts is None:
                raise UsageError("n_contexts: expected a number when count_scales are set")
            multiplier *= self.count_scales(int(n_contexts))
        return multiplier

    @torch.no_grad()
    def decoder_draws(
        self, problem, parameter, contexts, grid: Grid, generator=None, with_factor: bool = True
    ) -> DecoderDraws:
        """The decoder's mean and sd as trained for `n_samples` z ~ p(z | C) on `grid`, and
        (with_factor) the context factor f, decoding the contexts in the same pass."""
        if self.problem is not None and getattr(problem, "name", None) != self.problem:
            raise UsageError(
                f"problem: this ANP was trained on {self.problem!r}, got "
                f"{getattr(problem, 'name', problem)!r}"
            )
        if not isinstance(grid, Grid):
            raise UsageError(f"grid: expected a probcons.grid.Grid, got {type(grid).__name__}")
        net = self.network
        dtype = net.input_center.dtype
        context_tx = torch.stack([contexts.t, contexts.x], dim=-1).to(dtype)[None]
        context_u = torch.as_tensor(contexts.u).to(dtype)[None]
        if context_tx.shape[1] != context_u.shape[1] or context_u.shape[1] == 0:
            raise UsageError(
                f"contexts: expected t, x, u of one nonzero length, got "
                f"{tuple(context_tx.shape[1:2])} and {tuple(context_u.shape[1:2])}"
            )
        target_tx = grid.points().to(dtype)[None]
        loc, scale = net.encode_latent(context_tx, context_u)
        noise = torch.randn(self.n_samples, loc.shape[-1], generator=generator, dtype=dtype)
        z = loc + scale * noise  # (S, d)
        n_points = target_tx.shape[1]
        if with_factor:  # decode the contexts too, in the same pass
            target_tx = torch.cat([target_tx, context_tx], dim=1)
        representation, queries = net.encode_deterministic(context_tx, context_u, target_tx)
        hidden = net.decode_hidden(representation, queries)[0]  # (N [+ k], width)
        hidden, context_hidden = hidden[:n_points], hidden[n_points:]
        factor = None
        if with_factor:
            mean, std = net.decode(context_hidden, z)  # (S, k)
            factor = float(context_scale_factor(mean.double(), std.double(), context_u[0].double()))
        means, stds = [], []
        for start, stop in decode_chunks(self.n_samples, self.chunk_points // grid.size):
            mean, std = net.decode(hidden, z[start:stop])
            means.append(mean.to(torch.float64).reshape(-1, *grid.shape))
            stds.append(std.to(torch.float64).reshape(-1, *grid.shape))
        return DecoderDraws(torch.cat(means), torch.cat(stds), grid, factor)

    def latent_variance_share(self, mixture) -> float:
        """Share of the mixture's total variance that is between latent samples (grid mean)."""
        total = mixture.variance.sum()
        between = mixture.between_variance.sum()
        return float(between / total) if float(total) > 0 else math.nan

    def __repr__(self) -> str:
        return (
            f"ANPBackbone(name={self.name!r}, problem={self.problem!r}, n_samples={self.n_samples}, "
            f"variance_scale={self.variance_scale:.4g}, "
            f"context_exponent={self.context_exponent:.4g}, count_scales={self.count_scales})"
        )


DEFAULT_CHECKPOINTS = shipped_checkpoints()
"""Shipped checkpoints: <problem>-<variant>.pt (variant anp or softc-anp), `probcons.resources`."""


def default_checkpoint(problem: str, variant: str = "anp") -> Path:
    """models/checkpoints/<problem>-<variant>.pt in the working directory, else the shipped one
    (existing or not: a trained checkpoint is exported there)."""
    return checkpoint_path(f"{problem}-{variant}", DEFAULT_CHECKPOINTS)


class ShippedANPBackbone:
    """An ANP backbone that loads the checkpoint of whichever problem it is asked to predict."""

    def __init__(self, variant: str = "anp", n_samples: int = 100):
        if variant not in ("anp", "softc-anp"):
            raise UsageError(f"variant: expected 'anp' or 'softc-anp', got {variant!r}")
        self.variant = variant
        self.name = variant
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self._loaded: dict[str, ANPBackbone] = {}

    def backbone_for(self, problem) -> ANPBackbone:
        """The ANPBackbone trained on `problem` (loaded once)."""
        name = getattr(problem, "name", None)
        if name not in self._loaded:
            path = default_checkpoint(str(name), self.variant)
            if not path.is_file():
                raise UsageError(
                    f"problem: no shipped {self.variant} checkpoint for {name!r} (expected "
                    f"{str(path)!r}); train one with `probcons train {name} --backbone anp"
                    f"{' --softc-lambda 1' if self.variant == 'softc-anp' else ''} --export {path}`"
                )
            self._loaded[name] = ANPBackbone.from_checkpoint(
                path, n_samples=self.n_samples, name=self.variant
            )
        return self._loaded[name]

    def predict(self, problem, parameter, contexts, grid: Grid, generator=None):
        """See `ANPBackbone.predict`."""
        return self.backbone_for(problem).predict(problem, parameter, contexts, grid, generator)


def load_anp_backbone(
    checkpoint: str | os.PathLike | None = None,
    n_samples: int = 100,
    variant: str = "anp",
):
    """The ANP backbone from `checkpoint`, or the shipped checkpoint of each problem if None."""
    if checkpoint is None:
        return ShippedANPBackbone(variant=variant, n_samples=n_samples)
    return ANPBackbone.from_checkpoint(checkpoint, n_samples=n_samples)
