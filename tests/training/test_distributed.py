"""Data-parallel training with 2 gloo processes on loopback equals 1 process on the global batch."""

import pytest
import torch
import torch.distributed as dist
from torch.distributions import Normal, kl_divergence
from training_builders import WORLD_SIZE, join_gloo, spawn_ranks, tiny_anp_config, tiny_options

from probcons import distributed
from probcons.backbones.anp import (
    AttentiveNeuralProcess,
    elbo_loss,
    marginal_likelihood_loss,
)
from probcons.backbones.ensemble import DeepEnsembleTask, EnsembleConfig
from probcons.backbones.member_training import MemberTrainingOptions, train_members
from probcons.boon.training import TrainingConfig, train_model
from probcons.boon.training2d import TrainingConfig2d, train_model2d
from probcons.checkpoint import load_checkpoint
from probcons.problems import get_problem
from probcons.problems.operators import make_problem
from probcons.problems.operators2d import make_problem2d
from probcons.training import train_anp
from probcons.training.data import sample_batch
from probcons.training.trainer import sharded_elbo_loss

TOLERANCE = dict(rtol=1e-4, atol=1e-6)  # float32 sums of shards in another order
MEMBERS = 3
MEMBER_OPTIONS = MemberTrainingOptions(steps=3, batch_size=2, checkpoint_every=2)
BOON_CONFIG = TrainingConfig(
    modes=4, width=8, layers=2, padding=4, projection_width=8, epochs=2, batch_size=6
)


def anp_config(problem):
    return tiny_anp_config(problem, width=8)


def anp_options(**overrides):
    settings = dict(
        n_target=12,
        n_strata=2,
        per_stratum=3,
        n_validation=2,
        validation_samples=2,
        validate_every=2,
        kl_warmup_steps=2,
        free_bits=0.5,
        softc_lambda=0.1,
        seed=5,
    )
    return tiny_options(settings, **overrides)


def boon_data():
    problem = make_problem("heat-neumann", n_x=17, n_times=2)
    return problem, problem.generate(7, torch.Generator().manual_seed(0))


BOON2D_CONFIG = TrainingConfig2d(
    modes=2, width=3, layers=2, padding=1, projection_width=4, epochs=2, batch_size=5
)


def boon2d_data():
    problem = make_problem2d("wave2d", n=8, n_steps=4, t_end=0.4)
    return problem, problem.generate(3, seed=0)  # 3 x 3 step pairs: batches of 5 and 4


def ensemble_task():
    return DeepEnsembleTask("stefan", EnsembleConfig(hidden=8, layers=1, points_per_function=8))


