"""Boundary conditions on the four walls of a (t, x, y) grid, as rows per time slice.

Walls: "left" x = x_0, "right" x = x_{n_x-1} (points ordered by y index k), "bottom" y = y_0,
"top" y = y_{n_y-1} (points ordered by x index i). The rows live on `grid2d.flat` (x-major,
p = i n_y + k), one row per wall point per time slice, the same rows on every slice (stored
once): an ordinary `LinearConstraint` with weights (n_t, r, n_x n_y), conditioned per slice.

Corners are counted once: a corner belongs to the left/right wall when that wall is given, else
to the bottom/top wall. This is the rule of `BoundaryCondition2d.enforce` (the x-sides are solved
last, on every line), so `boundary_condition2d_constraint` gives the same rows as the builders.
Wall data: a scalar, (n_t,) (one value per time), or (n_t, n_wall) (per wall point, n_wall = n_y
for left/right, n_x for bottom/top, corners included); a bottom/top value at a corner that a
left/right wall owns must agree with it (Dirichlet) or is not used (Neumann).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from probcons.constraints.boundary_condition import STEP_TOLERANCE
from probcons.constraints.boundary_condition2d import BoundaryCondition2d
from probcons.constraints.finite_difference import derivative_weights
from probcons.constraints.linear import LinearConstraint
from probcons.errors import UsageError
from probcons.grid2d import Grid2d, check_grid2d
from probcons.validation import as_float64_tensor, check_nonnegative, describe

WALLS = ("left", "right", "bottom", "top")
"""The four walls, in the order their rows are stacked."""
X_WALLS = ("left", "right")
"""The walls normal to x; they own the corners."""
PERIODIC_AXES = ("x", "y", "both")
"""`periodic_constraint2d`'s axis: x (left = right), y (bottom = top), or both."""
CORNER_TOLERANCE = 1e-9
"""Largest |a - b| / max(1, |a|, |b|) between two walls' Dirichlet values at a shared corner."""


def _check_walls(walls) -> dict:
    """A non-empty mapping {wall: data} with keys among WALLS, in WALLS order."""
    if not isinstance(walls, Mapping) or not walls:
        raise UsageError(
            f"walls: expected a non-empty dict with keys among {WALLS}, got {describe(walls)}"
        )
    unknown = [key for key in walls if key not in WALLS]
    if unknown:
        raise UsageError(f"walls: expected keys among {WALLS}, got {unknown!r}")
    return {wall: walls[wall] for wall in WALLS if wall in walls}


def _wall_length(grid2d: Grid2d, wall: str) -> int:
    return grid2d.n_y if wall in X_WALLS else grid2d.n_x


def _normal_axis(grid2d: Grid2d, wall: str) -> torch.Tensor:
    return grid2d.x if wall in X_WALLS else grid2d.y


def _owned(grid2d: Grid2d, wall: str, given) -> torch.Tensor:
    """Indices along `wall` of the points whose rows it carries (corners to the x-walls)."""
    points = torch.arange(_wall_length(grid2d, wall))
    if wall in X_WALLS:
        return points
    keep = torch.ones(points.numel(), dtype=torch.bool)
    if "left" in given:
        keep[0] = False
    if "right" in given:
        keep[-1] = False
    return points[keep]


def _node_positions(grid2d: Grid2d, wall: str, depth: int) -> torch.Tensor:
    """(n_wall, depth) flat positions of the `depth` nodes nearest `wall`, along its normal, in
    increasing coordinate order, for each point of the wall."""
    n_normal = _normal_axis(grid2d, wall).numel()
    low = wall in ("left", "bottom")
    normal = torch.arange(depth) if low else torch.arange(n_normal - depth, n_normal)
    along = torch.arange(_wall_length(grid2d, wall))
    if wall in X_WALLS:  # nodes (i, k): i along the normal, k along the wall
        return normal[None, :] * grid2d.n_y + along[:, None]
    return along[:, None] * grid2d.n_y + normal[None, :]


