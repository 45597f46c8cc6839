"""The tables of docs/results/*.md, generated from benchmarks/results/*.json and the published
numbers in benchmarks/published/*.json (`make results`).

    python benchmarks/results_pages.py            # rewrite the generated regions
    python benchmarks/results_pages.py --check    # exit 1 naming each region that differs

A generated table sits in its page between `<!-- generated: NAME -->` and
`<!-- end generated -->`; only those regions are rewritten, the prose around them is kept. Each
region says which JSON it comes from, the command that wrote that JSON, the machine recorded in
it and the metric protocol of its numbers (`probcons.metrics.PROTOCOLS`); the differences of
protocol from the papers are listed once, in docs/results/paper-comparison.md.

A table's formatter lives here once, as a function of the JSON's dict (`gpme_table`,
`shock_table`, `stefan_front_table`, `calibration_rows`, `main_job_table`, `latent_rows`,
`boon_seed_rows`, `boon2d_rows`, `conditioning_rows`, `beyond_linear_rows`): the region
generators call it on the loaded file, the benchmark scripts import it (their folder is on
sys.path) and call it on their in-memory results. This module imports no benchmark script, so
importing it costs numpy and probcons' metrics, not a benchmark's dependencies.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from probcons.io import write_text
from probcons.metrics import PROTOCOLS, mean_and_standard_error
from probcons.problems import get_problem

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PUBLISHED = ROOT / "benchmarks" / "published"
DOCS = ROOT / "docs" / "results"
REGION = re.compile(
    r"^(?P<indent>[ ]*)<!-- generated: (?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)"
    r"^(?P=indent)<!-- end generated -->",
    re.S | re.M,
)
"""A generated region; an indented marker (inside a list item) indents its content alike."""
DIFFERENCES = "[differences of protocol](paper-comparison.md#differences-of-protocol)"
PROBCONS_LABEL = (
    f"Metrics: **probcons protocol** ({PROTOCOLS['probcons']}), not the paper's; see {DIFFERENCES}."
)
PAPER_LABEL = f"Metrics: **paper protocol** ({PROTOCOLS['paper']}); see {DIFFERENCES}."


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def source(json_name: str, command: str, machine: str) -> str:
    """The provenance line of a region: its JSON, the command that wrote it, the machine."""
    return (
        f"From [benchmarks/results/{json_name}](../../benchmarks/results/{json_name}), written "
        f"by `{command}`; machine: {machine}."
    )


# ---------------------------------------------------------------- GPME (benchmarks/gpme.py)

GPME_METHODS = (
    "anp",
    "softc-anp",
    "hardc-anp",
    "probconserv-anp",
    "gp",
    "probconserv-gp",
    "ensemble",
    "hardc-ensemble",
    "probconserv-ensemble",
    "fno-ensemble",
    "hardc-fno-ensemble",
    "probconserv-fno-ensemble",
)
GPME_COMMANDS = (
    "python benchmarks/gpme.py --problems stefan --methods anps",
    "python benchmarks/gpme.py --problems diffusion,pme --methods anps",
    "python benchmarks/gpme.py --methods gps",
    "python benchmarks/gpme.py --methods ensembles --n-functions 10",
)
ENSEMBLE_BACKBONES = ("ensemble", "fno-ensemble")
PAPER_FUNCTIONS = 50
"""Test functions per parameter value in the ProbConserv paper."""
SHOCK_METHODS = ("anp", "softc-anp", "hardc-anp", "probconserv-anp")
"""The order of the shock-position rows (others in the JSON follow)."""
ROUNDING_SPREAD = 1e-9
"""A standard error below this fraction of |value| is rounding of identical values: shown as 0."""


def backbone_of(method: str) -> str:
    """The backbone of a gpme.json row: its name without the hardc- / probconserv- prefix."""
    for prefix in ("hardc-", "probconserv-"):
        if method.startswith(prefix):
            return method[len(prefix) :]
    return method


def ordered_methods(records: dict) -> list[str]:
    known = [m for m in GPME_METHODS if m in records]
    return known + [m for m in records if m not in GPME_METHODS]


def fmt(value, error=None) -> str:
    """A cell of the GPME tables: 3 significant digits, ± a 1-digit error."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if error is None:
        return f"{value:.3g}"
    if abs(error) <= ROUNDING_SPREAD * abs(value):
        error = 0.0
    return f"{value:.3g} ± {error:.1g}"


def gpme_table(problem, parameter: str, records: dict[str, dict]) -> str:
    """One problem and parameter value of gpme.json: the protocol lines and the table (also
    printed by benchmarks/gpme.py from its in-memory records)."""
    columns = [
        ("mse", "MSE"),
        ("mse_t", f"MSE@t={problem.time_of_interest:g}"),
        ("ce", "CE"),
        ("ll", "LL"),
        ("crps", "CRPS"),
        ("coverage_90", "cov90"),
        ("shock_position_error", "front err"),
        ("latent_variance_share", "latent share"),
        ("member_spread_share", "spread share"),
    ]
    present = [
        (key, label)
        for key, label in columns
        if any(r.get(key) is not None for r in records.values())
    ]
    order = ordered_methods(records)
    protocols: dict[str, list[str]] = {}
    for method in order:
        protocols.setdefault(json.dumps(records[method]["protocol"], sort_keys=True), []).append(
            method
        )
    lines = [f"### {problem.name}, {problem.parameter_name} = {parameter}", ""]
    for protocol, members in sorted(protocols.items()):
        p = json.loads(protocol)
        if p.get("latent_samples") is not None:
            per_function = f"{p['latent_samples']} latent samples per function (ANP)"
            scales = {
                backbone_of(m): (
                    records[m]["variance_scale"],
                    records[m].get("context_exponent", 0),
                )
                for m in members
                if records[m].get("variance_scale") is not None
                and records[m].get("count_scale") is None
            }
            counted = {
                backbone_of(m): (records[m]["count_scale"], records[m]["contexts"])
                for m in members
                if records[m].get("count_scale") is not None
            }
            if scales:
                per_function += (
                    ", decoder variance times the held-out calibration s0 f^gamma, f the fit to "
                    "the function's contexts ("
                    + ", ".join(
                        f"{name} s0 = {scale:.3g}, gamma = {exponent:.3g}"
                        for name, (scale, exponent) in scales.items()
                    )
                    + ")"
                )
            if counted:
                per_function += (
                    ", decoder variance times the conditioned predictive's held-out calibration "
                    "c(k) by number of contexts k ("
                    + ", ".join(
                        f"{name} c({contexts}) = {scale:.3g}"
                        for name, (scale, contexts) in counted.items()
                    )
                    + ")"
                )
        elif all(backbone_of(m) in ENSEMBLE_BACKBONES for m in members):
            per_function = "one prediction per parameter value (contexts unused)"
        else:
            per_function = "one Gaussian per function, fitted to its contexts"
        lines.append(
            f"Protocol ({', '.join(members)}): {p['n_functions']} test functions, grid "
            f"{p['grid'][0]}x{p['grid'][1]}, {per_function}, {p['draws']} posterior draws, "
            f"sigma_G = {p['sigma_G']:g}."
        )
    lines += [
        "",
        "| method | fns | "
        + " | ".join(label for _, label in present)
        + " | train s wall (CPU) | eval s/fn |",
        "|" + "---|" * (len(present) + 4),
    ]
    for method in order:
        values = records[method]
        cells = [fmt(values.get(key), values.get(f"{key}_se")) for key, _ in present]
        train = fmt(values.get("train_s"))
        if values.get("train_cpu_s") is not None:
            train += f" ({values['train_cpu_s']:.0f} CPU)"
        cells += [train, fmt(values.get("eval_s_per_function"))]
        functions = values["protocol"]["n_functions"]
        lines.append(f"| {method} | {functions} | " + " | ".join(cells) + " |")
    floor = next(iter(records.values())).get("ce_floor_exact_solution")
    ce_column = [key for key, _ in present].index("ce")
    empty = [""] * (len(present) + 2)
    empty[ce_column] = fmt(floor)
    lines.append("| exact solution (CE floor) | | " + " | ".join(empty) + " |")
    return "\n".join(lines)


