"""The seeds of an evaluation run, derived in one place.

`probcons run` and `benchmarks/gpme.py` take every random number of test function f under run
seed s from these generators, so `probcons run` with a benchmark's settings reproduces its row:

    contexts(s, f)     the function's context points        s * 1_000_003 + f
    prediction(s, f)   the backbone's own draws (latents)   s * 1_000_003 + f, a fresh generator
    draws(s, f)        the posterior draws, every method    s * 1_000_003 + 7919 f + 1

Every method of a function gets the same draw generator: common random numbers, so methods
differ only by what each does to the prediction. The prediction's generator restarts the
contexts' seed; that is the scheme the committed benchmark rows were made with (at s = 0), kept
so that they stay reproducible.
"""

from __future__ import annotations

import torch

RUN_STRIDE = 1_000_003
"""Seed distance between runs: more functions than this per run would reuse seeds."""
DRAW_STRIDE = 7919
"""Seed distance between the draw generators of consecutive functions."""


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def context_generator(seed: int, function: int) -> torch.Generator:
    """The generator of function `function`'s context points under run seed `seed`."""
    return _generator(seed * RUN_STRIDE + function)


def prediction_generator(seed: int, function: int) -> torch.Generator:
    """The generator the backbone draws with (latent samples) for function `function`."""
    return _generator(seed * RUN_STRIDE + function)


def draw_generator(seed: int, function: int) -> torch.Generator:
    """The generator of every method's posterior draws of function `function`."""
    return _generator(seed * RUN_STRIDE + DRAW_STRIDE * function + 1)


__all__ = [
    "DRAW_STRIDE",
    "RUN_STRIDE",
    "context_generator",
    "draw_generator",
    "prediction_generator",
]
