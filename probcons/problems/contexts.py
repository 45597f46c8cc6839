"""Observed points of one solution: stratified contexts (the paper's protocol) and random targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from probcons.errors import UsageError
from probcons.problems.base import Problem, as_float64, check_generator
from probcons.validation import check_positive_int, describe


@dataclass(frozen=True, eq=False)
class Contexts:
    """Point observations u = u(t, x): `t`, `x`, `u` each (n,) float64."""

    t: torch.Tensor
    x: torch.Tensor
    u: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("t", "x", "u"):
            values = as_float64(getattr(self, name), name)
            if values.dim() != 1:
                raise UsageError(f"{name}: expected a 1-D array, got {describe(values)}")
            object.__setattr__(self, name, values)
        lengths = {name: getattr(self, name).numel() for name in ("t", "x", "u")}
        if len(set(lengths.values())) != 1:
            raise UsageError(f"t, x, u: expected equal lengths, got {lengths}")

    def __len__(self) -> int:
        return self.t.numel()

    def points(self) -> torch.Tensor:
        """(n, 2) [t, x] rows."""
        return torch.stack([self.t, self.x], dim=-1)


def _check_problem(problem: Any) -> Problem:
    if not isinstance(problem, Problem):
        raise UsageError(f"problem: expected a probcons Problem, got {describe(problem)}")
    return problem


def sample_contexts(
    problem: Problem,
    parameter: float,
    generator: torch.Generator | None = None,
    n_strata: int = 10,
    per_stratum: int = 10,
) -> Contexts:
    """Stratified contexts of the exact solution, n = n_strata * per_stratum points.

    t_range is cut into n_strata equal strata; stratum j gets one uniform time t_j in
    [t_lo + j h, t_lo + (j + 1) h), h = (t_hi - t_lo) / n_strata, and per_stratum uniform
    positions in x_range at that time. Points are ordered stratum by stratum; u is exact.
    """
    problem = _check_problem(problem)
    p = problem.check_parameter(parameter)
    generator = check_generator(generator)
    check_positive_int(n_strata, "n_strata")
    check_positive_int(per_stratum, "per_stratum")
    t_lo, t_hi = problem.t_range
    x_lo, x_hi = problem.x_range
    width = (t_hi - t_lo) / n_strata
    offsets = torch.rand(n_strata, generator=generator, dtype=torch.float64)
    times = t_lo + width * (torch.arange(n_strata, dtype=torch.float64) + offsets)
    draws = torch.rand(n_strata, per_stratum, generator=generator, dtype=torch.float64)
    x = (x_lo + (x_hi - x_lo) * draws).reshape(-1)
    t = times.repeat_interleave(per_stratum)
    return Contexts(t=t, x=x, u=problem.solution(t, x, p))


def sample_targets(
    problem: Problem, parameter: float, n: int, generator: torch.Generator | None = None
) -> Contexts:
    """n points with t, x independent and uniform over t_range, x_range; u exact (training targets)."""
    problem = _check_problem(problem)
    p = problem.check_parameter(parameter)
    check_positive_int(n, "n")
    generator = check_generator(generator)
    t_lo, t_hi = problem.t_range
    x_lo, x_hi = problem.x_range
    t = t_lo + (t_hi - t_lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    x = x_lo + (x_hi - x_lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    return Contexts(t=t, x=x, u=problem.solution(t, x, p))
