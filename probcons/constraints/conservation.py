"""Conservation in integral form: one row per time slice, quadrature weights over x.

U(t_j) = sum_i w_i u(t_j, x_i),  w the weights of a quadrature rule over the x-grid
(`probcons.constraints.quadrature`), U from the boundary fluxes:
U(t) = U(0) + int_0^t (F_in(s) - F_out(s)) ds, F_in the flux in at x_L, F_out the flux out at x_R.
"""

from __future__ import annotations

import torch

from probcons.constraints.linear import LinearConstraint
from probcons.constraints.quadrature import quadrature_weights
from probcons.errors import UsageError
from probcons.grid import Grid, check_grid
from probcons.validation import as_float64_tensor, check_nonnegative, check_shape, describe


def _slice_weights(grid: Grid, quadrature) -> torch.Tensor:
    """(n_t, 1, n_x) weights; one (n_x,) rule is stored once (stride 0 over time)."""
    weights = quadrature_weights(grid, quadrature)
    if weights.dim() == 1:
        return weights.expand(grid.n_t, 1, grid.n_x)
    return weights[:, None, :]


def conservation_constraint(
    grid: Grid, mass: torch.Tensor, noise_std: float = 0.0, quadrature="trapezoid"
) -> LinearConstraint:
    """Rows  sum_i w_i u[j, i] = U(t_j) + eps_j;  mass (n_t,) holds U(t_j).

    quadrature: "trapezoid" (default; any increasing grid, O(dx^2)), "periodic" (a periodic
    grid x_i = x_0 + i dx without the repeated end point: w_i = dx), "simpson" (uniform grid,
    odd n_x, O(dx^4)), or weights (n_x,) or (n_t, n_x). On a periodic grid without its end point
    the trapezoid rule is wrong: it halves the weight of x_0 and x_{n-1}; use "periodic".
    """
    check_grid(grid)
    mass = as_float64_tensor(mass, "mass").reshape(-1)
    check_shape(mass, (grid.n_t,), "mass")
    noise_std = check_nonnegative(noise_std, "noise_std")
    weights = _slice_weights(grid, quadrature)
    return LinearConstraint(
        weights, mass[:, None], torch.tensor(noise_std, dtype=torch.float64), ("mass",)
    )


def _flux_values(flux, grid: Grid, name: str) -> torch.Tensor:
    """A flux given as a scalar, (n_t,) values at the grid's times, or a callable of t -> (n_t,)."""
    if callable(flux):
        try:
            flux = flux(grid.t.clone())
        except Exception as error:  # the user's function: report which argument failed
            raise UsageError(
                f"{name}: calling it on the grid's times (a tensor of shape ({grid.n_t},)) "
                f"raised {type(error).__name__}: {error}"
            ) from error
    values = as_float64_tensor(flux, name)
    if values.dim() == 0:
        return values.expand(grid.n_t).clone()
    if values.numel() != grid.n_t:
        raise UsageError(
            f"{name}: expected a scalar, {grid.n_t} values or a callable of t returning them, "
            f"got {describe(values)}"
        )
    return values.reshape(-1)


def flux_increments(grid: Grid, flux_in, flux_out) -> torch.Tensor:
    """(n_t - 1,) increments int_{t_{j-1}}^{t_j} (F_in - F_out) dt by the trapezoid rule in time."""
    check_grid(grid)
    net = _flux_values(flux_in, grid, "flux_in") - _flux_values(flux_out, grid, "flux_out")
    return (grid.t[1:] - grid.t[:-1]) * (net[1:] + net[:-1]) / 2


def flux_conservation_constraint(
    grid: Grid,
    initial_mass,
    flux_in,
    flux_out=0.0,
    noise_std: float = 0.0,
    quadrature="trapezoid",
) -> LinearConstraint:
    """Conservation from boundary fluxes, F_in into the domain at x_L, F_out out of it at x_R.

    Fluxes: scalars, (n_t,) values at grid.t, or callables of t (tensor (n_t,)) -> (n_t,); the
    time integral is the trapezoid rule over grid.t, c_j = int_{t_{j-1}}^{t_j} (F_in - F_out) dt.
    - initial_mass = U(t_0) given: absolute rows per slice, w . u(t_j) = U(t_0) + c_1 + ... + c_j
      (a `conservation_constraint`, block-diagonal over time: O(N) to condition).
    - initial_mass = None: relative rows that need no U(t_0),
      w . u(t_j) - w . u(t_{j-1}) = c_j, j = 1..n_t-1, named "mass_change[j]". They couple two
      slices, so they live on the flattened grid (n_t = 1, n_x = N): a dense (n_t - 1, N) G,
      which `condition` accepts for a prediction on `grid`. Cost: memory (n_t - 1) N; with a
      diagonal prior the system S costs O(n_t^2 N), otherwise like `dense_constraint`: use it on
      grids of up to some 10^4 points, or give U(t_0) for the O(N) absolute rows.
    The absolute rows for t_0..t_{n_t-1} span the relative rows plus the t_0 row, so both forms
    give the same exact posterior once U(t_0) is also fixed.
    """
    check_grid(grid)
    noise_std = check_nonnegative(noise_std, "noise_std")
    increments = flux_increments(grid, flux_in, flux_out)
    if initial_mass is not None:
        start = as_float64_tensor(initial_mass, "initial_mass")
        if start.numel() != 1:
            raise UsageError(
                f"initial_mass: expected a scalar U(t_0) or None, got {describe(start)}"
            )
        mass = torch.cat([start.reshape(1), start.reshape(1) + torch.cumsum(increments, 0)])
        return conservation_constraint(grid, mass, noise_std, quadrature)
    if grid.n_t < 2:
        raise UsageError(
            f"grid: relative flux rows (initial_mass=None) expect at least 2 times, got {grid.n_t}"
        )
    weights = _slice_weights(grid, quadrature)[:, 0, :]  # (n_t, n_x)
    n_t, n_x = grid.shape
    rows = torch.zeros(n_t - 1, n_t, n_x, dtype=torch.float64)
    index = torch.arange(n_t - 1)
    rows[index, index + 1] = weights[1:]
    rows[index, index] = -weights[:-1]
    names = tuple(f"mass_change[{j}]" for j in range(1, n_t))
    return LinearConstraint(
        rows.reshape(1, n_t - 1, n_t * n_x),
        increments[None],
        torch.tensor(noise_std, dtype=torch.float64),
        names,
    )
