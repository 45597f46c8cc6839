"""Figures: predictions against the truth near both boundaries (the paper's insulator picture)."""

from __future__ import annotations

from pathlib import Path

import torch

from probcons.errors import UsageError
from probcons.problems.operators import OperatorData, OperatorProblem

BAND = 0.2  # fraction of the domain shown next to each end


def plot_boundary_profiles(
    problem: OperatorProblem,
    data: OperatorData,
    predictions: dict[str, torch.Tensor],
    path: str | Path,
    sample: int = 0,
    channel: int | None = None,
) -> None:
    """Two panels (left and right end): truth and each prediction (n, m, n_x) at one time."""
    import matplotlib.pyplot as plt

    channel = problem.n_times - 1 if channel is None else channel
    x = problem.x.numpy()
    n_band = max(3, int(BAND * problem.n_x))
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, (side, index) in zip(
        axes, (("left", slice(0, n_band)), ("right", slice(-n_band, None))), strict=True
    ):
        axis.plot(x[index], data.targets[sample, channel, index].numpy(), "k-", lw=2, label="truth")
        for (name, prediction), style in zip(
            predictions.items(), ("C3--o", "C0-s", "C2:^"), strict=False
        ):
            axis.plot(x[index], prediction[sample, channel, index].numpy(), style, ms=3, label=name)
        axis.set_title(f"{problem.name}: {side} end, t = {float(problem.times[channel]):.2f}")
        axis.set_xlabel("x")
    axes[0].set_ylabel("u")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def boundary_derivatives(problem: OperatorProblem, u: torch.Tensor) -> torch.Tensor:
    """[u_x(x_0), u_x(x_{N-1})] per sample and output time, (n, m, 2), with the condition's stencil."""
    if problem.condition.kind != "neumann" or problem.condition.sides != ("left", "right"):
        raise UsageError(
            "problem: expected a Neumann condition on both ends, got"
            f" {problem.condition.kind} on {problem.condition.sides}"
        )
    rows, _ = problem.condition.rows(problem.n_x)
    return torch.einsum("kn,bmn->bmk", rows, u.to(torch.float64))


def plot_insulator(
    problem: OperatorProblem,
    data: OperatorData,
    predictions: dict[str, torch.Tensor],
    path: str | Path,
    sample: int = 0,
    channel: int | None = None,
) -> None:
    """The insulator picture for a two-sided Neumann problem, 2 x 2 panels.

    Top: truth and each prediction (n, m, n_x) near the left and right ends at output time
    `channel` (default: where the right-end datum |g_R| is largest). Bottom: u_x(0, t) and
    u_x(1, t) of each prediction over the output times against the boundary data g.
    """
    import matplotlib.pyplot as plt

    if data.boundary is None:
        raise UsageError("data: expected boundary data (Neumann values), got None")
    if channel is None:
        channel = int(data.boundary[sample, :, -1].abs().argmax())
    x, t = problem.x.numpy(), problem.times.numpy()
    n_band = max(3, int(BAND * problem.n_x))
    styles = ("C3--o", "C0-s", "C2:^")
    figure, axes = plt.subplots(2, 2, figsize=(9, 6.4))
    for axis, (side, index) in zip(
        axes[0], (("left", slice(0, n_band)), ("right", slice(-n_band, None))), strict=True
    ):
        axis.plot(x[index], data.targets[sample, channel, index].numpy(), "k-", lw=2, label="truth")
        for (name, prediction), style in zip(predictions.items(), styles, strict=False):
            axis.plot(x[index], prediction[sample, channel, index].numpy(), style, ms=3, label=name)
        axis.set_title(f"u near the {side} end, t = {float(problem.times[channel]):.2f}")
        axis.set_xlabel("x")
    axes[0, 0].set_ylabel("u")
    axes[0, 1].legend(fontsize=8)
    derivatives = {name: boundary_derivatives(problem, p) for name, p in predictions.items()}
    for k, (axis, label) in enumerate(zip(axes[1], ("u_x(0, t)", "u_x(1, t)"), strict=True)):
        axis.plot(t, data.boundary[sample, :, k].numpy(), "k-", lw=2, label="condition")
        for (name, values), style in zip(derivatives.items(), styles, strict=False):
            axis.plot(t, values[sample, :, k].numpy(), style, ms=3, label=name)
        axis.set_title(label + (": insulated end" if k == 0 else ": heater"))
        axis.set_xlabel("t")
    axes[1, 0].set_ylabel("u_x at the end")
    axes[1, 1].legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
