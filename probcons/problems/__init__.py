"""Every problem of both papers, in one registry.

- `PROBLEMS` / `get_problem(name)`: the GPME problems (diffusion, PME, Stefan) with exact
  solutions, solved by a backbone and the exact update (`probcons run`);
- `OPERATOR_PROBLEMS` (1-D: `make_problem`) and `OPERATOR_PROBLEMS_2D` (`make_problem2d`): the
  BOON operator-learning problems, with data from the library's solvers;
- `FAMILIES` / `problem_family(name)`: which of the three a name belongs to.
"""

from __future__ import annotations

from probcons.errors import UsageError
from probcons.problems.base import Problem, RegisteredProblem
from probcons.problems.contexts import Contexts, sample_contexts, sample_targets
from probcons.problems.gpme import Diffusion, PorousMedium, Stefan, StefanConstants
from probcons.problems.operators import (
    OPERATOR_PROBLEMS,
    OperatorData,
    OperatorProblem,
    make_problem,
)
from probcons.problems.operators2d import OPERATOR_PROBLEMS_2D, make_problem2d

PROBLEMS: dict[str, Problem] = {
    problem.name: problem for problem in (Diffusion(), PorousMedium(), Stefan())
}


FAMILIES: dict[str, str] = {
    **{name: "gpme" for name in PROBLEMS},
    **{name: "operator-1d" for name in OPERATOR_PROBLEMS},
    **{name: "operator-2d" for name in OPERATOR_PROBLEMS_2D},
}
"""Every problem name of the library -> its family: gpme, operator-1d or operator-2d."""


def problem_family(name: str) -> str:
    """The family of the problem called `name` (a key of `FAMILIES`)."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise UsageError(f"problem: expected one of {', '.join(FAMILIES)}, got {name!r}")
    return FAMILIES[name]


def get_problem(name: str) -> Problem:
    """The registered problem called `name` (one of the keys of `PROBLEMS`)."""
    if not isinstance(name, str) or name not in PROBLEMS:
        choices = ", ".join(repr(key) for key in PROBLEMS)
        raise UsageError(f"name: expected one of {choices}, got {name!r}")
    return PROBLEMS[name]


__all__ = [
    "FAMILIES",
    "OPERATOR_PROBLEMS",
    "OPERATOR_PROBLEMS_2D",
    "PROBLEMS",
    "OperatorData",
    "OperatorProblem",
    "make_problem",
    "make_problem2d",
    "problem_family",
    "Contexts",
    "Diffusion",
    "PorousMedium",
    "Problem",
    "RegisteredProblem",
    "Stefan",
    "StefanConstants",
    "get_problem",
    "sample_contexts",
    "sample_targets",
]
