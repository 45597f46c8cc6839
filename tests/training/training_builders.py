"""Builders shared by the training tests: tiny ANP configurations and options, gloo ranks.

A module of its own, not tests/training/conftest.py: the tests import these by name, and a
second conftest module would shadow tests/conftest.py for `from conftest import ...` elsewhere.
"""

import os
import socket

import torch
import torch.multiprocessing as mp

from probcons import distributed
from probcons.backbones.anp import ANPConfig
from probcons.training import TrainingOptions

WORLD_SIZE = 2
"""Ranks of the data-parallel tests: gloo processes on loopback."""

TINY_RUN = dict(epochs=2, n_functions=8, batch_size=4, checkpoint_every=1)
"""What every tiny run shares: 2 epochs of 2 batches of 4 functions, a checkpoint each step."""


def tiny_anp_config(problem, width=16, **overrides) -> ANPConfig:
    """A small ANP over the problem's ranges: `width` hidden units and decoder width, 2 heads,
    4 latent dimensions, one self-attention layer per path, 2 decoder layers."""
    values = dict(
        t_range=problem.t_range,
        x_range=problem.x_range,
        hidden=width,
        heads=2,
        latent_dim=4,
        latent_self_attention=1,
        deterministic_self_attention=1,
        decoder_layers=2,
        decoder_width=width,
    )
    values.update(overrides)
    return ANPConfig(**values)


def tiny_options(settings: dict, **overrides) -> TrainingOptions:
    """The options of a tiny run: `TINY_RUN`, then a test file's `settings`, then `overrides`."""
    return TrainingOptions(**{**TINY_RUN, **settings, **overrides})


def free_port() -> int:
    """A loopback TCP port free now (for a gloo rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn_ranks(worker, directory) -> None:
    """worker(rank, port, directory) in WORLD_SIZE processes, meeting on a free port."""
    mp.spawn(worker, args=(free_port(), str(directory)), nprocs=WORLD_SIZE, join=True)


def join_gloo(rank: int, port: int) -> distributed.World:
    """In a spawned rank: one thread, the rendezvous environment, then the gloo process group."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
    )
    return distributed.initialize("gloo")
