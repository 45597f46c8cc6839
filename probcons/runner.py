"""The `probcons run` job: backbone predictions, constrained posteriors, metrics and files.

For each of `n_functions` functions of a problem at one parameter value: draw contexts, predict
with the backbone, apply each method (unconstrained, HardC, ProbConserv via the Pyro model's
constraint sites), draw posterior samples, score them against the exact solution, and write one
InferenceData file per method, `metrics.json` and the report into the run directory.

Functions are processed in chunks of `chunk_functions`: a chunk's draws and moments are appended
to the methods' files (netCDF with an unlimited `function` dimension) and then dropped, and only
the per-function scores (a few numbers each) are kept for the summary, so memory stays flat as
`n_functions` grows. Every function has its own seeds, so the files and metrics do not depend on
the chunk size. The report's per-function summaries are fed as the functions go, from the draws
as the files store them (`probcons.report.summary.MethodSummarizer`), so the report reads no file
back; one sort of each function's draws serves the CRPS, every interval and the report.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import arviz as az
import h5netcdf
import numpy as np
import torch
from tqdm.auto import tqdm

from probcons import metrics, seeds
from probcons.backbones import get_backbone
from probcons.errors import OutputError, UsageError
from probcons.inference import ConstraintSites, ExactConditioning
from probcons.io import default_mode, write_json
from probcons.metrics import summarize
from probcons.posterior_files import constraint_arrays, posterior_inference_data, write_groups
from probcons.problems import FAMILIES, Contexts, Problem, get_problem, sample_contexts
from probcons.report import write_report
from probcons.report.data import constraint_residual, plain_attributes
from probcons.report.summary import MethodSummarizer
from probcons.resources import (
    available_models,
    is_bare_name,
    load_model,
    model_file,
    model_path,
)
from probcons.validation import check_nonnegative, check_positive_int

METHODS = {
    "unconstrained": "the backbone's prediction as it is",
    "hardc": "HardC: mean projected onto G u = b (identity covariance), variance unchanged",
    "probconserv": "ProbConserv: exact Gaussian posterior given the model's constraint sites",
}
MINIMUM_GRID = 3
MAX_SEED = 2**32 - 1
"""Largest --seed: the per-function generator seeds stay inside torch's 64-bit range."""
CHUNK_FUNCTIONS = 10
"""Functions per chunk: about 12 MB of float32 draws per function at 101 x 101, 100 draws and
three methods, so a chunk holds about 120 MB whatever the number of functions."""
FUNCTION_DIMENSION = "function"
MAX_GRID_POINTS = 10**8
"""Largest n_t n_x of --grid: one float64 field is then 800 MB (the truth, a mean, a variance)."""
MAX_CHUNK_BYTES = 16 * 2**30
"""Largest memory of one chunk's float32 draws, n_t n_x x draws x methods x functions per chunk
x 4 bytes (16 GiB; the default run holds 120 MB)."""
STAGING_PREFIX_SUFFIX = len(".") + len(".") + 8 + len(".previous")
"""Characters the staging folders add to OUT's name: `.{name}.XXXXXXXX.partial`, `.previous`."""
OWNER_FILE = ".probcons-owner"
"""In a staging folder: `PID HOST` of the process writing it, so a later run removes the folder
once that process is gone (a SIGKILL cannot clean up)."""


