"""Training data per the paper's protocol: functions of a problem, contexts and targets per function.

A function is the exact solution for one parameter p ~ U(train_range). Its context set is
stratified in time (n_strata strata x per_stratum uniform x, exact values); its target set is
n_target points uniform over the (t, x) domain. Batches stack B functions for the ANP.
"""

from __future__ import annotations

import torch

from probcons.backbones.anp import Batch
from probcons.errors import UsageError
from probcons.problems import sample_contexts, sample_targets
from probcons.validation import check_positive_int, describe


def keep_contexts(batch: Batch, k: int, generator: torch.Generator) -> Batch:
    """`batch` with a random k of each function's contexts (a random order per function from
    `generator`, its first k kept); targets unchanged."""
    keep = torch.rand(batch.context_u.shape, generator=generator).argsort(-1)[:, :k]
    return batch._replace(
        context_tx=batch.context_tx.gather(1, keep[..., None].expand(-1, -1, 2)),
        context_u=batch.context_u.gather(1, keep),
    )


def sample_batch(
    problem,
    parameters: torch.Tensor,
    generator: torch.Generator,
    n_target: int,
    n_strata: int = 10,
    per_stratum: int = 10,
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """A `Batch` of B = len(parameters) functions: contexts (B, C, 2), (B, C); targets (B, T, 2), (B, T).

    C = n_strata * per_stratum, T = n_target; values are cast to `dtype` for the network.
    """
    parameters = torch.as_tensor(parameters, dtype=torch.float64).reshape(-1)
    if parameters.numel() == 0:
        raise UsageError(f"parameters: expected at least one value, got {describe(parameters)}")
    check_positive_int(n_target, "n_target")
    context_tx, context_u, target_tx, target_u = [], [], [], []
    for p in parameters.tolist():
        contexts = sample_contexts(problem, p, generator, n_strata, per_stratum)
        targets = sample_targets(problem, p, n_target, generator)
        context_tx.append(contexts.points())
        context_u.append(contexts.u)
        target_tx.append(targets.points())
        target_u.append(targets.u)
    return Batch(
        torch.stack(context_tx).to(dtype),
        torch.stack(context_u).to(dtype),
        torch.stack(target_tx).to(dtype),
        torch.stack(target_u).to(dtype),
    )
