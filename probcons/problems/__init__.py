"""Benchmark problems with exact solutions: the registry `PROBLEMS` and `get_problem(name)`."""

from __future__ import annotations

from probcons.errors import UsageError
from probcons.problems.base import Problem
from probcons.problems.contexts import Contexts, sample_contexts, sample_targets
from probcons.problems.gpme import Diffusion, PorousMedium, Stefan, StefanConstants

PROBLEMS: dict[str, Problem] = {
    problem.name: problem for problem in (Diffusion(), PorousMedium(), Stefan())
}


def get_problem(name: str) -> Problem:
    """The registered problem called `name` (one of the keys of `PROBLEMS`)."""
    if not isinstance(name, str) or name not in PROBLEMS:
        choices = ", ".join(repr(key) for key in PROBLEMS)
        raise UsageError(f"name: expected one of {choices}, got {name!r}")
    return PROBLEMS[name]


__all__ = [
    "PROBLEMS",
    "Contexts",
    "Diffusion",
    "PorousMedium",
    "Problem",
    "Stefan",
    "StefanConstants",
    "get_problem",
    "sample_contexts",
    "sample_targets",
]