@dataclass
class RunSettings:
    """Arguments of one run; `check()` validates them all before anything is written."""

    problem: str
    backbone: str = "gp"
    methods: tuple[str, ...] = ("unconstrained", "hardc", "probconserv")
    parameter: float | None = None
    n_functions: int = 10
    grid: tuple[int, int] = (101, 101)
    draws: int = 100
    seed: int = 0
    noise_std: float = 0.0
    out: Path | None = None
    overwrite: bool = False
    model: Path | None = None
    backbone_options: dict = field(default_factory=dict)
    chunk_functions: int = CHUNK_FUNCTIONS

    def check(self) -> Problem:
        problem = get_problem(self.problem)
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown or not self.methods:
            raise UsageError(
                f"methods: expected a comma-separated subset of {', '.join(METHODS)}, "
                f"got {','.join(self.methods) or 'nothing'}"
            )
        self.parameter = problem.check_parameter(
            problem.test_values[-1] if self.parameter is None else self.parameter
        )
        check_positive_int(self.n_functions, "n_functions")
        check_positive_int(self.draws, "draws")
        check_positive_int(self.chunk_functions, "chunk_functions")
        n_t, n_x = self.grid
        if min(n_t, n_x) < MINIMUM_GRID:
            raise UsageError(
                f"grid: expected at least {MINIMUM_GRID}x{MINIMUM_GRID} points, got {n_t}x{n_x}"
            )
        self.check_memory()
        check_nonnegative(self.noise_std, "noise_std")
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not (0 <= self.seed <= MAX_SEED)
        ):
            raise UsageError(f"seed: expected an integer in [0, {MAX_SEED}], got {self.seed!r}")
        self.out = Path(self.out or Path("posteriors") / f"{self.problem}-{self.backbone}")
        self.model = Path(self.model or default_model_path(self.problem))
        if is_bare_name(self.model):  # a shipped model's name, e.g. stefan-bounded
            if not model_path(str(self.model)).is_file():
                raise UsageError(
                    f"model: expected a Pyro model file or a shipped model's name "
                    f"({', '.join(available_models())}), got {str(self.model)!r}"
                )
            self.model = model_file(str(self.model))
        if not self.model.is_file():
            raise UsageError(f"model: expected a Pyro model file, got missing {str(self.model)!r}")
        if self.model.suffix != ".py":
            raise UsageError(f"model: expected a Python file (.py), got {str(self.model)!r}")
        check_output_directory(self.out, self.overwrite)
        return problem

    def check_memory(self) -> None:
        """Refuse a grid of more than MAX_GRID_POINTS points, or chunks whose float32 draws
        would exceed MAX_CHUNK_BYTES, before anything is allocated."""
        n_t, n_x = self.grid
        points = n_t * n_x
        if points > MAX_GRID_POINTS:
            raise UsageError(
                f"grid: expected at most {MAX_GRID_POINTS:.0e} points (n_t n_x, MAX_GRID_POINTS), "
                f"got {n_t}x{n_x} = {points:.3g}"
            )
        functions = min(self.chunk_functions, self.n_functions)
        size = points * self.draws * len(self.methods) * functions * 4
        if size > MAX_CHUNK_BYTES:
            raise UsageError(
                f"grid: expected at most {MAX_CHUNK_BYTES / 2**30:g} GiB of draws per chunk "
                f"(n_t n_x x draws x methods x chunk functions x 4 bytes, MAX_CHUNK_BYTES), got "
                f"{n_t}x{n_x} x {self.draws} x {len(self.methods)} x {functions} x 4 = "
                f"{size / 2**30:.3g} GiB; lower --grid, --draws or --chunk-functions"
            )


def default_model_path(problem: str) -> Path:
    """models/<problem>.py in the working directory, else the shipped one (`probcons.resources`)."""
    return model_file(problem)


