"""Calibration of an ensemble against the truth: PIT, reliability, sharpness, ECDF bands.

PIT of y under draws x_1..x_D (randomized rank, exact for a finite ensemble):
    PIT = (#{x_d < y} + V (#{x_d = y} + 1)) / (D + 1),   V ~ U(0, 1),
uniform on (0, 1) whenever y is exchangeable with the draws. The central interval of level L
covers y iff |PIT - 1/2| <= L / 2, so the reliability curve read off the PIT has expectation
exactly L for a calibrated ensemble of any size (the interval between sample quantiles covers
only about L (D - 1) / (D + 1), e.g. 0.882 at L = 0.9, D = 100).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from arviz.stats.ecdf_utils import ecdf_confidence_band

from probcons.errors import UsageError
from probcons.metrics import central_interval
from probcons.validation import check_positive_int

RELIABILITY_LEVELS = tuple(round(0.1 * k, 1) for k in range(1, 10))
FLAG_STANDARD_ERRORS = 3.0
ECDF_BAND_PROBABILITY = 0.95
ECDF_EVAL_POINTS = 100


def randomized_pit(
    samples: torch.Tensor, truth: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """PIT values (...) of `truth` (...) under the ensemble `samples` (D, ...); ties randomized."""
    if samples.dim() < 1 or tuple(samples.shape[1:]) != tuple(truth.shape):
        raise UsageError(
            f"samples: expected shape (n_draws, *{tuple(truth.shape)}), got {tuple(samples.shape)}"
        )
    below = (samples < truth).sum(dim=0, dtype=torch.float64)
    equal = (samples == truth).sum(dim=0, dtype=torch.float64)
    uniform = torch.rand(truth.shape, generator=generator, dtype=torch.float64)
    return (below + uniform * (equal + 1.0)) / (samples.shape[0] + 1)


def coverage_from_pit(pit: torch.Tensor, levels: tuple[float, ...] = RELIABILITY_LEVELS):
    """(n_levels,) fraction of PIT values inside the central interval of each level."""
    deviation = (pit.reshape(-1) - 0.5).abs()
    half = torch.tensor(levels, dtype=torch.float64) / 2
    return (deviation[None, :] <= half[:, None]).double().mean(dim=1)


def interval_width(samples: torch.Tensor, level: float, *, presorted: bool = False) -> torch.Tensor:
    """(...) width q_{(1+L)/2} - q_{(1-L)/2} of the central sample interval (sharpness);
    presorted: `samples` is sorted along the draws."""
    lower, upper = central_interval(samples, level, presorted=presorted)
    return upper - lower


def binomial_standard_error(probability: float, n: int) -> float:
    """sqrt(p (1 - p) / n): standard error of a coverage fraction over n independent points."""
    check_positive_int(n, "n")
    return math.sqrt(probability * (1.0 - probability) / n)


def calibration_flag(
    coverage: float,
    nominal: float,
    standard_error: float,
    n_standard_errors: float = FLAG_STANDARD_ERRORS,
) -> str:
    """'over-confident' if coverage < nominal - k SE, 'under-confident' if > nominal + k SE,
    else 'calibrated' (k = `n_standard_errors`)."""
    if not math.isfinite(coverage):
        return "undetermined"
    margin = n_standard_errors * standard_error
    if coverage < nominal - margin:
        return "over-confident"
    if coverage > nominal + margin:
        return "under-confident"
    return "calibrated"


@dataclass(frozen=True)
class PitUniformity:
    """ECDF of PIT values minus the uniform CDF, with a simultaneous band (ArviZ).

    eval_points, difference, lower, upper: (n_eval,); `inside` is True when the ECDF lies within
    the band at every evaluation point (uniformity not rejected at level `probability`).
    """

    eval_points: np.ndarray
    difference: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_values: int
    probability: float

    @property
    def inside(self) -> bool:
        return bool(((self.difference >= self.lower) & (self.difference <= self.upper)).all())


@functools.lru_cache(maxsize=32)
def _uniform_band(n_values: int, n_eval: int, probability: float) -> tuple[np.ndarray, ...]:
    eval_points = np.linspace(1.0 / n_eval, 1.0, n_eval)
    lower, upper = ecdf_confidence_band(
        n_values, eval_points, eval_points, prob=probability, method="optimized"
    )
    return eval_points, lower - eval_points, upper - eval_points


def pit_uniformity(
    pit: np.ndarray | torch.Tensor,
    probability: float = ECDF_BAND_PROBABILITY,
    n_eval: int = ECDF_EVAL_POINTS,
) -> PitUniformity:
    """ECDF-difference of PIT values (n,) against U(0, 1) with ArviZ's simultaneous band.

    The band assumes independent values: pass PIT values at points far enough apart.
    """
    values = np.sort(np.asarray(pit, dtype=np.float64).reshape(-1))
    if values.size == 0 or not ((values >= 0) & (values <= 1)).all():
        raise UsageError(f"pit: expected a non-empty array of values in [0, 1], got {values.size}")
    if not 0.0 < probability < 1.0:
        raise UsageError(f"probability: expected a number in (0, 1), got {probability!r}")
    check_positive_int(n_eval, "n_eval")
    eval_points, lower, upper = _uniform_band(values.size, n_eval, float(probability))
    ecdf = np.searchsorted(values, eval_points, side="right") / values.size
    return PitUniformity(
        eval_points, ecdf - eval_points, lower, upper, values.size, float(probability)
    )
