"""Determinism (issue 8, part 5): the same seed gives bit-identical posterior files.

Two `probcons run` jobs with one seed, one in this process and one in a fresh interpreter, on
the same machine and thread count. The netCDF files differ as bytes: ArviZ stamps every group
with a `created_at` attribute. So the test compares what the files hold: every variable of
every group bit for bit (NaN-aware), the coordinates, and every attribute except `created_at`;
`metrics.json` has no time stamp and is compared as bytes.
"""

import os
import subprocess
import sys

import arviz as az
import numpy as np
import pytest

from probcons.cli import main

SMALL = ["--grid", "5x5", "--n-functions", "1", "--draws", "5", "--quiet"]
METHODS = ("unconstrained", "hardc", "probconserv")
TIME_STAMPS = {"created_at"}
"""Attributes that record when a file was written, not what it holds."""


def contents(path):
    """{group: (variables, coordinates, attributes without time stamps)} of a netCDF run file."""
    data = az.from_netcdf(path)
    summary = {}
    for group in data.groups():
        dataset = data[group]
        summary[group] = (
            {name: dataset[name].values for name in dataset.data_vars},
            {name: dataset[name].values for name in dataset.coords},
            {key: value for key, value in dataset.attrs.items() if key not in TIME_STAMPS},
        )
    return summary


def assert_identical(first, second):
    assert first.keys() == second.keys()
    for group in first:
        for part in (0, 1):
            assert first[group][part].keys() == second[group][part].keys(), group
            for name, values in first[group][part].items():
                other = second[group][part][name]
                assert values.dtype == other.dtype and values.shape == other.shape, name
                assert np.array_equal(values, other, equal_nan=values.dtype.kind == "f"), (
                    group,
                    name,
                )
        assert first[group][2] == second[group][2], group


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("determinism")
    here, there = folder / "in-process", folder / "subprocess"
    assert main(["run", "stefan", *SMALL, "--seed", "7", "--out", str(here)]) == 0
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "probcons.cli", "run", "stefan", *SMALL, "--seed", "7"]
    result = subprocess.run(
        [*command, "--out", str(there)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return here, there


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_gives_identical_posterior_data(two_runs, method):
    here, there = two_runs
    assert_identical(contents(here / f"{method}.nc"), contents(there / f"{method}.nc"))


def test_same_seed_gives_identical_metrics_file(two_runs):
    here, there = two_runs
    assert (here / "metrics.json").read_bytes() == (there / "metrics.json").read_bytes()


def test_only_the_time_stamp_differs(two_runs):
    here, there = two_runs
    first = az.from_netcdf(here / "probconserv.nc").posterior_predictive.attrs
    second = az.from_netcdf(there / "probconserv.nc").posterior_predictive.attrs
    differing = {key for key in first.keys() | second.keys() if first.get(key) != second.get(key)}
    assert differing <= TIME_STAMPS


def test_another_seed_gives_other_draws(two_runs, tmp_path):
    here, _ = two_runs
    other = tmp_path / "seed8"
    assert (
        main(
            [
                "run",
                "stefan",
                *SMALL,
                "--seed",
                "8",
                "--methods",
                "probconserv",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    first = contents(here / "probconserv.nc")["posterior_predictive"][0]["u"]
    second = contents(other / "probconserv.nc")["posterior_predictive"][0]["u"]
    assert not np.array_equal(first, second)