def check_output_directory(out: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty directory (unless overwrite), the current directory or one
    of its ancestors, a name too long for the staging folders, or an unwritable location."""
    resolved, here = Path(out).resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise UsageError(
            f"out: cannot replace the current directory or one of its ancestors (a run "
            f"directory is removed and renamed into place), got {str(out)!r}"
        )
    check_name_length(out, "out", STAGING_PREFIX_SUFFIX)
    if out.exists() and not out.is_dir():
        raise UsageError(f"out: expected a directory, got the file {str(out)!r}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(
            f"out: {str(out)!r} exists and is not empty; pass --overwrite to replace it"
        )
    check_writable_location(out, "out")


def check_name_length(path: Path, name: str, extra: int = 0) -> None:
    """Refuse a component of `path` longer than its file system's NAME_MAX (the last one: less
    `extra`, the characters a hidden staging name adds), counted in bytes as the OS sees them."""
    resolved = Path(path).resolve()
    ancestor = resolved.parent
    while not _exists(ancestor):
        ancestor = ancestor.parent
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    parts = resolved.relative_to(ancestor).parts
    for index, part in enumerate(parts):
        allowed = limit - extra if index == len(parts) - 1 else limit
        length = len(os.fsencode(part))
        if length > allowed:
            raise UsageError(
                f"{name}: expected path components of at most {allowed} bytes (NAME_MAX "
                f"{limit} of the file system, less {limit - allowed} for the hidden staging "
                f"name), got {length} bytes in {part[:20] + '...'!r}"
            )


def _exists(path: Path) -> bool:
    """path.exists(), False for a name the OS refuses (ENAMETOOLONG) as for a missing one."""
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True


def check_writable_location(path: Path, name: str) -> None:
    """Refuse `path` when its nearest existing ancestor is not a directory this process can
    create a file in (probed with a temporary file, which works for root too; nothing stays)."""
    ancestor = Path(path).resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK):
        try:
            with tempfile.TemporaryFile(dir=ancestor):
                return
        except OSError:
            pass
    raise UsageError(f"{name}: cannot write under {str(ancestor)!r}")


def collect_sites(conditioning: ExactConditioning, prediction, *model_args) -> ConstraintSites:
    """One trace of the run's model: the prediction and the rows of every observed site."""
    sites = conditioning.collect(prediction, *model_args)
    if sites.constraint is None:
        raise UsageError(
            "model: expected at least one observed linear site (observe_constraint or a "
            "Normal/Delta site of the latent), found none"
        )
    return sites


def function_contexts(problem: Problem, parameter: float, seed: int, function: int) -> Contexts:
    """Test function `function`'s context points under run seed `seed` (`probcons.seeds`)."""
    return sample_contexts(problem, parameter, seeds.context_generator(seed, function))


def predict_function(
    backbone,
    problem: Problem,
    parameter: float,
    grid,
    seed: int,
    function: int,
    contexts: Contexts | None = None,
):
    """The backbone's Posterior of test function `function` on `grid`, from its contexts
    (`function_contexts` unless given) and the backbone's own generator (`probcons.seeds`)."""
    if contexts is None:
        contexts = function_contexts(problem, parameter, seed, function)
    generator = seeds.prediction_generator(seed, function)
    return backbone.predict(problem, parameter, contexts, grid, generator)


def draw_and_score(posterior, sites, truth, problem, parameter, settings, function: int):
    """(draws (D, n_t, n_x), the draws sorted along D, `score_function`'s scores) of one method
    of test function `function`; settings: anything with `draws` and `seed` (RunSettings, the
    benchmark's arguments). Every method of a function gets the same draw generator."""
    samples = posterior.sample(settings.draws, seeds.draw_generator(settings.seed, function))
    ordered = metrics.sorted_draws(samples)
    scores = score_function(posterior, samples, truth, sites, problem, parameter, ordered)
    return samples, ordered, scores


def field_scores(prediction, ordered: torch.Tensor, truth: torch.Tensor, constraint) -> dict:
    """The metrics that need no Problem: MSE, CE = mean |G mean - b| over the rows of
    `constraint` (a LinearConstraint or ConstraintSites), pointwise LL (the "probcons" protocol
    of `metrics.protocol_scores`, over the whole grid), CRPS and 50 / 90 % coverage; ordered:
    the draws (D, n_t, n_x) sorted along D (`metrics.sorted_draws`), one sort serving the CRPS
    and both intervals."""
    mean, variance = prediction.mean, prediction.variance

    def coverage(level: float) -> float:
        inside = metrics.central_interval_coverage(ordered, truth, level, presorted=True)
        return float(inside.double().mean())

    whole_grid = metrics.protocol_scores("probcons", mean, variance, truth, constraint=constraint)
    return {
        "mse": whole_grid["mse"],
        "ce": whole_grid["ce"],
        "ll": whole_grid["ll"],
        "crps": float(metrics.crps_ensemble(ordered, truth, presorted=True).mean()),
        "coverage_50": coverage(0.5),
        "coverage_90": coverage(0.9),
    }


