"""Interrupted training (issue 8, part 4): SIGKILL mid-epoch, rerun the same command, same weights.

For the ANP (`python -m probcons.training`, the `probcons train` command) and for ensemble
members (`probcons.backbones.member_training.main`): a training process is killed with SIGKILL
as soon as its first checkpoint is on disk, mid-epoch; the very same command (with `--resume`)
is run again and must finish with the weights of an uninterrupted run with the same seed. Only
the killed run needs a process of its own: the restart and the uninterrupted reference call the
command's entry point (`main(argv)`) in this process with the same arguments, which saves two
interpreter start-ups.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from probcons.backbones import member_training
from probcons.checkpoint import load_checkpoint
from probcons.training import command as anp_command

CHILD_TIMEOUT = 300
"""Seconds a training child may take before the test fails."""
POLL_SECONDS = 0.02
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WEIGHT_TOLERANCE = 1e-6
"""Relative agreement of resumed and uninterrupted weights (bit-identical is expected)."""

ANP_ARGUMENTS = [
    "stefan",
    *("--epochs", "32", "--n-functions", "32", "--batch-size", "4", "--n-target", "16"),
    *("--hidden", "8", "--heads", "1", "--latent-dim", "2", "--decoder-width", "8"),
    *("--seed", "3", "--no-progress", "--resume"),
]
"""8 steps per epoch, 256 steps; last.pt is written at steps 125 and 250 (mid-epoch) and 256."""
ANP_CHECKPOINT_STEPS = (125, 250)

ENSEMBLE_ARGUMENTS = [
    "stefan",
    *("--backbone", "ensemble", "--members", "1", "--steps", "500", "--batch-size", "4"),
    *("--width", "8", "--layers", "1", "--seed", "3", "--no-progress", "--resume"),
]
"""One member of 500 steps; member-00.pt is written every 100 steps."""
ENSEMBLE_ENTRY = (
    "import sys; from probcons.backbones.member_training import main; "
    "raise SystemExit(main(sys.argv[1:]))"
)
"""The ensemble command's entry point (`python -m probcons.backbones.member_training` itself
fails: run as __main__ it defines a second MemberTask class; docs/reliability.md, known gaps)."""


def kill_after_first_checkpoint(command: list[str], checkpoint: Path) -> None:
    """Start `command`, SIGKILL it once `checkpoint` exists (written atomically), wait for it."""
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would stall the child
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=ENVIRONMENT)
    deadline = time.monotonic() + CHILD_TIMEOUT
    try:
        while not checkpoint.exists():
            if child.poll() is not None:
                log.seek(0)
                pytest.fail(f"training ended before its first checkpoint: {log.read()}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within the time limit")
            time.sleep(POLL_SECONDS)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"


def assert_same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.allclose(value, second[name], rtol=WEIGHT_TOLERANCE, atol=0), name


def test_killed_anp_training_resumes_to_the_uninterrupted_weights(tmp_path):
    reference = tmp_path / "uninterrupted"
    assert anp_command.main([*ANP_ARGUMENTS, "--out", str(reference)]) == 0
    run = tmp_path / "interrupted"
    arguments = [*ANP_ARGUMENTS, "--out", str(run)]
    kill_after_first_checkpoint(
        [sys.executable, "-m", "probcons.training", *arguments], run / "last.pt"
    )
    killed_at = load_checkpoint(run / "last.pt")["extra"]["step"]
    assert killed_at in ANP_CHECKPOINT_STEPS and killed_at % 8 != 0  # mid-epoch
    assert anp_command.main(arguments) == 0  # the same command again
    expected, resumed = load_checkpoint(reference / "last.pt"), load_checkpoint(run / "last.pt")
    assert resumed["extra"]["step"] == expected["extra"]["step"] == 256
    assert_same_weights(expected["state"]["network"], resumed["state"]["network"])
    assert_same_weights(
        load_checkpoint(reference / "best.pt")["state"]["network"],
        load_checkpoint(run / "best.pt")["state"]["network"],
    )


def test_killed_ensemble_member_training_resumes_to_the_uninterrupted_weights(tmp_path):
    reference = tmp_path / "uninterrupted"
    assert member_training.main([*ENSEMBLE_ARGUMENTS, "--out", str(reference)]) == 0
    run = tmp_path / "interrupted"
    arguments = [*ENSEMBLE_ARGUMENTS, "--out", str(run)]
    member = run / "member-00.pt"
    kill_after_first_checkpoint([sys.executable, "-c", ENSEMBLE_ENTRY, *arguments], member)
    assert load_checkpoint(member)["extra"]["step"] < 500
    assert member_training.main(arguments) == 0  # the same command again
    expected = load_checkpoint(reference / "member-00.pt")
    resumed = load_checkpoint(member)
    assert resumed["extra"]["step"] == expected["extra"]["step"] == 500
    assert_same_weights(expected["state"]["model"], resumed["state"]["model"])


def test_ensemble_module_command_runs(tmp_path):
    command = [sys.executable, "-m", "probcons.backbones.member_training", *ENSEMBLE_ARGUMENTS]
    result = subprocess.run(
        [*command, "--steps", "2", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
