"""The constrained objective data-parallel: 2 gloo processes train like 1 on the global batch."""

import pytest
import torch
from training_builders import join_gloo, spawn_ranks, tiny_anp_config, tiny_options

from probcons import distributed
from probcons.checkpoint import load_checkpoint
from probcons.problems import get_problem
from probcons.training import train_anp

TOLERANCE = dict(rtol=1e-4, atol=1e-6)  # float32 sums of shards in another order
SHIFT_INVARIANT_TOLERANCE = dict(rtol=0.0, atol=1e-4)
"""An attention key's bias has an exact gradient of 0 (softmax ignores it): Adam moves it on
round-off alone, so it is compared on the learning rate's scale (as in test_distributed)."""


def config(problem):
    return tiny_anp_config(problem, width=8)


def options():
    settings = dict(
        objective="constrained-crps",
        slice_times=2,
        slice_points=9,
        marginal_samples=3,
        n_strata=2,
        per_stratum=3,
        min_contexts=2,
        softc_lambda=0.1,
        n_collocation=4,
        n_validation=2,
        validation_samples=2,
        validate_every=2,
        seed=5,
    )
    return tiny_options(settings)


def _worker(rank: int, port: int, directory: str) -> None:
    join_gloo(rank, port)
    try:
        stefan = get_problem("stefan")
        train_anp(stefan, f"{directory}/run", config(stefan), options(), progress=False)
    finally:
        distributed.finalize()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("constrained-distributed")
    spawn_ranks(_worker, directory)
    return directory


def test_two_processes_train_the_constrained_objective_like_one(two_process_run, tmp_path):
    stefan = get_problem("stefan")
    single = train_anp(stefan, tmp_path, config(stefan), options(), progress=False)
    saved = load_checkpoint(two_process_run / "run" / "last.pt")
    reference = load_checkpoint(single.last_path)
    assert saved["extra"]["step"] == reference["extra"]["step"] == options().total_steps
    assert torch.equal(saved["state"]["rng_torch"], reference["state"]["rng_torch"])
    for key, value in reference["state"]["network"].items():
        tolerance = SHIFT_INVARIANT_TOLERANCE if key.endswith("attention.key.bias") else TOLERANCE
        torch.testing.assert_close(saved["state"]["network"][key], value, **tolerance, msg=key)
    losses = [row["loss"] for row in saved["extra"]["history"]]
    expected = [row["loss"] for row in reference["extra"]["history"]]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), **TOLERANCE)
