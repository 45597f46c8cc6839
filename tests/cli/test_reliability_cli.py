"""The CLI bad-input matrix, corrupted checkpoints and atomic writes (issue 8, parts 3 and 4).

Every bad input to `probcons run` exits with status 2 and one line on stderr, no traceback, and
leaves nothing behind (no run directory, no staging folder). Checkpoints that are corrupted or
foreign raise a ValueError that says so, and no code in them runs. A process killed with SIGKILL
while writing leaves the previous file intact.
Tests marked xfail(strict=True) show defects reported to the lead; they flip when fixed.
"""

import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from probcons.backbones import BACKBONES
from probcons.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from probcons.cli import main
from probcons.io import atomic_write, write_json
from probcons.problems import PROBLEMS
from probcons.runner import METHODS, load_model

SMALL = ["--grid", "5x5", "--n-functions", "1", "--draws", "5", "--quiet"]
ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CHECKPOINT = ROOT / "models" / "checkpoints" / "stefan-anp.pt"
CHILD_TIMEOUT = 120
"""Seconds a child process may take before the test kills it and fails."""
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(arguments, capsys):
    """(exit status, stderr) of probcons.cli.main."""
    status = main(arguments)
    return status, capsys.readouterr().err


def assert_one_line_error(status, error, *fragments):
    assert status == 2, error
    assert error.startswith("probcons: error: ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    for fragment in fragments:
        assert fragment in error, (fragment, error)


def write_model(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def xfail(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


def case(label, arguments, fragments, defect=None):
    """One row of the matrix: arguments after `run`, fragments the one-line message must hold."""
    marks = [xfail(defect)] if defect else []
    return pytest.param(arguments, fragments, id=label, marks=marks)


MATRIX = [
    case("unknown problem", ["heat"], ["name: expected one of", *PROBLEMS, "got 'heat'"]),
    case(
        "unknown backbone",
        ["stefan", "--backbone", "fno"],
        ["backbone: expected one of", *BACKBONES],
    ),
    case("unknown method", ["stefan", "--methods", "probconserv,softc"], ["methods:", *METHODS]),
    case("grid one number", ["stefan", "--grid", "5"], ["grid: expected NTxNX", "got '5'"]),
    case("grid three numbers", ["stefan", "--grid", "5x5x5"], ["grid: expected NTxNX"]),
    case("grid decimal", ["stefan", "--grid", "5.0x5"], ["grid: expected NTxNX"]),
    case("grid negative", ["stefan", "--grid=-5x5"], ["grid: expected NTxNX", "got '-5x5'"]),
    case("grid empty", ["stefan", "--grid", ""], ["grid: expected NTxNX"]),
    case("grid too small", ["stefan", "--grid", "5x2"], ["grid: expected at least 3x3", "5x2"]),
    case("grid zero", ["stefan", "--grid", "0x0"], ["grid: expected at least 3x3"]),
    case("zero functions", ["stefan", "--n-functions", "0"], ["n_functions: expected a positive"]),
    case("negative draws", ["stefan", "--draws", "-1"], ["draws: expected a positive integer"]),
    case("fractional draws", ["stefan", "--draws", "2.5"], ["--draws: invalid int value: '2.5'"]),
    case("text count", ["stefan", "--n-functions", "ten"], ["--n-functions: invalid int value"]),
    case("stefan u* = 0", ["stefan", "--param", "0"], ["u_star: expected a value in (0, 1)"]),
    case("stefan u* = 1", ["stefan", "--param", "1"], ["u_star: expected a value in (0, 1)"]),
    case("stefan u* nan", ["stefan", "--param", "nan"], ["u_star: expected", "got nan"]),
    case("pme m < 0", ["pme", "--param", "-1"], ["m: expected a value in (0, inf)", "got -1"]),
    case("pme m inf", ["pme", "--param", "inf"], ["m: expected"]),
    case("diffusion k = 0", ["diffusion", "--param", "0"], ["k: expected a value in (0, inf)"]),
    case("diffusion k text", ["diffusion", "--param", "fast"], ["--param: invalid float value"]),
    case(
        "sigma_G < 0",
        ["stefan", "--sigma-g=-1e-3"],
        ["noise_std: expected a finite number >= 0"],
    ),
    case(
        "sigma_G nan", ["stefan", "--sigma-g", "nan"], ["noise_std: expected a finite number >= 0"]
    ),
    case(
        "sigma_G inf", ["stefan", "--sigma-g", "inf"], ["noise_std: expected a finite number >= 0"]
    ),
    case("missing model", ["stefan", "--model", "{tmp}/none.py"], ["model: expected a Pyro model"]),
    case(
        "model lacks model()", ["stefan", "--model", "{nomodel}"], ["to define a function `model`"]
    ),
    case("unknown option", ["stefan", "--temperature", "1"], ["unrecognized arguments: --temp"]),
    case("no problem", [], ["the following arguments are required: problem"]),
    case(
        "seed overflow",
        ["stefan", "--seed", str(2**70)],
        ["seed: expected"],
    ),
    case(
        "model not python",
        ["stefan", "--model", "{notpython}"],
        ["model: expected a Python file"],
    ),
    case(
        "model syntax error",
        ["stefan", "--model", "{syntax}"],
        ["model:", "SyntaxError"],
    ),
    case(
        "model import error",
        ["stefan", "--model", "{importerror}"],
        ["model:", "ModuleNotFoundError"],
    ),
]


@pytest.mark.parametrize(("arguments", "fragments"), MATRIX)
def test_bad_input_matrix(arguments, fragments, tmp_path, capsys):
    models = tmp_path / "models-in"
    models.mkdir()
    files = {
        "tmp": str(tmp_path),
        "nomodel": write_model(models, "nomodel.py", "def other():\n    return None\n"),
        "notpython": write_model(models, "model.txt", "def model():\n    return None\n"),
        "syntax": write_model(models, "syntax.py", "def model(:\n"),
        "importerror": write_model(models, "imports.py", "import not_a_module_of_probcons\n"),
    }
    arguments = [argument.format(**files) for argument in arguments]
    before = set(tmp_path.iterdir())
    out = tmp_path / "run"
    status, error = run_cli(["run", *SMALL, *arguments, "--out", str(out)], capsys)
    assert_one_line_error(status, error, *fragments)
    assert set(tmp_path.iterdir()) == before  # no run directory, no staging folder


def test_load_model_takes_a_string_path_and_names_a_missing_file(tmp_path):
    model = load_model(str(ROOT / "models" / "stefan.py"))
    assert callable(model) and model.__name__ == "model"
    with pytest.raises(ValueError, match=r"model: expected a Pyro model file, got .*none\.py"):
        load_model(str(tmp_path / "none.py"))


def test_unknown_command_and_no_command(capsys):
    assert_one_line_error(*run_cli(["frobnicate"], capsys), "invalid choice", "run", "list")
    assert_one_line_error(*run_cli([], capsys), "required: command")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete run written into an existing, empty directory (accepted)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    out.mkdir()
    assert main(["run", "stefan", *SMALL, "--out", str(out)]) == 0
    return out


def run_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_existing_output_is_refused_then_replaced_with_overwrite(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "notes.txt").write_text("mine")
    before = run_files(out)
    status, error = run_cli(["run", "stefan", *SMALL, "--seed", "1", "--out", str(out)], capsys)
    assert_one_line_error(status, error, "exists and is not empty", "--overwrite")
    assert run_files(out) == before
    command = ["run", "stefan", *SMALL, "--methods", "hardc", "--overwrite", "--out", str(out)]
    assert main(command) == 0
    assert json.loads((out / "metrics.json").read_text()).keys() == {"hardc"}
    assert sorted(path.name for path in out.glob("*.nc")) == ["hardc.nc"]
    assert not (out / "notes.txt").exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_output_path_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("keep")
    status, error = run_cli(["run", "stefan", *SMALL, "--out", str(target)], capsys)
    assert_one_line_error(status, error, "out: expected a directory, got the file")
    assert target.read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_read_only_parent_is_refused(tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        status, error = run_cli(["run", "stefan", *SMALL, "--out", str(parent / "r")], capsys)
        assert_one_line_error(status, error, "out: cannot write under")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(stat.S_IRWXU)


# --- checkpoints ---------------------------------------------------------------------------


class CodeInPickle:
    """Would create a file when unpickled by a full (not weights-only) loader."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def good_checkpoint(tmp_path):
    path = tmp_path / "good.pt"
    state = {"w": torch.arange(64, dtype=torch.float64), "b": torch.ones(3)}
    save_checkpoint(path, state, {"hidden": 8}, {"epoch": 2})
    return path


def corrupted_files(folder: Path, good: Path) -> dict[str, Path]:
    raw = good.read_bytes()
    cases = {
        "empty": b"",
        "random bytes": bytes(range(256)) * 4,
        "truncated": raw[: len(raw) // 2],
        "json": b'{"format": "probcons-checkpoint-v1"}',
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = folder / f"{name.replace(' ', '-')}.pt"
        paths[name].write_bytes(content)
    return paths


def test_corrupted_checkpoints_are_reported(tmp_path, good_checkpoint):
    for name, path in corrupted_files(tmp_path, good_checkpoint).items():
        with pytest.raises(ValueError, match="is corrupted or not a torch file") as error:
            load_checkpoint(path)
        assert str(path) in str(error.value), name
    for missing in (tmp_path / "absent.pt", tmp_path):
        with pytest.raises(ValueError, match="checkpoint: no such file"):
            load_checkpoint(missing)


def test_foreign_checkpoints_are_reported_and_run_no_code(tmp_path):
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "lightning.pt")
    torch.save({"format": "other-v9", "state": {}}, tmp_path / "other.pt")
    for name in ("tensor.pt", "lightning.pt", "other.pt"):
        with pytest.raises(ValueError, match="is not a probcons checkpoint"):
            load_checkpoint(tmp_path / name)
    marker = tmp_path / "code-ran"
    torch.save({"format": FORMAT, "state": CodeInPickle(marker)}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="corrupted or not a torch file"):
        load_checkpoint(tmp_path / "code.pt")
    assert not marker.exists()  # weights_only=True: the pickle's code never ran


def test_checkpoint_payload_keys_are_checked(tmp_path):
    torch.save({"format": FORMAT}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="state"):
        load_checkpoint(tmp_path / "bare.pt")


def test_a_flipped_byte_is_harmless_or_reported(good_checkpoint, tmp_path):
    raw = good_checkpoint.read_bytes()
    reference = load_checkpoint(good_checkpoint)
    damaged = tmp_path / "damaged.pt"
    silent = []
    for position in range(0, len(raw), 7):
        content = bytearray(raw)
        content[position] ^= 0x5A
        damaged.write_bytes(bytes(content))
        try:
            payload = load_checkpoint(damaged)
        except ValueError:
            continue
        same = (
            payload.get("hyperparameters") == reference["hyperparameters"]
            and payload.get("extra") == reference["extra"]
            and set(payload.get("state", {})) == set(reference["state"])
            and all(torch.equal(payload["state"][k], v) for k, v in reference["state"].items())
        )
        if not same:
            silent.append(position)
    assert not silent, f"{len(silent)} single-byte corruptions loaded as different content"


def shipped_checkpoint_folder(tmp_path: Path, content: bytes) -> Path:
    """A working directory whose models/checkpoints/stefan-anp.pt holds `content`."""
    folder = tmp_path / "work"
    (folder / "models" / "checkpoints").mkdir(parents=True)
    (folder / "models" / "checkpoints" / "stefan-anp.pt").write_bytes(content)
    return folder


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "foreign", "not an ANP"])
def test_cli_reports_a_bad_backbone_checkpoint(kind, tmp_path, capsys, monkeypatch):
    if kind == "random bytes":
        content = bytes(range(256)) * 8
    elif kind == "truncated":
        content = SHIPPED_CHECKPOINT.read_bytes()[:50_000]
    else:
        source = tmp_path / "source.pt"
        if kind == "foreign":
            torch.save({"model": torch.ones(2)}, source)
        else:
            save_checkpoint(source, {"w": torch.ones(2)}, {"fno": {"modes": 4}})
        content = source.read_bytes()
    folder = shipped_checkpoint_folder(tmp_path, content)
    monkeypatch.chdir(folder)
    arguments = ["run", "stefan", "--backbone", "anp", *SMALL, "--out", "run"]
    status, error = run_cli(arguments, capsys)
    assert_one_line_error(status, error, "stefan-anp.pt")
    assert sorted(path.name for path in folder.iterdir()) == ["models"]


def test_console_bad_checkpoint_is_one_line_in_a_real_process(tmp_path):
    """Through the interpreter: exit 2, one stderr line, no traceback, nothing written."""
    folder = shipped_checkpoint_folder(tmp_path, b"\x00not a checkpoint" * 64)
    command = [sys.executable, "-m", "probcons.cli", "run", "stefan", "--backbone", "anp"]
    result = subprocess.run(
        [*command, *SMALL, "--out", "run"],
        capture_output=True,
        text=True,
        cwd=folder,
        env=ENVIRONMENT,
        timeout=CHILD_TIMEOUT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("probcons: error: checkpoint:")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert sorted(path.name for path in folder.iterdir()) == ["models"]


# --- atomic writes and SIGKILL -------------------------------------------------------------


def start_child(script: str, *arguments: str) -> subprocess.Popen:
    """`python -c script arguments`; stdout is read line by line, stderr is not kept."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENVIRONMENT,
    )


def kill_when_ready(child: subprocess.Popen, signal_line: str) -> bool:
    """Wait for `signal_line` on the child's stdout, then SIGKILL it; False if it exited first."""
    watchdog = threading.Timer(CHILD_TIMEOUT, child.kill)
    watchdog.start()
    try:
        for line in child.stdout:
            if line.strip() == signal_line:
                child.send_signal(signal.SIGKILL)
                child.wait()
                return True
        child.wait()
        return False
    finally:
        watchdog.cancel()
        child.stdout.close()


WRITE_AND_HANG = """
import sys, time
from probcons.io import atomic_write
with atomic_write(sys.argv[1]) as temporary:
    with open(temporary, "w") as handle:
        handle.write("new and incomplete")
        handle.flush()
        print("writing", flush=True)
        time.sleep(600)
"""


def test_kill_during_atomic_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"previous": True})
    child = start_child(WRITE_AND_HANG, str(target))
    assert kill_when_ready(child, "writing")
    assert child.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"previous": True}
    leftovers = [path.name for path in tmp_path.iterdir() if path != target]
    # SIGKILL runs no cleanup: the hidden temporary file stays, the target is untouched
    assert all(name.startswith(".metrics.json.") and name.endswith(".tmp") for name in leftovers)


