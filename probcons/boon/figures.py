"""Figures: predictions against the truth near both boundaries (the paper's insulator picture)."""

from __future__ import annotations

from pathlib import Path

import torch

from probcons.boon.problems import OperatorData, OperatorProblem

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