def shock_table(shocks: dict) -> str:
    """The front position on function 0 (stefan_shock_positions.json); benchmarks/gpme.py
    prints it beside its figure."""
    truth = shocks["truth"]
    truth_grid = shocks.get("truth_grid", float("nan"))
    draws = len(next(v for v in shocks.values() if isinstance(v, list)))
    lines = [f"Shock position at t = 0.05, u* = 0.6 (function 0, {draws} draws):", ""]
    lines += [
        "| method | mean | 90 % interval | truth inside | error vs truth | error vs grid front |",
        "|---|---|---|---|---|---|",
    ]
    drawn = [m for m in SHOCK_METHODS if m in shocks]
    drawn += [m for m, v in shocks.items() if isinstance(v, list) and m not in SHOCK_METHODS]
    for method in drawn:
        positions = np.asarray(shocks[method])
        lower, upper = np.quantile(positions, [0.05, 0.95])
        mean = float(positions.mean())
        inside = "yes" if lower <= truth <= upper else "no"
        lines.append(
            f"| {method} | {mean:.4f} | [{lower:.4f}, {upper:.4f}] | {inside} "
            f"| {abs(mean - truth):.4f} | {abs(mean - truth_grid):.4f} |"
        )
    lines.append(
        f"\ntruth (analytic alpha sqrt(t)) {truth:.4f}, grid front (the same first crossing on "
        f"the exact field on the grid) {truth_grid:.4f}; figure "
        "docs/figures/stefan_shock_position.png"
    )
    return "\n".join(lines)


def gpme_tables() -> str:
    stored = load("gpme.json")
    machines = sorted(
        {
            r["machine"]
            for entries in stored.values()
            for rs in entries.values()
            for r in rs.values()
        }
    )
    commands = "`, `".join(GPME_COMMANDS)
    lines = [
        f"From [benchmarks/results/gpme.json](../../benchmarks/results/gpme.json), written by "
        f"`{commands}` (each merges its rows) and "
        "[stefan_shock_positions.json](../../benchmarks/results/stefan_shock_positions.json) "
        f"(the ANP rows' run); machine: {'; '.join(machines)}.",
        "",
        PROBCONS_LABEL + " The paper-protocol numbers of the ANP rows, beside the published "
        "ones: [paper-comparison.md](paper-comparison.md).",
        "",
    ]
    for name, entries in stored.items():
        for key, records in entries.items():
            lines += [gpme_table(get_problem(name), key, records), ""]
    lines.append(shock_table(load("stefan_shock_positions.json")))
    return "\n".join(lines)