def test_failed_atomic_write_removes_its_temporary_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("previous")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "previous"
    assert [path.name for path in tmp_path.iterdir()] == ["report.md"]


SAVE_AND_HANG = """
import io, sys, time
import torch
from probcons.checkpoint import save_checkpoint

real_save = torch.save

def half_then_hang(payload, destination, *args, **kwargs):
    buffer = io.BytesIO()
    real_save(payload, buffer, *args, **kwargs)
    data = buffer.getvalue()
    with open(destination, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
    print("writing", flush=True)
    time.sleep(600)

torch.save = half_then_hang
save_checkpoint(sys.argv[1], {"w": torch.full((1000,), 2.0)}, {"epoch": 2})
"""


def test_kill_during_save_checkpoint_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"w": torch.full((1000,), 1.0)}, {"epoch": 1})
    child = start_child(SAVE_AND_HANG, str(target))
    assert kill_when_ready(child, "writing")
    payload = load_checkpoint(target)
    assert payload["hyperparameters"] == {"epoch": 1}
    assert torch.equal(payload["state"]["w"], torch.full((1000,), 1.0))


RUN_AND_HANG_AFTER_REMOVAL = """
import os, shutil, sys, time
out = os.path.abspath(sys.argv[1])
real_rmtree = shutil.rmtree

def rmtree_then_hang(path, *args, **kwargs):
    real_rmtree(path, *args, **kwargs)
    if os.path.abspath(path) == out:
        print("removed", flush=True)
        time.sleep(600)

shutil.rmtree = rmtree_then_hang
from probcons.cli import main
small = ["--grid", "5x5", "--n-functions", "1", "--draws", "5", "--quiet"]
sys.exit(main(["run", "stefan", *small, "--methods", "hardc", "--overwrite", "--out", out]))
"""