def _wall_values(value, grid2d: Grid2d, wall: str) -> torch.Tensor:
    """Scalar, (n_t,) or (n_t, n_wall) data of `wall` -> (n_t, n_wall)."""
    name = f"walls[{wall!r}]"
    n_t, n_wall = grid2d.n_t, _wall_length(grid2d, wall)
    values = as_float64_tensor(value, name)
    if values.dim() == 0:
        return values.expand(n_t, n_wall).clone()
    if values.dim() == 1 and values.numel() == n_t:
        return values[:, None].expand(n_t, n_wall).clone()
    if tuple(values.shape) == (n_t, n_wall):
        return values
    raise UsageError(
        f"{name}: expected a scalar, ({n_t},) values per time or ({n_t}, {n_wall}) per wall "
        f"point, got {describe(values)}"
    )


def _check_corners(values: dict[str, torch.Tensor], grid2d: Grid2d) -> None:
    """Refuse Dirichlet data whose bottom/top value at a left/right corner differs from it."""
    for y_wall, k in (("bottom", 0), ("top", grid2d.n_y - 1)):
        for x_wall, i in (("left", 0), ("right", grid2d.n_x - 1)):
            if y_wall not in values or x_wall not in values:
                continue
            a, b = values[x_wall][:, k], values[y_wall][:, i]
            scale = torch.maximum(a.abs(), b.abs()).clamp(min=1.0)
            gap = (a - b).abs() / scale
            if float(gap.max()) > CORNER_TOLERANCE:
                j = int(gap.argmax())
                raise UsageError(
                    f"walls: {x_wall!r} and {y_wall!r} give different values at their corner "
                    f"(x_{i}, y_{k}) at t_{j}: {float(a[j]):.6g} and {float(b[j]):.6g} (a "
                    f"corner is one point; its row belongs to {x_wall!r})"
                )


def _assemble(
    grid2d: Grid2d,
    walls: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    noise_std: float,
    kind: str,
) -> LinearConstraint:
    """Rows from {wall: (indices along the wall (n,), positions (n, d), stencil (d,), values
    (n_t, n))} for the points kept; row "<kind>_<wall>[<index along the wall>]"."""
    n_points = grid2d.n_x * grid2d.n_y
    blocks, values, names = [], [], []
    for wall, (owned, positions, stencil, data) in walls.items():
        rows = torch.zeros(positions.shape[0], n_points, dtype=torch.float64)
        rows.scatter_(1, positions, stencil.expand(positions.shape).clone())
        blocks.append(rows)
        values.append(data)
        names.extend(f"{kind}_{wall}[{int(index)}]" for index in owned)
    rows = torch.cat(blocks)
    return LinearConstraint(
        rows.expand(grid2d.n_t, *rows.shape),
        torch.cat(values, dim=1),
        torch.tensor(noise_std, dtype=torch.float64),
        tuple(names),
    )


def dirichlet_constraint2d(grid2d: Grid2d, walls, noise_std: float = 0.0) -> LinearConstraint:
    """u(t_j, wall point) = g: one row per wall point per slice, corners once (module docstring).

    walls: {"left" | "right" | "bottom" | "top": g}, g a scalar, (n_t,) or (n_t, n_wall).
    Rows are named "dirichlet_<wall>[<index along the wall>]".
    """
    check_grid2d(grid2d)
    walls = _check_walls(walls)
    noise_std = check_nonnegative(noise_std, "noise_std")
    values = {wall: _wall_values(data, grid2d, wall) for wall, data in walls.items()}
    _check_corners(values, grid2d)
    parts = {}
    for wall in walls:
        owned = _owned(grid2d, wall, walls)
        positions = _node_positions(grid2d, wall, 1)[owned]
        stencil = torch.ones(1, dtype=torch.float64)
        parts[wall] = (owned, positions, stencil, values[wall][:, owned])
    return _assemble(grid2d, parts, noise_std, "dirichlet")


def _check_order(order, grid2d: Grid2d, walls) -> int:
    """An integer order with order + 1 nodes along the normal of every wall given."""
    largest = min(_normal_axis(grid2d, wall).numel() for wall in walls) - 1
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= largest:
        raise UsageError(f"order: expected an integer in [1, {largest}], got {order!r}")
    return order