def score_function(
    prediction,
    samples: torch.Tensor,
    truth: torch.Tensor,
    constraint,
    problem: Problem,
    parameter: float,
    ordered: torch.Tensor | None = None,
) -> dict[str, float]:
    """Metrics of one function: `field_scores`, the MSE at the time of interest, the reference
    code's MSE, LL and signed CE at t* (paper_mse, paper_ll, paper_ce: the "paper" protocol of
    `metrics.protocol_scores`) and, for shock problems, the posterior of the front position;
    samples (D, n_t, n_x)."""
    grid = prediction.grid
    index = grid.time_index(problem.time_of_interest)
    if ordered is None:
        ordered = metrics.sorted_draws(samples)
    scores = field_scores(prediction, ordered, truth, constraint)
    scores = {
        "mse": scores["mse"],
        "mse_t": metrics.mse(prediction.mean[index], truth[index]),
        **scores,
    }
    scores.update(
        metrics.protocol_scores(
            "paper",
            prediction.mean,
            prediction.variance,
            truth,
            x=grid.x,
            time_index=index,
            mass=problem.mass(grid.t[index], parameter),
        )
    )
    threshold = problem.front_threshold(parameter)
    if threshold is not None:
        positions = metrics.front_positions(samples[:, index], grid.x, threshold)
        true_position = float(metrics.front_positions(truth[index][None], grid.x, threshold)[0])
        scores["shock_position"] = float(positions.mean())
        scores["shock_position_error"] = abs(float(positions.mean()) - true_position)
        lower, upper = torch.quantile(positions, torch.tensor([0.05, 0.95], dtype=positions.dtype))
        scores["shock_position_covered"] = float(lower <= true_position <= upper)
    return scores


def site_scores(sites: ConstraintSites, samples: torch.Tensor) -> tuple[dict, np.ndarray | None]:
    """What the model asks beyond linear rows, per function: with bound sites the fraction of
    draw points outside them (`bound_violations`), with nonlinear sites the largest |h(u) - b|
    over the draws, sites and rows (`site_residual`); and that largest residual per nonlinear
    site (K,), or None without any; samples (D, n_t, n_x)."""
    scores, per_site = {}, None
    if sites.bounds is not None:
        outside = (samples < sites.bounds.lower) | (samples > sites.bounds.upper)
        scores["bound_violations"] = float(outside.double().mean())
    if sites.nonlinear:
        residuals = sites.site_residuals(samples)
        per_site = np.array([float(residuals[site.name].abs().max()) for site in sites.nonlinear])
        scores["site_residual"] = float(per_site.max())
    return scores, per_site