def _sharded_gradients(directory: str, current) -> None:
    """Rank-averaged gradients of `sharded_elbo_loss` and, on rank 0, `elbo_loss` on the global
    batch, with a free-bits floor between rank 0's mean KL of one dimension and the global one."""
    stefan = get_problem("stefan")
    generator = torch.Generator().manual_seed(7)
    batch = sample_batch(stefan, stefan.sample_parameters(4, generator), generator, 12, 2, 3)
    torch.manual_seed(0)
    anp = AttentiveNeuralProcess(anp_config(stefan))
    net = anp.network
    with torch.no_grad():
        posterior = net.encode_latent(
            torch.cat([batch.context_tx, batch.target_tx], 1),
            torch.cat([batch.context_u, batch.target_u], 1),
        )
        prior = net.encode_latent(batch.context_tx, batch.context_u)
        kl = kl_divergence(Normal(*posterior), Normal(*prior))  # (4, d)
    local, overall = kl[:2].mean(0), kl.mean(0)
    dimension = int((local - overall).abs().argmax())
    free_bits = float(local[dimension] + overall[dimension]) / 2
    parameters = list(net.parameters())

    def gradients(loss):
        return [grad.clone() for grad in torch.autograd.grad(loss, parameters)]

    results = {"free_bits": free_bits}
    if current.is_main:
        for name, beta in (("single", 0.0), ("single_beta", 1.0)):
            torch.manual_seed(1)
            loss = elbo_loss(anp, batch, 1.0, free_bits, likelihood_beta=beta).loss
            results[name] = gradients(loss)
        torch.manual_seed(1)
        results["single_marginal"] = gradients(marginal_likelihood_loss(anp, batch, 3).loss)
    rows = distributed.shard(4, current)
    shard = batch.functions(rows)
    runs = (
        ("sharded", sharded_elbo_loss, 0.0),
        ("local_floor", elbo_loss, 0.0),
        ("sharded_beta", sharded_elbo_loss, 1.0),
    )
    for name, loss_function, beta in runs:
        torch.manual_seed(1)
        with distributed.ShardedNoise(["z"]):  # the single process's z in both
            grads = gradients(loss_function(anp, shard, 1.0, free_bits, likelihood_beta=beta).loss)
        for grad in grads:
            dist.all_reduce(grad)
            grad /= current.size
        results[name] = grads
    torch.manual_seed(1)
    with distributed.ShardedNoise(["z"]):
        grads = gradients(marginal_likelihood_loss(anp, shard, 3).loss)
    for grad in grads:
        dist.all_reduce(grad)
        grad /= current.size
    results["sharded_marginal"] = grads
    if current.is_main:
        torch.save(results, f"{directory}/gradients.pt")


def _worker(rank: int, port: int, directory: str) -> None:
    """One rank: ANP runs (uninterrupted; interrupted, then resumed), BOON, ensemble members."""
    current = join_gloo(rank, port)
    assert current == distributed.World(rank, WORLD_SIZE, rank)
    try:
        _sharded_gradients(directory, current)
        stefan = get_problem("stefan")
        config, options = anp_config(stefan), anp_options()
        train_anp(stefan, f"{directory}/anp", config, options, progress=False)
        train_anp(stefan, f"{directory}/resumed", config, options, progress=False, max_steps=1)
        train_anp(stefan, f"{directory}/resumed", config, options, resume=True, progress=False)
        train_anp(stefan, f"{directory}/partial", config, options, progress=False, max_steps=2)
        problem, data = boon_data()
        model, _ = train_model("boon", problem, data, BOON_CONFIG, seed=2)
        if current.is_main:
            torch.save(model.state_dict(), f"{directory}/boon.pt")
        problem2d, data2d = boon2d_data()
        model2d, _ = train_model2d(
            "boon", problem2d, data2d, BOON2D_CONFIG, seed=3, checkpoint=f"{directory}/boon2d.pt"
        )
        if current.is_main:
            torch.save(model2d.state_dict(), f"{directory}/boon2d_weights.pt")
        paths = train_members(
            ensemble_task(), f"{directory}/ensemble", MEMBERS, MEMBER_OPTIONS, progress=False
        )
        assert all(path.exists() for path in paths)  # every rank returns after all members
    finally:
        distributed.finalize()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("distributed")
    spawn_ranks(_worker, directory)
    return directory


def network(path):
    return load_checkpoint(path)["state"]["network"]


# An attention key's bias adds the same q.b to every logit of a query, which softmax ignores:
# its exact gradient is 0, so Adam moves it on round-off alone (a few 1e-6 here) in any order
# of summation. It is compared to within the learning rate's scale instead.
SHIFT_INVARIANT_TOLERANCE = dict(rtol=0.0, atol=1e-4)


def assert_same_weights(a, b, **tolerance):
    assert a.keys() == b.keys()
    for key in a:
        expected = tolerance or TOLERANCE
        if not tolerance and key.endswith("attention.key.bias"):
            expected = SHIFT_INVARIANT_TOLERANCE
        torch.testing.assert_close(a[key], b[key], **expected, msg=key)