def neumann_constraint2d(
    grid2d: Grid2d, walls, order: int = 2, noise_std: float = 0.0
) -> LinearConstraint:
    """One-sided derivative rows normal to each wall, order + 1 nodes (error O(h^order)).

    The derivative is along the axis (u_x on left/right, u_y on bottom/top, as in
    `BoundaryCondition2d`), not the outward normal (that is -u_x on the left wall). Stencils from
    `derivative_weights` on the grid's own coordinates (non-uniform axes allowed). walls and
    corners as in `dirichlet_constraint2d` (a bottom/top value at a left/right corner is not
    used); rows named "neumann_<wall>[<index along the wall>]".
    """
    check_grid2d(grid2d)
    walls = _check_walls(walls)
    order = _check_order(order, grid2d, walls)
    noise_std = check_nonnegative(noise_std, "noise_std")
    parts = {}
    for wall, data in walls.items():
        axis = _normal_axis(grid2d, wall)
        low = wall in ("left", "bottom")
        nodes = axis[: order + 1] if low else axis[-(order + 1) :]
        stencil = derivative_weights(nodes, float(axis[0] if low else axis[-1]), order=1)
        owned = _owned(grid2d, wall, walls)
        positions = _node_positions(grid2d, wall, order + 1)[owned]
        parts[wall] = (owned, positions, stencil, _wall_values(data, grid2d, wall)[:, owned])
    return _assemble(grid2d, parts, noise_std, "neumann")


def periodic_constraint2d(grid2d: Grid2d, axis: str = "x", noise_std: float = 0.0):
    """u on one wall equals u on the opposite wall, pointwise, at every time slice.

    axis "x": u(x_0, y_k) - u(x_{n_x-1}, y_k) = 0 for every k (rows "periodic_x[k]"); "y":
    u(x_i, y_0) - u(x_i, y_{n_y-1}) = 0 for every i ("periodic_y[i]"); "both": the x rows and
    the y rows for i < n_x - 1 (the last y row is the sum of three others: left out, so the rows
    stay independent). For grids that store the repeated end point of the period.
    """
    check_grid2d(grid2d)
    if not isinstance(axis, str) or axis not in PERIODIC_AXES:
        raise UsageError(f"axis: expected one of {PERIODIC_AXES}, got {axis!r}")
    noise_std = check_nonnegative(noise_std, "noise_std")
    pairs = {}
    if axis in ("x", "both"):
        pairs["x"] = ("left", "right", torch.arange(grid2d.n_y))
    if axis in ("y", "both"):
        last = grid2d.n_x - 1 if axis == "both" else grid2d.n_x
        pairs["y"] = ("bottom", "top", torch.arange(last))
    parts = {}
    for name, (low, high, owned) in pairs.items():
        positions = torch.stack(
            [_node_positions(grid2d, low, 1)[owned, 0], _node_positions(grid2d, high, 1)[owned, 0]],
            dim=1,
        )
        stencil = torch.tensor([1.0, -1.0], dtype=torch.float64)
        zeros = torch.zeros(grid2d.n_t, owned.numel(), dtype=torch.float64)
        parts[name] = (owned, positions, stencil, zeros)
    return _assemble(grid2d, parts, noise_std, "periodic")


def _condition_data(data, axis: int, rows: int, grid2d: Grid2d) -> torch.Tensor:
    """BoundaryCondition2d data of one side pair -> (n_t, rows, n_other); None is zero."""
    n_other = grid2d.n_y if axis == 0 else grid2d.n_x
    shape = (grid2d.n_t, 1, rows, n_other)
    value = None if data is None else data[axis]
    if value is None:
        return torch.zeros(shape[0], rows, n_other, dtype=torch.float64)
    side = "g_x" if axis == 0 else "g_y"
    value = as_float64_tensor(value, f"data ({side})")
    try:
        return value.expand(shape)[:, 0]
    except RuntimeError:
        raise UsageError(
            f"data: expected {side} broadcastable to {shape} (time as BOON's batch, one "
            f"channel), got {tuple(value.shape)}"
        ) from None