def run(
    settings: RunSettings, progress: bool = True, report: bool = True
) -> dict[str, dict[str, float]]:
    """Run the job; returns {method: metric summary} and writes the run directory (with the
    report unless `report` is false).

    Functions go in chunks of settings.chunk_functions; each chunk is appended to the files in a
    staging directory that replaces settings.out once every function is done.
    """
    problem = settings.check()
    parameter = settings.parameter
    conditioning = ExactConditioning(load_model(settings.model))
    backbone = get_backbone(settings.backbone, **settings.backbone_options)
    grid = problem.grid(*settings.grid)
    times, positions = grid.mesh()
    truth = problem.solution(times, positions, parameter)
    mass = problem.mass(grid.t, parameter)
    model_args = (problem, parameter, settings.noise_std)
    scores: dict[str, list[dict[str, float]]] = {method: [] for method in settings.methods}
    staging = _staging_directory(settings.out)
    summarizers = None  # the report's per-method summaries, fed as the functions go
    try:
        bar = tqdm(
            total=settings.n_functions,
            desc=f"{settings.problem} ({settings.backbone})",
            disable=not progress,
        )
        for start in range(0, settings.n_functions, settings.chunk_functions):
            functions = range(start, min(start + settings.chunk_functions, settings.n_functions))
            collected = {
                method: {"samples": [], "mean": [], "variance": [], "site_residual": []}
                for method in settings.methods
            }
            collected_rows: list[ConstraintSites] = []
            for function in functions:
                prediction = predict_function(
                    backbone, problem, parameter, grid, settings.seed, function
                )
                sites = collect_sites(conditioning, prediction, *model_args)
                collected_rows.append(sites)
                if report and summarizers is None:
                    summarizers = _report_summarizers(settings, problem, grid, sites)
                for method in settings.methods:
                    posterior = sites.posterior(method)
                    samples, ordered, function_scores = draw_and_score(
                        posterior, sites, truth, problem, parameter, settings, function
                    )
                    store = collected[method]
                    beyond_linear, per_site = site_scores(sites, samples)
                    function_scores.update(beyond_linear)
                    if per_site is not None:
                        store["site_residual"].append(per_site)
                    store["samples"].append(samples.numpy().astype(np.float32))
                    store["mean"].append(posterior.mean.numpy())
                    store["variance"].append(posterior.variance.numpy())
                    scores[method].append(function_scores)
                    if summarizers is not None:
                        _summarize_stored(summarizers[method], store, ordered, truth, mass, sites)
                bar.update(1)
            with writing(settings.out):
                _append_chunk(
                    staging, settings, problem, grid, truth, mass, collected, collected_rows
                )
            del collected
        bar.close()
        summary = {method: summarize(per_function) for method, per_function in scores.items()}
        with writing(settings.out):
            write_json(staging / "metrics.json", summary)
            if report:  # in the staging folder: a run that is in place has its report
                write_report(
                    [staging],
                    summaries=[s.summary() for s in summarizers.values()],
                    labels=[settings.out.name],
                )
            _move_into_place(staging, settings.out, settings.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


OPERATOR_BACKBONE = "boon-fno"
"""Default backbone of the operator families (GPME: RunSettings.backbone, "gp")."""


@dataclass
class ProblemRun:
    """What `run_problem` did: the problem's family, the backbone and run directory it used,
    and the results (gpme: {method: metric summary}, with the checked `settings`; operator
    families: the contents of metrics.json, `probcons.operator_runner`)."""

    family: str
    backbone: str
    out: Path
    results: dict
    settings: RunSettings | None = None


def run_problem(
    problem: str,
    backbone: str | None = None,
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    overwrite: bool = False,
    threads: int | None = None,
    progress: bool = True,
    **options,
) -> ProblemRun:
    """Run any registered problem, dispatched on `problem_family(problem)`; `probcons run`.

    gpme: `run(RunSettings(...))`, options the other RunSettings fields (methods, parameter,
    n_functions, grid, draws, noise_std, model, backbone_options, chunk_functions);
    operator-1d / operator-2d: `probcons.operator_runner.run_operator_problem` after the checks
    of OUT, options its keywords (epochs, n_train, n_test, ...). backbone default "gp" /
    OPERATOR_BACKBONE; out default posteriors/<problem>-<backbone>; threads:
    torch.set_num_threads (None leaves it). A name of no family runs as GPME, whose check names
    the known problems.
    """
    if threads is not None:
        check_positive_int(threads, "threads")
    family = FAMILIES.get(problem, "gpme") if isinstance(problem, str) else "gpme"
    if family == "gpme":
        known = {item.name for item in fields(RunSettings)} - {"problem", "backbone", "out"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(
                f"options: {', '.join(unknown)} do not apply to GPME problems (expected some of "
                f"{', '.join(sorted(known - {'seed', 'overwrite'}))})"
            )
        if threads is not None:
            torch.set_num_threads(threads)
        settings = RunSettings(
            problem, backbone or "gp", seed=seed, out=out, overwrite=overwrite, **options
        )
        summary = run(settings, progress=progress)
        return ProblemRun(family, settings.backbone, settings.out, summary, settings)
    from probcons.operator_runner import run_operator_problem

    backbone = backbone or OPERATOR_BACKBONE
    out = Path(out or Path("posteriors") / f"{problem}-{backbone}")
    check_output_directory(out, overwrite)
    result = run_operator_problem(problem, backbone, out, seed=seed, threads=threads, **options)
    return ProblemRun(family, backbone, out, result)


@contextlib.contextmanager
def writing(target: Path):
    """Turn an OSError raised while writing `target` (ENOSPC, EBUSY, ENAMETOOLONG, EACCES, ...)
    into an OutputError naming `target`, which the CLI reports in one line (exit 74).

    What the write prints on file descriptor 2 is held back and passed on when the write
    succeeds; when it fails it is dropped: h5py's finalizers print a traceback from C for every
    close that fails again on a full disk, which the one-line error already says."""
    held = _hold_stderr()
    failed = False
    try:
        yield
    except OutputError:
        failed = True
        raise
    except OSError as error:
        failed = True
        _abandon_open_files(Path(target).absolute().parent)
        raise OutputError(error.errno or errno.EIO, _reason(error), str(target)) from error
    finally:
        _release_stderr(held, replay=not failed)


def _hold_stderr():
    """(saved descriptor 2, temporary file now behind it), or None when no file can be made."""
    import sys

    try:
        sink = tempfile.TemporaryFile()
    except OSError:
        return None
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    return saved, sink


def _release_stderr(held, replay: bool) -> None:
    """Put descriptor 2 back; write what it received meanwhile when `replay`."""
    import sys

    if held is None:
        return
    saved, sink = held
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    if replay:
        sink.seek(0)
        text = sink.read()
        if text:
            os.write(2, text)
    sink.close()


def _abandon_open_files(folder: Path) -> None:
    """Mark closed, without the final flush, the netCDF files under `folder` that a failed write
    left open (xarray caches them): flushing, or even reading, a file whose write failed (ENOSPC)
    makes HDF5 crash (SIGSEGV) when the file is later collected."""
    import gc
    import sys

    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None  # h5py reports each failed close
    try:
        for handle in gc.get_objects():
            if not issubclass(type(handle), h5netcdf.File) or handle._closed:
                continue
            if str(Path(handle._filename).absolute()).startswith(str(folder)):
                handle._closed = True  # its HDF5 file may be gone: touch nothing else
    finally:
        sys.unraisablehook = hook


def _reason(error: OSError) -> str:
    """The OS's short text for error's errno (HDF5 puts a page into strerror), else its text."""
    if error.errno:
        return os.strerror(error.errno)
    return " ".join(str(error).split()) or type(error).__name__


def _file_attributes(settings: RunSettings, problem: Problem, method: str, flat: bool) -> dict:
    """The attributes of every group of a method's file."""
    return {
        "problem": settings.problem,
        "backbone": settings.backbone,
        "method": method,
        "sigma_G": settings.noise_std,
        "parameter_name": problem.parameter_name,
        "time_of_interest": problem.time_of_interest,
        "seed": settings.seed,
        "constraint_flat": int(flat),
    }


def _report_summarizers(settings, problem, grid, sites) -> dict[str, MethodSummarizer]:
    """One report summarizer per method, as `write_report` would make reading the files."""
    return {
        method: MethodSummarizer(
            settings.out.resolve().name,
            method,
            None,
            grid=grid,
            attrs=plain_attributes(_file_attributes(settings, problem, method, sites.flat)),
            n_functions=settings.n_functions,
            n_draws=settings.draws,
            parameters=[float(settings.parameter)] * settings.n_functions,
            has_ce=True,  # the files hold the constraint rows
            constraint_rows=tuple(sites.constraint.names),
            bounds=None if sites.bounds is None else (sites.bounds.lower, sites.bounds.upper),
            site_residuals=bool(sites.nonlinear),
        )
        for method in settings.methods
    }


def _summarize_stored(summarizer, store, ordered, truth, mass, sites) -> None:
    """Feed the report the function just drawn as its file will hold it: float32 draws, float64
    moments and constraint rows; ordered (the float64 draws sorted) rounds to the float32 ones
    sorted, since rounding keeps the order."""
    as_stored = _as_float64_tensor
    mean, variance = as_stored(store["mean"][-1]), as_stored(store["variance"][-1])
    constraint = sites.constraint
    residual = constraint_residual(
        as_stored(constraint.weights.numpy()), as_stored(constraint.values.numpy()), mean
    )
    summarizer.add(
        as_stored(store["samples"][-1]),
        as_stored(truth.numpy()),
        (mean, variance),
        as_stored(mass.numpy()),
        residual,
        ordered=ordered.to(torch.float32).to(torch.float64),
        site_residual=float(store["site_residual"][-1].max()) if sites.nonlinear else None,
    )


def _as_float64_tensor(values: np.ndarray) -> torch.Tensor:
    """A stored array as the report reads it back (`probcons.report.data.MethodData`)."""
    return torch.from_numpy(np.asarray(values, dtype=np.float64))


def _staging_directory(out: Path) -> Path:
    """A hidden folder beside `out` (same file system) that becomes `out` when the run is done,
    holding OWNER_FILE; the stale ones of killed runs beside `out` are removed first."""
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
        try:
            os.chmod(staging, default_mode(directory=True))  # mkdtemp alone gives 0700
            _write_owner(staging)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return staging


def _write_owner(folder: Path) -> None:
    (folder / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")


def _owner_is_gone(folder: Path) -> bool:
    """True when `folder`'s OWNER_FILE names a process of this host that no longer exists; False
    for a live process, another host's, or a folder without a readable owner."""
    try:
        pid_text, host = (folder / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    return False


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the `.{out.name}.*.partial` and `.previous` folders beside `out` whose owner
    process is gone; returns them. Kept: a live process's, ownerless ones, and those of a run
    killed between its two renames while `out` is missing (they are then the only copies)."""
    removed = []
    for folder in sorted(out.parent.glob(f".{glob.escape(out.name)}.*")):
        token, kind = folder.name[len(out.name) + 2 :].rpartition(".")[::2]
        if kind not in ("partial", "previous") or not folder.is_dir() or len(token) != 8:
            continue
        partial = folder.with_name(f".{out.name}.{token}.partial")
        previous = folder.with_name(f".{out.name}.{token}.previous")
        if not (_owner_is_gone(partial) or _owner_is_gone(previous)):
            continue
        if previous.is_dir() and not _exists(out):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _append_chunk(staging, settings, problem, grid, truth, mass, collected, rows) -> None:
    """Append one chunk of functions to every `<method>.nc` in `staging`, with the constraint
    rows each function was conditioned on (`rows`, one ConstraintSites per function)."""
    constraint = constraint_arrays([sites.constraint for sites in rows])
    first = rows[0]
    bounds = None if first.bounds is None else (first.bounds.lower, first.bounds.upper)
    for method, store in collected.items():
        n_functions = len(store["samples"])
        data = posterior_inference_data(
            samples=np.stack(store["samples"]),
            truth=np.broadcast_to(truth.numpy(), (n_functions, *grid.shape)),
            mean=np.stack(store["mean"]),
            variance=np.stack(store["variance"]),
            parameter=np.full(n_functions, settings.parameter),
            mass=np.broadcast_to(mass.numpy(), (n_functions, grid.n_t)),
            grid=grid,
            attrs=_file_attributes(settings, problem, method, first.flat),
            constraint=constraint,
            bounds=None if bounds is None else tuple(bound.numpy() for bound in bounds),
            site_residual=(
                (np.stack(store["site_residual"]), tuple(site.name for site in first.nonlinear))
                if first.nonlinear
                else None
            ),
        )
        append_inference_data(staging / f"{method}.nc", data)


def append_inference_data(path: Path, data: az.InferenceData) -> None:
    """Write `data` to `path`, or append it along `function` when the file exists.

    The first write is ArviZ's netCDF layout (a group per InferenceData group, zlib-compressed
    but for the draws: `probcons.posterior_files.netcdf_encoding`) with `function` unlimited; later writes grow that dimension and fill the new rows, numbering
    the functions on from the file's last one.
    """
    if not path.exists():
        write_groups(path, data, unlimited=FUNCTION_DIMENSION)
        return
    with h5netcdf.File(path, "a") as handle:
        for group in data.groups():
            dataset = data[group]
            if FUNCTION_DIMENSION not in dataset.dims:
                continue
            stored = handle[group]
            old = stored.dimensions[FUNCTION_DIMENSION].size
            new = old + dataset.sizes[FUNCTION_DIMENSION]
            stored.resize_dimension(FUNCTION_DIMENSION, new)
            for name, variable in dataset.variables.items():
                if FUNCTION_DIMENSION not in variable.dims:
                    continue
                values = np.arange(old, new) if name == FUNCTION_DIMENSION else variable.values
                rows = [slice(None)] * variable.ndim
                rows[variable.dims.index(FUNCTION_DIMENSION)] = slice(old, new)
                stored.variables[name][tuple(rows)] = values


def _move_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    """Move the old run aside, then the new one in: a kill between the two renames leaves both
    complete (hidden .previous and .partial folders beside OUT), never neither.

    Without `overwrite`, OUT is only ever created: an empty OUT is removed first and the rename
    fails, with a UsageError, if another process filled OUT while this run was working (the
    check at start cannot see that), so concurrent runs never replace each other's results.
    """
    owned = (staging / OWNER_FILE).exists()
    if not overwrite:
        with contextlib.suppress(OSError):
            out.rmdir()  # only succeeds when empty
        (staging / OWNER_FILE).unlink(missing_ok=True)
        try:
            os.rename(staging, out)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
            raise UsageError(
                f"out: {str(out)!r} was written by another run while this one worked; it is "
                "kept, and this run's results are discarded (pass --overwrite to replace it)"
            ) from None
        return
    previous = staging.with_suffix(".previous")
    if out.exists():
        os.replace(out, previous)
        if owned:  # a kill before the rmtree below leaves it for a later run to remove
            _write_owner(previous)
    (staging / OWNER_FILE).unlink(missing_ok=True)
    os.replace(staging, out)
    if previous.exists():
        shutil.rmtree(previous)


def format_table(summary: dict[str, dict[str, float]]) -> str:
    """The metrics table printed by `probcons run` (mean +- standard error over functions)."""
    columns = [
        ("mse", "MSE"),
        ("mse_t", "MSE@t*"),
        ("ce", "CE"),
        ("ll", "LL"),
        ("crps", "CRPS"),
        ("coverage_50", "cov50"),
        ("coverage_90", "cov90"),
        ("shock_position_error", "shock err"),
        ("bound_violations", "outside bounds"),
        ("site_residual", "site residual"),
    ]
    present = [(key, label) for key, label in columns if key in next(iter(summary.values()))]
    header = "| method | " + " | ".join(label for _, label in present) + " |"
    lines = [header, "|" + "---|" * (len(present) + 1)]
    for method, values in summary.items():
        cells = [f"{values[key]:.3g} ± {values[key + '_se']:.1g}" for key, _ in present]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