def test_two_anp_processes_match_one_with_the_same_global_batch(two_process_runs, tmp_path):
    stefan = get_problem("stefan")
    single = train_anp(stefan, tmp_path, anp_config(stefan), anp_options(), progress=False)
    assert_same_weights(network(two_process_runs / "anp" / "last.pt"), network(single.last_path))
    saved = load_checkpoint(two_process_runs / "anp" / "last.pt")
    reference = load_checkpoint(single.last_path)
    assert saved["extra"]["step"] == reference["extra"]["step"] == anp_options().total_steps
    # the random streams a checkpoint holds are the single process's: resumable under any K
    assert torch.equal(saved["state"]["rng_data"], reference["state"]["rng_data"])
    assert torch.equal(saved["state"]["rng_torch"], reference["state"]["rng_torch"])
    losses = [row["loss"] for row in saved["extra"]["history"]]
    expected = [row["loss"] for row in reference["extra"]["history"]]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), **TOLERANCE)


def test_sharded_elbo_gradient_is_the_global_batch_gradient(two_process_runs):
    saved = torch.load(two_process_runs / "gradients.pt")
    assert saved["free_bits"] > 0
    for sharded, single in zip(saved["sharded"], saved["single"], strict=True):
        torch.testing.assert_close(sharded, single, **TOLERANCE)
    # beta-NLL normalises its weights by the global batch's mean, not each rank's
    for sharded, single in zip(saved["sharded_beta"], saved["single_beta"], strict=True):
        torch.testing.assert_close(sharded, single, **TOLERANCE)
    # the marginal likelihood: the single process's prior draws on every rank
    for sharded, single in zip(saved["sharded_marginal"], saved["single_marginal"], strict=True):
        torch.testing.assert_close(sharded, single, **TOLERANCE)
    # the floor on each rank's own batch-mean KL would give another gradient, one that the
    # comparisons above reject by far more than their tolerance
    differences = [
        float((local - single).abs().max())
        for local, single in zip(saved["local_floor"], saved["single"], strict=True)
    ]
    assert max(differences) > 100 * TOLERANCE["atol"]


def test_a_resumed_distributed_run_equals_an_uninterrupted_one(two_process_runs):
    assert_same_weights(
        network(two_process_runs / "resumed" / "last.pt"),
        network(two_process_runs / "anp" / "last.pt"),
        rtol=0,
        atol=0,
    )


def test_a_distributed_checkpoint_resumes_in_one_process(two_process_runs, tmp_path):
    stefan = get_problem("stefan")
    config, options = anp_config(stefan), anp_options()
    partial = load_checkpoint(two_process_runs / "partial" / "last.pt")
    assert partial["extra"]["step"] == 2 < options.total_steps
    (tmp_path / "resumed").mkdir()
    (tmp_path / "resumed" / "last.pt").write_bytes(
        (two_process_runs / "partial" / "last.pt").read_bytes()
    )
    resumed = train_anp(stefan, tmp_path / "resumed", config, options, resume=True, progress=False)
    single = train_anp(stefan, tmp_path / "single", config, options, progress=False)
    assert resumed.steps == single.steps == options.total_steps
    assert_same_weights(network(resumed.last_path), network(single.last_path))


def test_two_boon_processes_match_one_with_the_same_global_batch(two_process_runs):
    problem, data = boon_data()
    # 7 samples in batches of 6 and 1: 3 + 3 samples, then 1 + none (a zero-weighted sample)
    model, _ = train_model("boon", problem, data, BOON_CONFIG, seed=2)
    assert_same_weights(torch.load(two_process_runs / "boon.pt"), model.state_dict())


def test_two_processes_train_the_2d_boon_like_one(two_process_runs, tmp_path):
    problem, data = boon2d_data()
    model, _ = train_model2d(
        "boon", problem, data, BOON2D_CONFIG, seed=3, checkpoint=tmp_path / "boon2d.pt"
    )
    assert_same_weights(torch.load(two_process_runs / "boon2d_weights.pt"), model.state_dict())
    assert_same_weights(  # rank 0's checkpoint holds the same global state
        load_checkpoint(two_process_runs / "boon2d.pt")["state"]["model"],
        load_checkpoint(tmp_path / "boon2d.pt")["state"]["model"],
    )