def _check_step(condition: BoundaryCondition2d, grid2d: Grid2d) -> None:
    for axis, name in ((0, "x"), (1, "y")):
        side = condition.along(axis)
        if side.kind != "neumann":
            continue
        spacing = grid2d.x.diff() if axis == 0 else grid2d.y.diff()
        step = float(side.step)
        if float((spacing - step).abs().max()) > STEP_TOLERANCE * step:
            raise UsageError(
                f"condition: the Neumann step {step:g} of its {name}-sides is not the grid's "
                f"{name} spacing (from {float(spacing.min()):g} to {float(spacing.max()):g})"
            )


def boundary_condition2d_constraint(
    condition: BoundaryCondition2d, grid2d: Grid2d, data=None, noise_std: float = 0.0
) -> LinearConstraint:
    """The rows of a BOON `BoundaryCondition2d` at every time slice of `grid2d`.

    The field u (n_t, n_x, n_y) is BOON's (batch = n_t, channels = 1, n1 = n_x, n2 = n_y), and
    `data` its data, a pair (g_x, g_y): g_x broadcastable to (n_t, 1, r_x, n_y), g_y to
    (n_t, 1, r_y, n_x), None for zero. The rows are the condition's own (`BoundaryCondition.rows`)
    on the lines `enforce` solves: x-side rows on every line k, y-side rows on the lines i that
    are not x-side anchors (so g_y at those corners is not used, as in `enforce`). A Neumann
    condition's step must be the grid's spacing. Row names as in `dirichlet_constraint2d`.
    """
    if not isinstance(condition, BoundaryCondition2d):
        raise UsageError(
            f"condition: expected a BoundaryCondition2d, got {type(condition).__name__}"
        )
    check_grid2d(grid2d)
    noise_std = check_nonnegative(noise_std, "noise_std")
    need = condition.minimum_nodes()
    if grid2d.n_x < need[0] or grid2d.n_y < need[1]:
        raise UsageError(
            f"grid2d: expected n_x >= {need[0]} and n_y >= {need[1]} for this condition, got "
            f"({grid2d.n_x}, {grid2d.n_y})"
        )
    _check_step(condition, grid2d)
    if data is not None and (not isinstance(data, (tuple, list)) or len(data) != 2):
        raise UsageError(f"data: expected None or a pair (g_x, g_y), got {describe(data)}")
    n_x, n_y = grid2d.n_x, grid2d.n_y
    rows_x, anchors_x = condition.x.rows(n_x)  # (r_x, n_x), rows along axis 0
    rows_y, _ = condition.y.rows(n_y)  # (r_y, n_y), rows along axis 1
    g_x = _condition_data(data, 0, rows_x.shape[0], grid2d)  # (n_t, r_x, n_y)
    g_y = _condition_data(data, 1, rows_y.shape[0], grid2d)  # (n_t, r_y, n_x)
    keep = torch.tensor([i for i in range(n_x) if i not in anchors_x], dtype=torch.long)
    # x-side row q on line k: weights rows_x[q, i] at (i, k); y-side row q on line i likewise
    x_part = torch.einsum("qi,lk->qlik", rows_x, torch.eye(n_y, dtype=torch.float64))
    y_part = torch.einsum("qk,mi->qmik", rows_y, torch.eye(n_x, dtype=torch.float64)[keep])
    weights = torch.cat([x_part.reshape(-1, n_x * n_y), y_part.reshape(-1, n_x * n_y)])
    values = torch.cat([g_x.reshape(grid2d.n_t, -1), g_y[:, :, keep].reshape(grid2d.n_t, -1)], 1)
    y_walls = {"left": "bottom", "right": "top"}  # a 1-D condition's ends along y
    names = [f"{condition.x.kind}_{side}[{k}]" for side in condition.x.sides for k in range(n_y)]
    names += [
        f"{condition.y.kind}_{y_walls[side]}[{int(i)}]" for side in condition.y.sides for i in keep
    ]
    return LinearConstraint(
        weights.expand(grid2d.n_t, *weights.shape),
        values,
        torch.tensor(noise_std, dtype=torch.float64),
        tuple(names),
    )


__all__ = [
    "CORNER_TOLERANCE",
    "PERIODIC_AXES",
    "WALLS",
    "boundary_condition2d_constraint",
    "dirichlet_constraint2d",
    "neumann_constraint2d",
    "periodic_constraint2d",
]
