"""Data-parallel training on PyTorch's own engine: torchrun, a process group, DDP.

`torchrun --nproc_per_node=K` starts K processes with RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT set; `initialize()` joins them into a process group (gloo: the
training loops run on the CPU). Without those variables everything is a single process (`World()`: rank 0 of 1)
and no function here communicates.

Sharding reproduces a single process: every rank draws the same global batch of B functions
from the same seeded generators (so the random streams stay in lock-step and a checkpoint holds
one global state), then keeps its rows `shard(B, world)` = [r B/K, (r + 1) B/K). DDP averages the
gradients, so for a loss that is a mean over functions

    (1/K) sum_r grad mean_{b in shard r} l_b = grad mean_b l_b,

the gradient of the single-process batch. A batch statistic inside the loss (a free-bits floor
on the batch-mean KL) uses `global_mean`, and `ShardedNoise` gives each rank its rows of the
single process's reparametrization noise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger
from torch import nn
from tqdm.auto import tqdm

from probcons.errors import UsageError
from probcons.validation import check_positive_int

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""Set by torchrun in every process it starts; `initialize` needs all of them."""


@dataclass(frozen=True)
class World:
    """This process's place in the process group: rank in [0, size), local_rank on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher with its variables) started this process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


DEFAULT_BACKEND = "gloo"
"""The training loops keep their tensors on the CPU, where gloo is PyTorch's backend."""


def world() -> World:
    """The current process group's rank and size; World() when no group is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def initialize(backend: str | None = None) -> World:
    """Join the process group described by torchrun's variables (once); a no-op without them."""
    if dist.is_available() and dist.is_initialized():
        return world()
    if not launched_by_torchrun():
        return World()
    backend = backend or DEFAULT_BACKEND
    if backend not in ("gloo", "nccl"):
        raise UsageError(f"backend: expected 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, init_method="env://")
    return world()


def finalize() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if world().is_distributed:
        dist.barrier()


def check_global_batch(batch_size: int, current: World, name: str = "batch_size") -> int:
    """The per-rank batch B / K; B must be a multiple of the world size K."""
    check_positive_int(batch_size, name)
    if batch_size % current.size:
        raise UsageError(
            f"{name}: expected a multiple of the world size {current.size} (each rank takes "
            f"{name} / world size functions), got {batch_size}"
        )
    return batch_size // current.size


def shard(batch_size: int, current: World) -> slice:
    """Rows of a global batch of `batch_size` that this rank keeps: [r B/K, (r + 1) B/K)."""
    per_rank = check_global_batch(batch_size, current)
    return slice(current.rank * per_rank, (current.rank + 1) * per_rank)


def split_minibatch(index: torch.Tensor, current: World) -> tuple[torch.Tensor, float | None]:
    """This rank's part of a mini-batch of sample indices, and the weight w of its losses.

    With K ranks, rank r takes the r-th of K nearly equal parts and its loss is w sum_i l_i,
    w = K / b, so DDP's mean over ranks is the mean over the b samples of the mini-batch. A
    rank left without a sample (b < K) takes one with w = 0 (an empty batch cannot run an FFT).
    One process: (index, None), and the loss is the plain mean (`minibatch_loss`).
    """
    if not current.is_distributed:
        return index, None
    local = torch.tensor_split(index, current.size)[current.rank]
    if len(local) == 0:
        return index[:1], 0.0
    return local, current.size / len(index)


def minibatch_loss(errors: torch.Tensor, weight: float | None) -> torch.Tensor:
    """mean(errors) in one process; weight * sum(errors) on a rank (`split_minibatch`)."""
    return errors.mean() if weight is None else errors.sum() * weight


def global_mean(local: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of equally sized shards' means, with the gradient of the local term.

    Value: (1/K) sum_r local_r; gradient: that of `local` (straight through), which DDP's
    gradient averaging turns into the gradient of the global mean.
    """
    if not world().is_distributed:
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    return local + (total / world().size - local.detach())


def average(values: dict[str, float]) -> dict[str, float]:
    """Mean over ranks of scalar values (for logging losses of a sharded batch)."""
    current = world()
    if not current.is_distributed or not values:
        return dict(values)
    keys = list(values)
    tensor = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return {
        key: float(value) / current.size for key, value in zip(keys, tensor.tolist(), strict=True)
    }


def broadcast(value: Any, source: int = 0) -> Any:
    """`value` of rank `source` on every rank (any picklable object)."""
    if not world().is_distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def wrap(module: nn.Module) -> nn.Module:
    """DistributedDataParallel(module) in a process group of several ranks, else module itself."""
    current = world()
    if not current.is_distributed:
        return module
    on_gpu = any(parameter.is_cuda for parameter in module.parameters())
    device_ids = [current.local_rank] if on_gpu else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (what checkpoints hold)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def progress_bar(*args: Any, disable: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar shown by rank 0 only."""
    return tqdm(*args, disable=disable or not world().is_main, **kwargs)


class ShardedNoise(Messenger):
    """Effect handler: Normal sample sites draw the global batch's noise, keep this rank's rows.

    A single process draws eps (B, d) ~ N(0, I) for z = loc + scale * eps; under this handler
    rank r draws the same (K B_r, d) tensor from the same generator and uses rows
    shard(K B_r, world), so z equals the single process's rows and every rank's random state
    stays equal to the single process's. Sites whose batch dimension is the first of loc.
    """

    def __init__(self, sites: tuple[str, ...] | list[str]):
        super().__init__()
        self.sites = tuple(sites)

    def _pyro_sample(self, msg) -> None:
        if msg["name"] not in self.sites or msg["is_observed"] or msg["value"] is not None:
            return
        current = world()
        if not current.is_distributed:
            return
        fn = msg["fn"]
        normal = getattr(fn, "base_dist", fn)
        if not isinstance(normal, torch.distributions.Normal):
            raise UsageError(
                f"sites: expected Normal sample sites, got {type(normal).__name__} at "
                f"{msg['name']!r}"
            )
        loc, scale = normal.loc, normal.scale
        rows = loc.shape[0]
        noise = torch.empty((current.size * rows, *loc.shape[1:]), dtype=loc.dtype).normal_()
        msg["value"] = loc + noise[shard(current.size * rows, current)] * scale