def test_kill_during_run_overwrite_keeps_a_complete_run(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    child = start_child(RUN_AND_HANG_AFTER_REMOVAL, str(out))
    kill_when_ready(child, "removed")
    assert out.is_dir(), "neither the previous nor the new run is in place"
    methods = json.loads((out / "metrics.json").read_text())
    assert sorted(path.name for path in out.glob("*.nc")) == sorted(f"{m}.nc" for m in methods)


def test_written_files_follow_the_umask(finished_run, tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "shared.json"
    write_json(target, {"a": 1})
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(finished_run.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((finished_run / "metrics.json").stat().st_mode) == 0o666 & ~umask


def test_a_run_never_replaces_a_folder_another_run_filled(tmp_path, monkeypatch):
    """Two runs with the same --out and no --overwrite: the later finisher is refused, the
    first one's folder is kept whole, and no staging folder stays behind."""
    from probcons import runner
    from probcons.errors import UsageError

    out = tmp_path / "run"
    original = runner._append_chunk

    def other_run_finishes_first(staging, *args):
        original(staging, *args)
        out.mkdir()
        (out / "metrics.json").write_text('{"other": {}}')

    monkeypatch.setattr(runner, "_append_chunk", other_run_finishes_first)
    settings = runner.RunSettings(
        problem="stefan", backbone="anp", n_functions=1, grid=(11, 11), draws=5, out=out
    )
    with pytest.raises(UsageError, match="was written by another run while this one worked"):
        runner.run(settings, progress=False, report=False)
    assert json.loads((out / "metrics.json").read_text()) == {"other": {}}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_model_file_that_exits_at_import_is_an_error(tmp_path, capsys):
    model = tmp_path / "exits.py"
    model.write_text("import sys\nsys.exit(0)\n")
    out = tmp_path / "run"
    assert (
        main(["run", "stefan", "--backbone", "anp", "--model", str(model), "--out", str(out)]) == 2
    )
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "failed to import (SystemExit: 0)" in error
    assert not out.exists() and list(tmp_path.iterdir()) == [model]


# --- failed writes, refused output paths, memory, stale staging folders ----------------------


def assert_write_error(status, error, *fragments):
    assert status == 74, error
    assert error.startswith("probcons: error: cannot write ") and error.count("\n") == 1, error
    assert "Traceback" not in error
    for fragment in fragments:
        assert fragment in error, (fragment, error)


@pytest.mark.parametrize(
    ("code", "writer"),
    [
        (errno.ENOSPC, "append_inference_data"),
        (errno.EBUSY, "write_json"),
        (errno.ENAMETOOLONG, "append_inference_data"),
        (errno.EACCES, "write_json"),
    ],
)
def test_failed_writes_are_one_line_exit_74_and_leave_nothing(
    code, writer, tmp_path, capsys, monkeypatch
):
    from probcons import runner

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(runner, writer, fail)
    out = tmp_path / "run"
    status, error = run_cli(["run", "stefan", *SMALL, "--out", str(out)], capsys)
    assert_write_error(status, error, str(out), os.strerror(code))
    assert list(tmp_path.iterdir()) == []  # no run folder, no staging folder


def test_failed_write_with_overwrite_keeps_the_old_run(finished_run, tmp_path, capsys, monkeypatch):
    from probcons import runner

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = run_files(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runner, "append_inference_data", full)
    status, error = run_cli(["run", "stefan", *SMALL, "--overwrite", "--out", str(out)], capsys)
    assert_write_error(status, error, "No space left on device")
    assert run_files(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_full_report_disk_is_one_line_exit_74(finished_run, tmp_path, capsys, monkeypatch):
    from probcons.report import document

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(document, "write_documents", full)
    status, error = run_cli(["report", str(finished_run), "--out", str(tmp_path / "r")], capsys)
    assert_write_error(status, error, "No space left on device")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 128 KiB tmpfs (root only; skipped where mount is not permitted)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_really_full_disk_is_one_line_exit_74(small_tmpfs):
    """A real ENOSPC inside HDF5, in a real interpreter: one line, exit 74, nothing left."""
    out = small_tmpfs / "run"
    arguments = ["--grid", "41x41", "--draws", "50", "--n-functions", "2", "--quiet"]
    result = subprocess.run(
        [sys.executable, "-m", "probcons.cli", "run", "stefan", *arguments, "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
        timeout=CHILD_TIMEOUT,
    )
    assert_write_error(result.returncode, result.stderr, str(out), "No space left on device")
    assert list(small_tmpfs.iterdir()) == []


def test_paths_refused_up_front(finished_run, tmp_path, capsys, monkeypatch):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    too_long = tmp_path / ("r" * (limit - 10))
    status, error = run_cli(["run", "stefan", *SMALL, "--out", str(too_long)], capsys)
    assert_one_line_error(status, error, "out: expected path components of at most", str(limit))
    monkeypatch.chdir(tmp_path)
    for out in [".", str(tmp_path), str(tmp_path.parent), "/"]:
        for extra in [[], ["--overwrite"]]:
            status, error = run_cli(["run", "stefan", *SMALL, *extra, "--out", out], capsys)
            assert_one_line_error(status, error, "out: cannot replace the current directory")
    blocker = tmp_path / "a-file"
    blocker.write_text("keep")
    status, error = run_cli(["report", str(finished_run), "--out", f"{blocker}/r.html"], capsys)
    assert_one_line_error(status, error, "out: expected a report path under a directory")
    assert blocker.read_text() == "keep"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]


def test_huge_grids_are_refused_before_any_allocation(tmp_path, capsys):
    out = tmp_path / "run"
    status, error = run_cli(
        ["run", "stefan", "--grid", "99999999999x99999999999", "--out", str(out)], capsys
    )
    assert_one_line_error(status, error, "grid: expected at most 1e+08 points", "MAX_GRID_POINTS")
    status, error = run_cli(["run", "stefan", "--grid", "5000x5000", "--out", str(out)], capsys)
    assert_one_line_error(status, error, "grid: expected at most 16 GiB", "MAX_CHUNK_BYTES")
    assert list(tmp_path.iterdir()) == []


def stale_folder(parent: Path, name: str, token: str, kind: str, pid: int) -> Path:
    from probcons.runner import OWNER_FILE

    folder = parent / f".{name}.{token}.{kind}"
    folder.mkdir()
    (folder / OWNER_FILE).write_text(f"{pid} {socket.gethostname()}\n")
    return folder


def test_stale_staging_folders_of_dead_runs_are_removed(tmp_path):
    from probcons.runner import OWNER_FILE, RunSettings, run

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(child.stdout)
    out = tmp_path / "run"
    dead_partial = stale_folder(tmp_path, "run", "deadbeef", "partial", dead)
    dead_previous = stale_folder(tmp_path, "run", "deadbee2", "previous", dead)
    live = stale_folder(tmp_path, "run", "livelive", "partial", os.getpid())
    ownerless = tmp_path / ".run.noowners.partial"
    ownerless.mkdir()
    other = stale_folder(tmp_path, "other", "deadbeef", "partial", dead)
    out.mkdir()  # an empty OUT is accepted; with OUT present, a dead .previous is a spare copy
    settings = RunSettings(
        problem="stefan", backbone="anp", n_functions=1, grid=(5, 5), draws=5, out=out
    )
    run(settings, progress=False, report=False)
    assert not dead_partial.exists() and not dead_previous.exists()
    assert live.exists() and ownerless.exists() and other.exists()
    assert not (out / OWNER_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["run", live.name, ownerless.name, other.name]
    )


def test_a_run_killed_between_its_renames_keeps_both_copies(tmp_path):
    """With OUT missing, a dead run's .partial and .previous are the only copies: kept."""
    from probcons.runner import remove_stale_staging

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    partial = stale_folder(tmp_path, "run", "abcdefgh", "partial", int(child.stdout))
    previous = stale_folder(tmp_path, "run", "abcdefgh", "previous", int(child.stdout))
    assert remove_stale_staging(tmp_path / "run") == []
    assert partial.exists() and previous.exists()


def test_a_run_whose_report_fails_leaves_the_old_folder(
    finished_run, tmp_path, capsys, monkeypatch
):
    """The report is written in the staging folder: when it fails, `--overwrite` keeps the old
    run whole and no new folder without a report appears."""
    from probcons.report import document

    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = run_files(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(document, "write_documents", full)
    status, error = run_cli(["run", "stefan", *SMALL, "--overwrite", "--out", str(out)], capsys)
    assert_write_error(status, error, "No space left on device")
    assert run_files(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize(
    ("body", "raised"),
    [
        ("    raise RuntimeError('boom')\n", "RuntimeError: boom"),
        ("    return None\n", None),  # no latent site: a usage error naming the model
    ],
)
def test_a_model_that_raises_is_one_line_naming_its_file(body, raised, tmp_path, capsys):
    model = tmp_path / "mine.py"
    model.write_text(f"def model(prediction, problem, parameter, noise_std=0.0):\n{body}")
    wrong = tmp_path / "wrong.py"
    wrong.write_text("def model(prediction):\n    return None\n")
    out = tmp_path / "run"
    status, error = run_cli(
        ["run", "stefan", *SMALL, "--model", str(model), "--out", str(out)], capsys
    )
    if raised is None:
        assert_one_line_error(status, error, "latent: expected one of the sample sites", str(model))
    else:
        assert_one_line_error(status, error, "model:", str(model), raised)
    status, error = run_cli(
        ["run", "stefan", *SMALL, "--model", str(wrong), "--out", str(out)], capsys
    )
    assert_one_line_error(status, error, "model:", str(wrong), "TypeError")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine.py", "wrong.py"]