@pytest.mark.parametrize("batch", [5, 1])
def test_minibatch_parts_partition_the_batch_and_average_to_its_mean(batch):
    index = torch.arange(10, 10 + batch)
    errors = torch.rand(20, dtype=torch.float64)
    parts = [distributed.split_minibatch(index, distributed.World(r, 2)) for r in range(2)]
    used = torch.cat([part for part, weight in parts if weight != 0.0])
    assert torch.equal(used, index)  # every sample once, on one rank
    losses = [distributed.minibatch_loss(errors[part], weight) for part, weight in parts]
    mean_over_ranks = sum(losses) / 2  # what DDP's gradient averaging differentiates
    assert torch.allclose(mean_over_ranks, errors[index].mean(), rtol=1e-14)
    alone, weight = distributed.split_minibatch(index, distributed.World())
    assert torch.equal(alone, index) and weight is None


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    with pytest.raises(ValueError, match="batch_size: expected a multiple of the world size 2"):
        distributed.shard(5, distributed.World(0, 2))
    assert distributed.shard(6, distributed.World(1, 2)) == slice(3, 6)
    assert distributed.shard(6, distributed.World()) == slice(0, 6)


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not dist.is_initialized()
    assert distributed.initialize() == distributed.World()
    assert distributed.average({"loss": 2.5}) == {"loss": 2.5}
    value = torch.tensor([1.0, 2.0], requires_grad=True)
    assert distributed.global_mean(value) is value
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap(module) is module


def run_files(directory):
    """{method file: {group: dataset}} of a run directory, loaded into memory."""
    import xarray as xr

    files = {}
    for path in sorted(directory.glob("*.nc")):
        groups = ("posterior_predictive", "observed_data", "constant_data")
        files[path.name] = {}
        for group in groups:
            dataset = xr.load_dataset(path, group=group, engine="h5netcdf")
            del dataset.attrs["created_at"]  # the time of writing
            files[path.name][group] = dataset
    return files


def test_chunked_evaluation_equals_one_shot_evaluation(tmp_path):
    import json

    from probcons.runner import RunSettings, run

    def evaluate(chunk, name):
        settings = RunSettings(
            problem="stefan",
            backbone="gp",
            backbone_options={"iterations": 3},
            n_functions=3,
            grid=(9, 11),
            draws=6,
            seed=4,
            out=tmp_path / name,
            chunk_functions=chunk,
        )
        summary = run(settings, progress=False, report=False)
        return summary, json.loads((tmp_path / name / "metrics.json").read_text())

    one_shot, one_shot_file = evaluate(3, "one-shot")
    chunked, chunked_file = evaluate(2, "chunked")  # chunks of 2 and 1 functions
    assert chunked == one_shot and chunked_file == one_shot_file
    expected, streamed = run_files(tmp_path / "one-shot"), run_files(tmp_path / "chunked")
    assert sorted(streamed) == ["hardc.nc", "probconserv.nc", "unconstrained.nc"]
    for name, groups in expected.items():
        for group, dataset in groups.items():
            assert dataset.sizes["function"] == 3
            assert dataset.identical(streamed[name][group]), (name, group)
    with pytest.raises(ValueError, match="chunk_functions: expected a positive integer"):
        RunSettings(problem="stefan", chunk_functions=0, out=tmp_path / "bad").check()


def test_ensemble_members_spread_one_per_process_match_one_process(two_process_runs, tmp_path):
    single = train_members(ensemble_task(), tmp_path, MEMBERS, MEMBER_OPTIONS, progress=False)
    for path in single:
        spread = load_checkpoint(two_process_runs / "ensemble" / path.name)
        assert spread["extra"]["step"] == MEMBER_OPTIONS.steps
        assert_same_weights(spread["state"]["model"], load_checkpoint(path)["state"]["model"])
