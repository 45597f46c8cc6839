"""Validation of the 2-D data generators: lid-driven cavity and Neumann wave equation.

    python benchmarks/solvers2d.py                 # coarse and medium grids (a few minutes)
    python benchmarks/solvers2d.py --fine          # adds the 96 and 128 cell steady runs (~8 min more)

Cavity: steady Re = 100 flow against Ghia, Ghia & Shin (1982) centre lines (max error over their
tabulated points, over the lid speed U = 1), the profile extremes, a Richardson estimate of v_min;
trajectories at the issue's sizes: time, central-difference divergence, wall deviation, distance
to a finer solver grid. Wave: leapfrog against the exact cosine series (observed order), discrete
Neumann residual, discrete energy drift, time. Prints tables with the machine line and writes
benchmarks/results/solvers2d.json.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from probcons.constraints.boundary_condition import neumann
from probcons.io import write_json
from probcons.machine import cpu_name
from probcons.solvers.cavity import (
    cavity_trajectories,
    centreline_profiles,
    ghia_errors,
    steady_cavity,
)
from probcons.solvers.wave2d import (
    solve_wave2d_neumann,
    wave2d_cosine_series,
    wave2d_random_coefficients,
    wave2d_trajectories,
)

ROOT = Path(__file__).resolve().parents[1]


def cavity_validation(resolutions):
    rows = []
    fine_u = np.linspace(0, 1, 1001)
    for resolution in resolutions:
        start = time.perf_counter()
        flow = steady_cavity(100.0, resolution)
        seconds = time.perf_counter() - start
        error_u, error_v = ghia_errors(flow)
        u, v = centreline_profiles(flow, fine_u, fine_u)
        rows.append(
            {
                "resolution": resolution,
                "error_u": error_u,
                "error_v": error_v,
                "u_min": float(u.min()),
                "v_min": float(v.min()),
                "v_max": float(v.max()),
                "steady_time": flow.time,
                "seconds": seconds,
            }
        )
        row = rows[-1]
        print(
            f"{resolution:>5} {error_u:>9.4f} {error_v:>9.4f} {row['u_min']:>9.5f} "
            f"{row['v_min']:>9.5f} {row['v_max']:>9.5f} {flow.time:>7.1f} {seconds:>8.1f}"
        )
    return rows


def divergence(velocity, h):
    u, v = velocity[..., 0, :, :], velocity[..., 1, :, :]
    u_x = (u[..., 2:, 1:-1] - u[..., :-2, 1:-1]) / (2 * h)
    v_y = (v[..., 1:-1, 2:] - v[..., 1:-1, :-2]) / (2 * h)
    return u_x + v_y


def wall_deviation(velocity):
    target = torch.zeros_like(velocity)
    target[..., 0, :, -1] = 1.0
    walls = torch.zeros(velocity.shape[-2:], dtype=torch.bool)
    walls[[0, -1], :] = True
    walls[:, [0, -1]] = True
    return float((velocity - target)[..., walls].abs().max())


def cavity_data(n_samples, reynolds):
    start = time.perf_counter()
    data = cavity_trajectories(n_samples, reynolds=reynolds)
    seconds = time.perf_counter() - start
    check = 4
    fine = cavity_trajectories(check, reynolds=reynolds, resolution=98)
    relative = float((data[:check] - fine).norm() / fine.norm())
    result = {
        "reynolds": reynolds,
        "n_samples": n_samples,
        "seconds": seconds,
        "max_divergence": float(divergence(data, 1 / 49).abs().max()),
        "wall_deviation": wall_deviation(data),
        "relative_l2_to_resolution_98": relative,
    }
    print(
        f"{reynolds:>6.0f} {n_samples:>5} {seconds:>8.1f} {result['max_divergence']:>10.1e} "
        f"{result['wall_deviation']:>8.1e} {relative:>10.4f}"
    )
    return result


def wave_validation():
    a = wave2d_random_coefficients(4, torch.Generator().manual_seed(0), n_modes=4)
    times = torch.tensor([0.5, 1.0], dtype=torch.float64)
    rows, previous = [], None
    for n in (33, 65, 129, 257):
        exact = wave2d_cosine_series(a, n, times)
        u = solve_wave2d_neumann(wave2d_cosine_series(a, n, [0.0])[:, 0], times)
        error = float((u - exact).abs().max() / exact.abs().max())
        order = math.log2(previous / error) if previous else float("nan")
        rows.append({"n": n, "relative_max_error": error, "order": order})
        print(f"{n:>5} {error:>12.3e} {order:>7.2f}")
        previous = error
    return rows


def wave_data(n_samples):
    start = time.perf_counter()
    data = wave2d_trajectories(n_samples)
    seconds = time.perf_counter() - start
    condition = neumann(1 / 49, order=2)
    residual = max(
        float(condition.residual(data.reshape(-1, 1, 50)).abs().max()),
        float(condition.residual(data.transpose(-1, -2).reshape(-1, 1, 50)).abs().max()),
    )
    spectral = wave2d_trajectories(n_samples, method="spectral")
    relative = float((data - spectral).norm() / spectral.norm())
    spectral_residual = float(
        condition.residual(spectral.transpose(-1, -2).reshape(-1, 1, 50)).abs().max()
    )
    result = {
        "n_samples": n_samples,
        "seconds": seconds,
        "neumann_residual": residual,
        "spectral_neumann_residual": spectral_residual,
        "relative_l2_to_spectral": relative,
    }
    print(
        f"{n_samples:>5} {seconds:>8.2f} {residual:>10.1e} {spectral_residual:>10.1e} "
        f"{relative:>10.2e}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fine", action="store_true", help="add the 96 and 128 cell runs")
    parser.add_argument("--n-samples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/solvers2d.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = {"platform": platform.platform(), "cpu": cpu_name(), "torch": torch.__version__}
    print(f"machine: {machine}, threads {torch.get_num_threads()}")
    print("\nsteady cavity, Re = 100, vs Ghia et al. (1982): max error / U over tabulated points")
    print(
        f"{'cells':>5} {'err u':>9} {'err v':>9} {'u_min':>9} {'v_min':>9} {'v_max':>9} "
        f"{'t_ss':>7} {'seconds':>8}"
    )
    resolutions = [32, 48, 64] + ([96, 128] if args.fine else [])
    steady = cavity_validation(resolutions)
    last = {row["resolution"]: row for row in steady}
    extrapolated = None
    if 64 in last and 128 in last:
        extrapolated = {
            key: last[128][key] + (last[128][key] - last[64][key]) / 3
            for key in ("u_min", "v_min", "v_max")
        }
        print(
            f"Richardson (64, 128): {extrapolated}; Ghia: u_min -0.21090, v_min -0.24533, "
            "v_max 0.17527 (tabulated)"
        )
    print("\ncavity trajectories (25 steps to t = 2, 50 x 50 nodes, solver grid 49 cells)")
    print(f"{'Re':>6} {'n':>5} {'seconds':>8} {'max div':>10} {'walls':>8} {'rel L2 98':>10}")
    trajectories = [cavity_data(args.n_samples, 100.0), cavity_data(args.n_samples, 400.0)]
    print("\nwave2d leapfrog vs exact cosine series (t = 0.5, 1), relative max error")
    print(f"{'n':>5} {'error':>12} {'order':>7}")
    orders = wave_validation()
    print("\nwave2d trajectories (25 steps to t = 1, 50 x 50)")
    print(f"{'n':>5} {'seconds':>8} {'residual':>10} {'spectral':>10} {'rel L2 sp':>10}")
    wave = wave_data(args.n_samples)
    write_json(
        args.out,
        {
            "machine": machine,
            "cavity_steady_re100": steady,
            "cavity_richardson_64_128": extrapolated,
            "cavity_trajectories": trajectories,
            "wave2d_convergence": orders,
            "wave2d_trajectories": wave,
        },
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