def end_to_end_stored() -> str:
    """Post-hoc against end-to-end ProbConserv-ANP on gpme.json's stored rows (end-to-end.md)."""
    stored = load("gpme.json")
    lines = []
    machines = set()
    for name, entries in stored.items():
        problem = get_problem(name)
        for key, records in entries.items():
            if "probconserv-anp-e2e" not in records:
                continue
            post, e2e = records["probconserv-anp"], records["probconserv-anp-e2e"]
            machines.add(e2e["machine"])
            cells = [f"{name}, {problem.parameter_name} = {key}"]
            for metric in ("mse", "crps"):
                ratio = e2e[metric] / post[metric]
                cells.append(f"{post[metric]:.3g} -> {e2e[metric]:.3g} ({ratio:.2f}x)")
            cells.append(f"{post['coverage_90']:.3f} -> {e2e['coverage_90']:.3f}")
            cells.append(f"{post['mse_t']:.3g} -> {e2e['mse_t']:.3g}")
            cells.append(f"{records['anp']['mse']:.3g}" if "anp" in records else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    header = [
        f"From [benchmarks/results/gpme.json](../../benchmarks/results/gpme.json), written by "
        "`python benchmarks/gpme.py --problems stefan,pme,diffusion --methods e2e` (the "
        "post-hoc and ANP rows by the commands in [gpme.md](gpme.md)); machine: "
        f"{'; '.join(sorted(machines))} (the end-to-end rows). {PROBCONS_LABEL}",
        "",
        "| problem | MSE | CRPS | cov90 | MSE at t* | MSE of the ANP |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(header + lines)


# ------------------------------------------- the paper protocol (benchmarks/paper_protocol.py)


def published(paper: str) -> dict:
    return json.loads((PUBLISHED / f"{paper}.json").read_text())


def _published_cell(cell: dict | None, key: str, unit: float) -> str:
    """A published cell in absolute units ('mean (se)', the paper's value times its table's
    unit), '—' where the paper's table is not in the repository."""
    value = None if cell is None else cell.get(key)
    if value is None:
        return "—"
    mean, se = value["mean"] * unit, value.get("se")
    if se is None:
        return f"{mean:.3g}"
    return f"{mean:.3g} ({se * unit:.2g})"


def paper_protocol_tables() -> str:
    """Ours under the paper protocol (paper_protocol.json) beside the paper's published cells
    (benchmarks/published/probconserv.json), per problem and parameter value."""
    stored = load("paper_protocol.json")
    tables = published("probconserv")["tables"]
    lines = [PAPER_LABEL, ""]
    for name, entries in stored.items():
        problem = get_problem(name)
        table = next((t for t in tables if t["problem"] == name), None)
        for key, entry in entries.items():
            records, p = entry["methods"], entry["protocol"]
            lines += [
                f"### {name}, {problem.parameter_name} = {key}, t* = {p['time_of_interest']:g}",
                "",
                source("paper_protocol.json", entry["command"], entry["machine"])
                + f" Test functions 0 .. {p['n_functions'] - 1} of gpme.json's run (seed "
                f"{p['seed']}; the paper has {PAPER_FUNCTIONS}), grid "
                f"{p['grid'][0]}x{p['grid'][1]}, {p['latent_samples']} latent samples, "
                f"sigma_G = {p['sigma_G']:g}.",
                "",
            ]
            if table is None or table.get("rows") is None:
                reason = "no table" if table is None else table["reason"]
                lines += [f"Published: not in the repository ({reason}).", ""]
            else:
                units = table["units"]
                lines += [
                    f"Published: {table['paper']}, Table {table['table']}"
                    + (f", page {table['page']}" if table.get("page") else "")
                    + f" ({table['note']}; {table['parameter_reason']}), mean (standard error) "
                    "converted from the table's units ("
                    + ", ".join(f"{k.upper()} x{v:g}" for k, v in units.items() if v != 1)
                    + ").",
                    "",
                ]
            lines += [
                "| method | MSE@t* (paper protocol) | MSE@t* published | LL@t* (paper protocol) "
                "| LL@t* published | CE@t* signed (paper protocol) | CE@t* published "
                "| mean abs CE@t* (ours) |",
                "|---|---|---|---|---|---|---|---|",
            ]
            units = {} if table is None else table.get("units", {})
            for method, values in records.items():
                row = (
                    None
                    if table is None or table.get("rows") is None
                    else table["rows"].get(method)
                )
                ours = [
                    fmt(values[key], values[f"{key}_se"])
                    for key in ("paper_mse", "paper_ll", "paper_ce", "paper_ce_abs")
                ]
                theirs = [
                    _published_cell(row, key, units.get(key, 1)) for key in ("mse", "ll", "ce")
                ]
                cells = [ours[0], theirs[0], ours[1], theirs[1], ours[2], theirs[2], ours[3]]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            anp, ours = records.get("anp"), records.get("probconserv-anp")
            if anp and ours:
                lines += [
                    "",
                    f"ANP / ProbConserv-ANP MSE@t* (paper protocol): "
                    f"{anp['paper_mse'] / ours['paper_mse']:.2f}x; over the whole grid "
                    f"(probcons protocol, the same functions): {anp['mse'] / ours['mse']:.2f}x.",
                ]
            lines.append("")
    claims = published("probconserv").get("claims", [])
    if claims:
        lines.append("Published statements without a table in the repository:")
        lines.append("")
        for claim in claims:
            lines.append(f"- {claim['text']} ({claim['source']})")
    return "\n".join(lines).rstrip()


def boon_published() -> str:
    """BOON seed 0 (boon.json) beside the published values (benchmarks/published/boon.json)."""
    runs = load("boon.json")
    paper = published("boon")
    lines = [
        source("boon.json", "python benchmarks/boon.py", _boon_machine(runs["_meta"]["machine"]))
        + " Ours: seed 0 on our own data and sizes; published: under the source's own data and "
        "sizes (see the differences of protocol above), so only the order of magnitude compares.",
        "",
        "| problem | quantity | ours (seed 0) | published | source |",
        "|---|---|---|---|---|",
    ]
    for item in paper["values"]:
        problem = item["problem"]
        ours = runs[problem]["boon"]["rel_l2"] if problem in runs else None
        shown = "n/a (problem not stated)" if ours is None else f"{ours:.2e}"
        lines.append(
            f"| {problem or 'Burgers, not stated'} | {item['quantity']} | {shown} | "
            f"{item['prefix']}{item['value']:g} | {item['source']} |"
        )
    fno = paper["boundary_error_fno"]
    ours = runs[fno["problem"]]["fno"]["boundary_error"]
    lines.append(
        f"| {fno['problem']} | FNO boundary error | {ours:.2g} (largest Neumann residual, either "
        f"end) | about {fno['left']:g} (left), {fno['right']:g} (right) | {fno['source']} |"
    )
    return "\n".join(lines)


# --------------------------------------------------------------- BOON (benchmarks/boon*.py)

BOON_PROBLEMS = ("heat-neumann", "stokes", "burgers-dirichlet", "burgers-periodic", "wave")
BOON_KINDS = ("fno", "fno-bc", "boon", "boon-overwrite")


def _boon_machine(machine: dict) -> str:
    return (
        f"{machine['cpu']}, {machine['platform']}, torch {machine['torch']}, "
        f"{machine['threads']} thread"
    )


def _two_digits(value: float) -> str:
    """Two significant digits, a trailing .0 kept below 10 (2.6, 1.0, 0.29, 11)."""
    text = f"{value:.2g}"
    if value < 10 and "." not in text and "e" not in text:
        text += ".0"
    return text


def _bc(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def boon_seed0() -> str:
    runs = load("boon.json")
    lines = [
        source("boon.json", "python benchmarks/boon.py", _boon_machine(runs["_meta"]["machine"])),
        "",
        "| problem | FNO | FNO + BC inputs | BOON | BOON / FNO | BOON overwrite-only "
        "| FNO BC error "
        "| BOON BC error f64 / f32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in BOON_PROBLEMS:
        models = runs[name]
        fno, bc, boon, overwrite = (models[k] for k in BOON_KINDS)
        bc_cell = "= FNO" if bc.get("same_model_as") == "fno" else f"{bc['rel_l2']:.2e}"
        lines.append(
            f"| {name} | {fno['rel_l2']:.2e} | {bc_cell} | {boon['rel_l2']:.2e} "
            f"| {boon['rel_l2'] / fno['rel_l2']:.2f} | {overwrite['rel_l2']:.2e} "
            f"| {_two_digits(fno['boundary_error'])} "
            f"| {_bc(boon['boundary_error'])} / {_bc(boon['boundary_error_f32'])} |"
        )
    return "\n".join(lines)


def boon_seeds() -> str:
    """Per problem and model: rel. L2 per seed and the ratios (benchmarks/boon.py --summary)."""
    names = ["boon.json"] + [f"boon_seed{s}.json" for s in range(1, 5)]
    runs = [load(name) for name in names]
    seeds = [run["_meta"]["sizes"]["seed"] for run in runs]
    machines = sorted({_boon_machine(run["_meta"]["machine"]) for run in runs})
    lines = [
        f"From {', '.join(f'[{n}](../../benchmarks/results/{n})' for n in names)} (seeds "
        f"{', '.join(map(str, seeds))}), written by `python benchmarks/boon.py` (seed 0) and "
        "`python benchmarks/boon.py --seed S --no-probabilistic --out "
        "benchmarks/results/boon_seedS.json --figures DIR`; summarised as by `python "
        "benchmarks/boon.py --summary benchmarks/results/boon.json benchmarks/results/"
        f"boon_seed*.json`; machine: {'; '.join(machines)}.",
        "",
    ]
    return "\n".join(lines + boon_seed_rows(runs))


def boon_seed_rows(runs: list[dict]) -> list[str]:
    """Per problem and model of boon.json-like runs (one per seed): rel. L2 per seed and the
    ratios; `python benchmarks/boon.py --summary` prints it."""
    lines = [
        "| problem | model | rel. L2 per seed | / FNO per seed | / FNO geo. mean "
        "| / FNO-bc per seed |",
        "|" + "---|" * 6,
    ]
    for name in BOON_PROBLEMS:
        present = [run[name] for run in runs if name in run]
        for kind in BOON_KINDS:
            rows = [models for models in present if kind in models]
            if not rows:
                continue
            errors = [m[kind]["rel_l2"] for m in rows]
            to_fno = [m[kind]["rel_l2"] / m["fno"]["rel_l2"] for m in rows]
            to_bc = [m[kind]["rel_l2"] / m["fno-bc"]["rel_l2"] for m in rows]
            mean = math.exp(sum(math.log(r) for r in to_fno) / len(to_fno))
            lines.append(
                f"| {name} | {kind} | {' '.join(f'{e:.2e}' for e in errors)}"
                f" | {' '.join(f'{r:.2f}' for r in to_fno)} | {mean:.2f}"
                f" | {' '.join(f'{r:.2f}' for r in to_bc)} |"
            )
    return lines


def boon_warmup() -> str:
    results = load("boon_warmup.json")
    jobs = results["jobs"]
    references = {"stokes": "fno-bc", "heat-neumann": "fno"}
    seeds = sorted({int(key.split("/")[1]) for key in jobs})
    lines = [
        source("boon_warmup.json", "python benchmarks/boon_warmup.py", results["_meta"]["machine"])
        + " BOON's relative L2 / the reference's (same seed, same run).",
        "",
        "| problem | reference | warm-up fraction | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | geo. mean |",
        "|---|---|---|" + "---|" * (len(seeds) + 1),
    ]
    for name, reference in references.items():
        fractions = sorted(
            {
                float(key.split("/")[3])
                for key in jobs
                if key.startswith(f"{name}/") and key.count("/") == 3
            }
        )
        for fraction in fractions:
            if fraction not in (0.0, 0.25, 0.5):  # the 10-epoch ramp is quoted in the prose
                continue
            ratios = []
            for seed in seeds:
                boon = jobs.get(f"{name}/{seed}/boon/{fraction:g}")
                base = jobs.get(f"{name}/{seed}/{reference}")
                ratios.append(boon["rel_l2"] / base["rel_l2"] if boon and base else math.nan)
            mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            cells = " | ".join(f"{r:.2f}" for r in ratios)
            lines.append(f"| {name} | {reference} | {fraction:g} | {cells} | {mean:.2f} |")
    return "\n".join(lines)


def boon_probabilistic() -> str:
    runs = load("boon.json")
    p = runs["_probabilistic"]
    lines = [
        source("boon.json", "python benchmarks/boon.py", _boon_machine(runs["_meta"]["machine"])),
        "",
        "| diagonal variance | value | 90 % coverage (test) | mean log-likelihood |",
        "|---|---|---|---|",
    ]
    for key in ("default", "calibrated"):
        lines.append(
            f"| {key} | {p[f'noise_variance_{key}']:.1e} | {p[key]['coverage90']:.3f} "
            f"| {p[key]['log_likelihood']:.2f} |"
        )
    return "\n".join(lines)


BOON_E2E_STAGES = ("prior", "conditioned", "calibrated")
"""The stages of boon_e2e.json's rows: before the update, after it, after it with c fitted."""
BOON_E2E_METRICS = ("rel_l2", "nll", "crps", "coverage90")
"""The scores of each stage."""


def boon_e2e() -> str:
    result = load("boon_e2e.json")
    meta = result["_meta"]
    return "\n".join(
        [
            source(
                "boon_e2e.json",
                f"python benchmarks/boon.py --e2e --seeds {' '.join(map(str, meta['sizes']['seeds']))}",
                _boon_machine(meta["machine"]),
            )
            + f" Mean ± standard error over the seeds, {meta['n_test_scored']} test samples each.",
            "",
            *boon_e2e_rows(result),
        ]
    )


def boon_e2e_rows(result: dict) -> list[str]:
    """boon_e2e.json's summary table (benchmarks/boon.py --e2e prints it from memory)."""
    lines = [
        "| ensemble | update | rel. L2 | NLL | CRPS | 90 % cov. | c |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["summary"].items():
        for stage in BOON_E2E_STAGES:
            cells = [
                fmt(entry[stage][key]["mean"], entry[stage][key]["se"]) for key in BOON_E2E_METRICS
            ]
            scale = entry["covariance_scale"]
            c = fmt(scale["mean"], scale["se"]) if stage == "calibrated" else "1"
            lines.append(f"| {name} | {stage} | {' | '.join(cells)} | {c} |")
    return lines


BOON2D_NAMES = {"fno": "FNO", "fno-bc": "FNO + BC inputs", "boon": "BOON"}


def boon2d() -> str:
    results = load("boon2d.json")
    meta = results["_meta"]
    lines = [
        source("boon2d.json", "python benchmarks/boon2d.py", _boon_machine(meta["machine"])),
        "",
    ]
    return "\n".join(lines + boon2d_rows(results))


def boon2d_rows(results: dict) -> list[str]:
    """boon2d.json's table ({problem: {model: metrics}}, keys from "_" skipped); benchmarks/
    boon2d.py prints it from its in-memory results."""
    lines = [
        "| problem | model | rel. L2 | / FNO | interior | at t = 2 | BC error f64 | BC error f32 "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, models in results.items():
        if name.startswith("_"):
            continue
        base = models["fno"]["rel_l2"]
        for kind, m in models.items():
            lines.append(
                f"| {name} | {BOON2D_NAMES.get(kind, kind)} | {m['rel_l2']:.3f} "
                f"| {m['rel_l2'] / base:.2f} | {m['rel_l2_interior']:.3f} "
                f"| {m['rel_l2_final']:.3f} | {_bc2(m['boundary_error'])} "
                f"| {_bc2(m['boundary_error_f32'])} | {m['train_s']:.0f} |"
            )
    return lines


def _bc2(value: float) -> str:
    """A wall residual: 0, two digits from 0.01 up, else 1.1e-13."""
    if value == 0:
        return "0"
    return f"{value:.2g}" if value >= 0.01 else f"{value:.1e}"


# ------------------------------------------------ calibration (benchmarks/anp_calibration.py)

CALIBRATION_SUBSETS = ("all", "low third", "middle third", "high third")


CALIBRATION_COLUMNS = (
    ("LL ANP", "ll_unconstrained", "{:.2f}"),
    ("cov90 ANP", "coverage_90_unconstrained", "{:.2f}"),
    ("CRPS ANP", "crps_unconstrained", "{:.2e}"),
    ("LL ProbConserv", "ll_probconserv", "{:.2f}"),
    ("cov90 ProbConserv", "coverage_90_probconserv", "{:.2f}"),
    ("CRPS ProbConserv", "crps_probconserv", "{:.2e}"),
)


def calibration_rows(results: dict) -> list[str]:
    """The table of one problem of anp_calibration.json ({checkpoint: {variance model: {subset:
    scores}}}, a "protocol" entry skipped): one row per checkpoint and variance model, each cell
    all functions (± standard error) / the low / middle / high third of the training range;
    benchmarks/anp_calibration.py prints it from its in-memory scores."""
    columns = CALIBRATION_COLUMNS
    lines = [
        "| checkpoint | variance | " + " | ".join(name for name, _, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for variant, models in results.items():
        if variant == "protocol":
            continue
        for model, subsets in models.items():
            cells = []
            for _, key, spec in columns:
                every = subsets["all"]
                parts = [f"{spec.format(every[key])} ± {spec.format(every[f'{key}_se'])}"]
                parts += [spec.format(subsets[subset][key]) for subset in CALIBRATION_SUBSETS[1:]]
                cells.append(" / ".join(parts))
            lines.append(f"| {variant} | {model} | " + " | ".join(cells) + " |")
    return lines


def calibration_table(problem_name: str) -> str:
    """One problem of anp_calibration.json, with its provenance and protocol."""
    stored = load("anp_calibration.json")[problem_name]
    p = stored["protocol"]
    lines = [
        source("anp_calibration.json", "python benchmarks/anp_calibration.py", p["machine"])
        + f" {p['n_functions']} validation functions, grid {p['grid'][0]}x{p['grid'][1]}, "
        f"{p['latent_samples']} latent samples; LL over the whole grid (probcons protocol).",
        "",
        f"{problem_name}:",
        "",
    ]
    return "\n".join(lines + calibration_rows(stored))


def calibration_context_factor() -> str:
    """Stefan ANP rows with one scalar (gpme.json) -> with the context factor
    (gpme_stefan_context_factor.json)."""
    shipped, other = load("gpme.json")["stefan"], load("gpme_stefan_context_factor.json")
    machines = sorted(
        {r["machine"] for e in other["stefan"].values() for r in e.values() if "machine" in r}
    )
    lines = [
        f"From [benchmarks/results/gpme.json](../../benchmarks/results/gpme.json) (one scalar) "
        "and [gpme_stefan_context_factor.json](../../benchmarks/results/"
        f"gpme_stefan_context_factor.json) (context factor), written by `{GPME_COMMANDS[0]}` and "
        "`probcons calibrate models/checkpoints/stefan-anp.pt`, then `python benchmarks/gpme.py "
        f"--problems stefan --methods anps --no-write`; machine: {'; '.join(machines)}. LL over "
        "the whole grid (probcons protocol).",
        "",
        "| Stefan | method | LL | CRPS | 90 % coverage | front error (truth in 90 % interval) |",
        "|---|---|---|---|---|---|",
    ]
    for key in other["stefan"]:
        for method, label in (("anp", "ANP"), ("probconserv-anp", "ProbConserv-ANP")):
            a, b = shipped[key][method], other["stefan"][key][method]

            def pair(name: str, spec: str, a=a, b=b) -> str:
                return f"{a[name]:{spec}} → {b[name]:{spec}}"

            covered = (
                f"{100 * a['shock_position_covered']:.0f} % → "
                f"{100 * b['shock_position_covered']:.0f} %"
            )
            lines.append(
                f"| u* = {key} | {label} | {pair('ll', '.2f')} | {pair('crps', '#.3g')} "
                f"| {pair('coverage_90', '#.3g')} | {pair('shock_position_error', '#.2g')} "
                f"({covered}) |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------- main job (main_job.py)


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def main_job_table(result: dict) -> str:
    """main_job.json's measurements against their floors and targets, and the job's own printed
    table; benchmarks/main_job.py prints it from its in-memory result."""
    job, floors, targets = result["job"], result["floors"], result["targets"]
    m = result["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores_visible']} cores visible, torch threads "
        f"{m['torch_threads']}, load {', '.join(f'{x:.2f}' for x in m['load_average'])}",
        "",
        f"default job ({job['settings']}): {job['wall_s']:.2f} s "
        f"(target <= {targets['job_s']:g} s)",
        "| phase | seconds | share |",
        "|---|---|---|",
    ]
    for phase, seconds in job["phases_s"].items():
        lines.append(f"| {phase} | {seconds:.2f} | {seconds / job['wall_s']:.0%} |")
    lines += [
        "",
        "| quantity | ours (s) | floor (s) | ratio | floor |",
        "|---|---|---|---|---|",
        f"| decode | {job['phases_s']['decode']:.2f} | {floors['decode_s']:.2f} | "
        f"{_ratio(job['phases_s']['decode'] / floors['decode_s'])} | bare torch decoder loop |",
        f"| job sampling | {job['phases_s']['sampling']:.2f} | {floors['sampling_s']:.2f} | "
        f"{_ratio(job['phases_s']['sampling'] / floors['sampling_s'])} | randn of the draws |",
    ]
    for row in result["sampling"]:
        lines.append(
            f"| sampling N = {row['n']:.0e}, {row['draws']} draws | {row['ours_s']:.2f} | "
            f"{row['randn_s']:.2f} | {_ratio(row['ratio'])} (target <= "
            f"{targets['sampling']:g}x) | randn |"
        )
    low = result["lowrank"]
    lines += [
        f"| low-rank update {low['grid'][0]}^2, rank {low['rank']} | {low['ours_s']:.3f} | "
        f"{low['plain_s']:.3f} | {_ratio(low['time_ratio'])} (target <= "
        f"{targets['lowrank_time']:g}x) | plain Woodbury |",
        f"| low-rank peak memory (MB) | {low['ours_peak_mb']} | {low['plain_peak_mb']} | "
        f"{_ratio(low['memory_ratio'])} (target <= {targets['lowrank_memory']:g}x) | "
        "plain Woodbury |",
        "",
        f"startup: probcons --help {result['startup']['help_s']:.2f} s (target <= "
        f"{targets['help_s']:g} s), import probcons.runner {result['startup']['import_s']:.2f} s",
        "",
        "printed table:",
        job["table"],
    ]
    return "\n".join(lines)


def main_job() -> str:
    result = load("main_job.json")
    m = result["machine"]
    lines = [
        source(
            "main_job.json",
            f"python benchmarks/{result['command']}",
            f"{m['cpu']}, {m['platform']}, Python {m['python']}, torch {m['torch']}",
        )
        + " The printed table's metrics: probcons protocol (whole grid), see "
        + DIFFERENCES
        + ".",
        "",
        "```text",
        main_job_table(result),
        "```",
    ]
    return "\n".join(lines)


# ------------------------------------------ ANP training (anp_selection.py, anp_latent.py)


def _machines(*names: str) -> str:
    return "; ".join(dict.fromkeys(names))


def _selection_rows(problem_name: str, checkpoints: list[str] | None = None) -> list[str]:
    """anp_selection.json's table of one problem, as benchmarks/anp_selection.py prints it (the
    paired ratio against the first row); `checkpoints` picks and orders the rows."""
    stored = load("anp_selection.json")[problem_name]["checkpoints"]
    results = {path: stored[path] for path in (checkpoints or list(stored))}
    lines = [
        "| checkpoint | settings | val NLL | MSE ANP | MSE HardC | MSE ProbConserv "
        "| ProbConserv / first row (paired; share better) | LL ANP | LL ProbConserv "
        "| corr(abs e, sd) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference = np.asarray(next(iter(results.values()))["mse_probconserv_per_function"])
    for row, (path, s) in enumerate(results.items()):
        ratio = np.asarray(s["mse_probconserv_per_function"]) / reference
        paired = (
            "reference"
            if row == 0
            else f"{float(np.exp(np.log(ratio).mean())):.2f} ({float((ratio < 1).mean()):.0%})"
        )
        lines.append(
            f"| {path} | {s['label']} | {s['val_nll']:.3f} | {s['mse_unconstrained']:.3e} "
            f"| {s['mse_hardc']:.3e} | {s['mse_probconserv']:.3e} ± {s['mse_probconserv_se']:.1e} "
            f"| {paired} | {s['ll_unconstrained']:.2f} "
            f"| {s['ll_probconserv']:.2f} | {s['corr_error_sd']:.2f} |"
        )
    return lines


def _selection_source(problems: list[str], command: str) -> str:
    stored = load("anp_selection.json")
    protocols = [stored[name]["protocol"] for name in problems]
    p = protocols[0]
    return (
        source(
            "anp_selection.json",
            command,
            _machines(*(q["machine"] for q in protocols)),
        )
        + f" {p['n_functions']} validation functions (seed {p['validation_seed']}), grid "
        f"{p['grid'][0]}x{p['grid'][1]}, {p['latent_samples']} latent samples, LL with each "
        f"checkpoint's stored variance calibration. {PROBCONS_LABEL}"
    )


ANP_SELECTION_ROWS = {
    "stefan": [
        "checkpoints/selection/stefan-beta1.pt",
        "checkpoints/selection/stefan-beta0.5.pt",
        "checkpoints/selection/stefan-beta1-epochs7.pt",
    ],
    "pme": None,
    "diffusion": None,
}
"""The rows of "Choosing β" (the Stefan SoftC sweep is in gpme.md, `softc_selection`)."""
SOFTC_SELECTION_ROWS = [
    "models/checkpoints/stefan-softc-anp.pt",
    "checkpoints/selection/stefan-softc-lambda0.1/best.pt",
    "checkpoints/selection/stefan-softc-lambda0.01/best.pt",
    "checkpoints/selection/stefan-beta1.pt",
]


def anp_selection() -> str:
    """The β comparison of anp-training.md, one table per problem (anp_selection.json)."""
    lines = [
        _selection_source(
            list(ANP_SELECTION_ROWS),
            "python benchmarks/anp_selection.py --problem P DIR1/best.pt DIR2/best.pt ...",
        ),
    ]
    for name, rows in ANP_SELECTION_ROWS.items():
        lines += ["", f"{name}:", ""] + _selection_rows(name, rows)
    return "\n".join(lines)


def softc_selection() -> str:
    """The Stefan SoftC λ sweep of gpme.md (anp_selection.json), against the shipped λ = 1."""
    command = "python benchmarks/anp_selection.py --problem stefan " + " ".join(
        SOFTC_SELECTION_ROWS
    )
    lines = [_selection_source(["stefan"], command), ""]
    return "\n".join(lines + _selection_rows("stefan", SOFTC_SELECTION_ROWS))


ANP_LATENT_KS = (1, 10, 100)
"""The context counts of the oracle table (the JSON also holds k = 3)."""
ANP_LATENT_COMMAND = (
    "python benchmarks/anp_latent.py --problem P --oracle --checkpoints "
    "models/checkpoints/P-anp.pt checkpoints/mean-pooling/P-anp.pt"
)


LATENT_METRICS = (
    " Decoder variance as trained (no calibration). Metrics: MSE over each validation "
    "function's target points, neither of the two metric protocols (not the whole grid, not t*;"
    f" see {DIFFERENCES})."
)


def _latent_source(command: str, problems: list[str]) -> str:
    stored = load("anp_latent.json")
    return source("anp_latent.json", command, _machines(*(stored[p]["machine"] for p in problems)))


def anp_latent_oracle() -> str:
    """Bayes aggregation against mean pooling and the oracle (anp_latent.json,
    `checkpoints_oracle`): the first checkpoint of each problem is the shipped (Bayes) one."""
    stored = load("anp_latent.json")
    problems = [name for name, entry in stored.items() if "checkpoints_oracle" in entry]
    lines = [
        _latent_source(ANP_LATENT_COMMAND, problems) + LATENT_METRICS,
        "",
        "| problem | k | oracle between | between, Bayes | between, mean | latent share, Bayes "
        "| latent share, mean | MSE, Bayes | MSE, mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in problems:
        bayes, mean = (
            {e["k"]: e for e in row["by_contexts"]}
            for row in stored[name]["checkpoints_oracle"].values()
        )
        for k in ANP_LATENT_KS:
            b, m = bayes[k], mean[k]
            lines.append(
                f"| {name} | {k} | {b['oracle']['between']:.2e} | {b['between']:.2e} "
                f"| {m['between']:.2e} | {b['latent_share']:.3f} | {m['latent_share']:.3f} "
                f"| {b['mse']:.2e} | {m['mse']:.2e} |"
            )
    return "\n".join(lines)


def latent_rows(rows: dict[str, dict]) -> list[str]:
    """One block of anp_latent.json ({variant or checkpoint: scores}; MSE ratio against the
    `elbo` row, else the first); benchmarks/anp_latent.py prints it from its in-memory rows."""
    base_name = "elbo" if "elbo" in rows else next(iter(rows))
    base = rows[base_name]
    ks = [e["k"] for e in next(iter(rows.values()))["by_contexts"]]
    head = ["variant", "KL nats"]
    head += [f"MSE k={k}" for k in ks] + [f"latent share k={k}" for k in ks]
    head += [f"cov90 k={ks[-1]}", f"MSE k={ks[-1]} / {base_name}", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        scores = row["by_contexts"]
        cells = [name, f"{row['kl']:.1e}"]
        cells += [f"{e['mse']:.2e}" for e in scores]
        cells += [f"{e['latent_share']:.4f}" for e in scores]
        ratio = scores[-1]["mse"] / base["by_contexts"][-1]["mse"]
        cells += [f"{scores[-1]['coverage_90']:.3f}", f"{ratio:.2f}", f"{row['train_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _latent_table(problem_name: str, key: str) -> list[str]:
    return latent_rows(load("anp_latent.json")[problem_name][key])


def anp_latent_variants() -> str:
    entry = load("anp_latent.json")["stefan"]
    lines = [
        _latent_source("python benchmarks/anp_latent.py --latent-aggregation mean", ["stefan"])
        + LATENT_METRICS,
        "",
        f"stefan: blind (context-free) MSE {entry['blind_mse']:.3g}",
        "",
    ]
    return "\n".join(lines + _latent_table("stefan", "variants"))


def anp_latent_checkpoints() -> str:
    command = (
        "python benchmarks/anp_latent.py --checkpoints models/checkpoints/stefan-anp.pt "
        "checkpoints/stefan-anp/last.pt"
    )
    lines = [
        _latent_source(command, ["stefan"]) + LATENT_METRICS,
        "",
    ]
    return "\n".join(lines + _latent_table("stefan", "checkpoints"))


# ---------------------------------------------------- the Stefan front (stefan_front.py)

STEFAN_FRONT_METHODS = ("anp", "hardc-anp", "probconserv-anp")


def stefan_front_table(result: dict) -> str:
    """One u* of stefan_front.json: the summary per method, then function 0 (the shock
    figure's); benchmarks/stefan_front.py prints it from its in-memory result."""
    protocol, summary, first = result["protocol"], result["summary"], result["functions"][0]
    lines = [
        f"Stefan u* = {protocol['param']}, t = 0.05: {protocol['n_functions']} test functions, "
        f"grid {protocol['grid'][0]}x{protocol['grid'][1]}, {protocol['latent_samples']} latent "
        f"samples, {protocol['draws']} draws; truth {protocol['truth']:.4f}",
        "",
        "| method | abs mean-front error | abs draw-front error | draw - mean | latent sd | "
        "draw sd | truth in 90 % | removes of ANP's error | abs mass shift | "
        "abs mean front - mass shift | function 0: mean front error | function 0: mass shift | "
        "function 0: draw front error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in STEFAN_FRONT_METHODS:
        s, f = summary[name], first[name]
        lines.append(
            f"| {name} | {s['abs_mean_front_error']:.4f} ± {s['abs_mean_front_error_se']:.4f} | "
            f"{s['abs_draw_front_error']:.4f} ± {s['abs_draw_front_error_se']:.4f} | "
            f"{s['draw_minus_mean']:+.4f} | {s['latent_sd']:.4f} | {s['draw_sd']:.4f} | "
            f"{s['covered']:.0%} | {s['removed_share']:.0%} | {s['abs_mass_shift']:.4f} | "
            f"{s['abs_unseen_by_mass']:.4f} | {f['mean_front_error']:+.4f} | "
            f"{f['mass_shift']:+.4f} | {f['draw_front_error']:+.4f} |"
        )
    lines.append(
        "\ncorrelation over functions of ProbConserv-ANP's signed mean-front error with the "
        f"ANP's: {summary['correlation_anp_probconserv']:.2f}; with the ANP's mean front minus "
        f"its mass shift: {summary['correlation_probconserv_unseen_by_mass']:.2f}"
    )
    return "\n".join(lines)


def stefan_front(param: str = "0.6") -> str:
    """stefan_front.json at u* = `param`, with its provenance."""
    result = load("stefan_front.json")[param]
    command = "python benchmarks/stefan_front.py" + ("" if param == "0.6" else f" --param {param}")
    lines = [
        source("stefan_front.json", command, result["protocol"]["machine"])
        + " Front positions of the posterior mean and draws, not the MSE / LL / CE of a "
        "protocol; the test functions of gpme.json's rows.",
        "",
        stefan_front_table(result),
    ]
    return "\n".join(lines)


# ----------------------------------------------- conditioning at scale (conditioning.py)

MEBIBYTE = 2**20
CONDITIONING_ROWS = {"conservation": "mass", "conservation+dirichlet": "mass + Dirichlet"}


def _g3_or_dash(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def _times(numerator, denominator) -> str:
    """A ratio as 12.3x, — where either side is missing."""
    if numerator is None or not denominator:
        return "—"
    return f"{numerator / denominator:.3g}x"


def conditioning() -> str:
    """conditioning.json, with the runs that wrote its rows (conditioning_runs.json)."""
    rows, runs = load("conditioning.json"), load("conditioning_runs.json")
    commands = list(dict.fromkeys(run["command"] for run in runs))
    machines = [
        f"{m['cpu']}, {m['cores']} cores, {m['threads']} thread, Python {m['python']}, torch "
        f"{m['torch']}, NumPy {m['numpy']}"
        for m in (run["machine"] for run in runs if "machine" in run)
    ]
    lines = [
        "From [benchmarks/results/conditioning.json](../../benchmarks/results/conditioning.json) "
        "(its runs in [conditioning_runs.json](../../benchmarks/results/conditioning_runs.json)"
        f"), written by `{'`, `'.join(commands)}` (each `--merge` replaces its rows); machine: "
        f"{_machines(*machines)}. Timings and memory of the update, not metrics of a posterior: "
        "no metric protocol applies. A row without a measurement time is from the earlier full "
        "run (earlier code).",
        "",
    ]
    return "\n".join(lines + conditioning_rows(rows))


def conditioning_rows(rows: list[dict]) -> list[str]:
    """The table of conditioning.json's rows; the memory ratio floors our peak at the size of
    the two outputs. benchmarks/conditioning.py prints it from its in-memory rows."""
    draws = sorted({row["draws"] for row in rows})
    lines = [
        f"| N | grid | covariance | rows | update s | {'/'.join(map(str, draws))} draws s | peak MB "
        "| dense per-slice s | dense peak MB | speed-up vs dense | memory ratio vs dense "
        "| bandwidth s | update / bandwidth | update / alloc. copy | load | measured |",
        "|" + "---|" * 16,
    ]
    for row in rows:
        peak, dense_peak = row["peak_mb"], row.get("dense_peak_mb")
        floor = row.get("output_mb") or 2 * row["n"] * 8 / MEBIBYTE
        memory = (
            "—" if dense_peak is None or peak is None else f"{dense_peak / max(peak, floor):.3g}x"
        )
        measured = row.get("measured_utc")
        when = "earlier code" if measured is None else measured[:16].replace("T", " ")
        load = row.get("load_average")
        lines.append(
            f"| {row['n']:,} | {row['n_t']}x{row['n_x']} | {row['cov']} "
            f"| {CONDITIONING_ROWS.get(row['constraints'], row['constraints'])} "
            f"| {_g3_or_dash(row['update_s'])} | {_g3_or_dash(row['sample_s'])} "
            f"| {_g3_or_dash(peak)} | {_g3_or_dash(row.get('dense_update_s'))} "
            f"| {_g3_or_dash(dense_peak)} | {_times(row.get('dense_update_s'), row['update_s'])} "
            f"| {memory} | {_g3_or_dash(row['bandwidth_s'])} "
            f"| {_times(row['update_s'], row['bandwidth_s'])} "
            f"| {_times(row['update_s'], row.get('bandwidth_allocating_s'))} "
            f"| {'—' if load is None else f'{load:.1f}'} | {when} |"
        )
    return lines


# ------------------------------------------------------------------------ the regions

# ------------------------------------------- bounds and nonlinear sites (beyond_linear.py)
BEYOND_LINEAR_COLUMNS = (
    ("outside", "outside range (max)"),
    ("ce_max", "max abs(Gu - b), draws"),
    ("site_residual", "flux residual (max)"),
    ("mse", "MSE"),
    ("crps", "CRPS"),
    ("coverage_90", "cov90"),
    ("coverage_90_interior", "cov90 inside"),
    ("shock_position_error", "front err"),
    ("shock_interval", "front 90 % width"),
    ("seconds", "s / function"),
)


def _g3(value) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:.3g}")


def beyond_linear_rows(methods: dict[str, dict]) -> list[str]:
    """The table of one problem and parameter of beyond_linear.json ({method: summary}), the
    columns any method has; benchmarks/beyond_linear.py prints it from its in-memory summary."""
    present = [
        (key, label)
        for key, label in BEYOND_LINEAR_COLUMNS
        if any(key in row for row in methods.values())
    ]
    lines = [
        "| method | " + " | ".join(label for _, label in present) + " |",
        "|" + "---|" * (len(present) + 1),
    ]
    for method, row in methods.items():
        cells = [_g3(row.get(key)) for key, _ in present]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def beyond_linear() -> str:
    results = load("beyond_linear.json")
    settings = results["settings"]
    machine = results["machine"]
    lines = [
        source(
            "beyond_linear.json",
            results["command"],
            f"{machine['cpu']}, {machine['torch_threads']} torch thread(s), torch "
            f"{machine['torch']}",
        ),
        "",
        f"{settings['n_functions']} test functions, grid {settings['grid'][0]} x "
        f"{settings['grid'][1]}, {settings['draws']} draws per function, backbone "
        f"{settings['backbone']}; {settings['reductions']}. {PROBCONS_LABEL}",
    ]
    for problem, parameters in results["problems"].items():
        for parameter, methods in parameters.items():
            lines += [
                "",
                f"**{problem}, {get_problem(problem).parameter_name} = {parameter}**",
                "",
                *beyond_linear_rows(methods),
            ]
    return "\n".join(lines)


BOON2D_ENSEMBLE_PHYSICS = {"cavity": "circulation_residual", "wave2d": "balance_residual"}
"""The physics residual boon2d_ensemble.json reports per problem."""


def boon2d_ensemble() -> str:
    results = load("boon2d_ensemble.json")
    return "\n".join([_boon2d_ensemble_source(results), "", *boon2d_ensemble_rows(results)])


def _boon2d_ensemble_source(results: dict) -> str:
    settings = results["settings"]
    command = (
        f"python benchmarks/boon2d_ensemble.py --seeds {len(settings['seeds'])} --members "
        f"{settings['members']} --n-train {settings['n_train']} --epochs "
        f"{settings['config']['epochs']} --n-test {settings['n_test']}"
    )
    return (
        source("boon2d_ensemble.json", command, _boon_machine(results["machine"]))
        + f" Mean ± standard error over seeds {', '.join(map(str, settings['seeds']))}."
    )


def boon2d_ensemble_rows(results: dict) -> list[str]:
    """boon2d_ensemble.json's table: per problem and row, mean ± standard error over seeds
    (benchmarks/boon2d_ensemble.py prints it from memory)."""
    lines = [
        "| problem | model | rel. L2 | CRPS | cov. 90 % | boundary error f64 | circulation / "
        "balance residual |",
        "|---|---|---|---|---|---|---|",
    ]
    for problem, rows in results["problems"].items():
        for row in rows:
            keys = ("rel_l2", "crps", "coverage_90", "boundary_error")
            cells = [_seed_cell(row[f"{key}_per_seed"]) for key in keys]
            cells.append(_seed_cell(row[f"{BOON2D_ENSEMBLE_PHYSICS[problem]}_per_seed"]))
            lines.append(f"| {problem} | {row['label']} | {' | '.join(cells)} |")
    return lines


def boon2d_ensemble_diagnostics() -> str:
    results = load("boon2d_ensemble.json")
    return "\n".join(
        [_boon2d_ensemble_source(results), "", *boon2d_ensemble_diagnostic_rows(results)]
    )


def boon2d_ensemble_diagnostic_rows(results: dict) -> list[str]:
    """Per ensemble and row group: the RMS z of the prior's residual and the scores after
    conditioning on that group alone, full Gaussian and marginals only (means over seeds)."""
    lines = [
        "| problem | ensemble | rows | RMS z | rel. L2 full | CRPS full | cov. 90 % full "
        "| rel. L2 marg. | CRPS marg. | cov. 90 % marg. |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = (
        "z_rms",
        "rel_l2",
        "crps",
        "cov90",
        "rel_l2_diagonal",
        "crps_diagonal",
        "cov90_diagonal",
    )
    for problem, rows in results["problems"].items():
        for row in rows:
            if row["method"] != "unconstrained":
                continue
            seeds = row["diagnostics_per_seed"]
            for group in seeds[0]:
                cells = [_seed_cell([seed[group][key] for seed in seeds]) for key in keys]
                lines.append(f"| {problem} | {row['label']} | {group} | {' | '.join(cells)} |")
    return lines


def _seed_cell(values: list[float]) -> str:
    """Mean ± standard error of per-seed values (no error for one seed)."""
    mean, error = mean_and_standard_error(values)
    return fmt(mean, error if len(values) > 1 else None)


REGIONS: dict[str, tuple[str, Callable[[], str]]] = {
    # region name: (page in docs/results, its generator)
    "gpme-tables": ("gpme.md", gpme_tables),
    "end-to-end-stored": ("end-to-end.md", end_to_end_stored),
    "probconserv-paper-protocol": ("paper-comparison.md", paper_protocol_tables),
    "boon-published": ("paper-comparison.md", boon_published),
    "boon-seed0": ("boon.md", boon_seed0),
    "boon-seeds": ("boon.md", boon_seeds),
    "boon-warmup": ("boon.md", boon_warmup),
    "boon-probabilistic": ("boon.md", boon_probabilistic),
    "boon-e2e": ("boon.md", boon_e2e),
    "boon2d": ("boon-2d.md", boon2d),
    "boon2d-ensemble": ("boon-2d-ensemble.md", boon2d_ensemble),
    "boon2d-ensemble-diagnostics": ("boon-2d-ensemble.md", boon2d_ensemble_diagnostics),
    "calibration-context-factor": ("calibration.md", calibration_context_factor),
    "calibration-stefan": ("calibration.md", lambda: calibration_table("stefan")),
    "calibration-diffusion": ("calibration.md", lambda: calibration_table("diffusion")),
    "calibration-pme": ("calibration.md", lambda: calibration_table("pme")),
    "main-job": ("main-job.md", main_job),
    "beyond-linear": ("beyond-linear.md", beyond_linear),
    "anp-selection": ("anp-training.md", anp_selection),
    "anp-latent-oracle": ("anp-training.md", anp_latent_oracle),
    "anp-latent-variants": ("anp-training.md", anp_latent_variants),
    "anp-latent-checkpoints": ("anp-training.md", anp_latent_checkpoints),
    "stefan-front": ("gpme.md", stefan_front),
    "softc-selection": ("gpme.md", softc_selection),
    "conditioning": ("conditioning-at-scale.md", conditioning),
}


NOT_GENERATED = {
    "evaluation_memory.json": "quoted in docs/scale-out.md, outside docs/results",
    "solvers2d.json": "quoted in the prose of docs/results/boon-2d.md (the solvers' checks), not "
    "in a table",
}
"""The JSON under benchmarks/results that no region reads, and why."""


def render(text: str, page: str, contents: dict[str, str]) -> str:
    """`text` with each generated region of `page` replaced by its content; a region named in
    the page but not in REGIONS (or of another page), or one of the page's missing, is an error."""
    expected = {name for name, (owner, _) in REGIONS.items() if owner == page}
    found = []

    def replace(match: re.Match) -> str:
        name, indent = match["name"], match["indent"]
        if name not in expected:
            raise SystemExit(f"{page}: region {name!r} is not one of {sorted(expected)}")
        found.append(name)
        body = "".join(
            f"{indent}{line}\n" if line else "\n" for line in contents[name].rstrip().split("\n")
        )
        return f"{indent}<!-- generated: {name} -->\n{body}{indent}<!-- end generated -->"

    new = REGION.sub(replace, text)
    missing = sorted(expected - set(found))
    if missing:
        raise SystemExit(f"{page}: no marker for the generated regions {missing}")
    return new


def pages(docs: Path) -> dict[str, tuple[str, str]]:
    """{page: (committed text, regenerated text)} of every page with a generated region."""
    contents = {name: generate() for name, (_, generate) in REGIONS.items()}
    out = {}
    for page in sorted({owner for owner, _ in REGIONS.values()}):
        text = (docs / page).read_text()
        out[page] = (text, render(text, page, contents))
    return out


def differing_regions(old: str, new: str) -> list[str]:
    bodies = {m["name"]: m["body"] for m in REGION.finditer(old)}
    return [m["name"] for m in REGION.finditer(new) if bodies.get(m["name"]) != m["body"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on a change")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the folder of the pages")
    args = parser.parse_args(argv)
    stale = []
    for page, (old, new) in pages(args.docs).items():
        if old == new:
            continue
        stale += [f"{page}: {name}" for name in differing_regions(old, new)]
        if not args.check:
            write_text(args.docs / page, new)
    if args.check and stale:
        print("generated regions differ from the JSON (run `make results`):", file=sys.stderr)
        print("\n".join(f"  {line}" for line in stale), file=sys.stderr)
        return 1
    print("\n".join(f"rewrote {line}" for line in stale) or "every generated region is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
