"""One BoundaryCondition for both papers: BOON's enforce and the exact update read the same rows."""

import pytest
import torch

from probcons import BoundaryCondition, GaussianPrediction, Grid, UsageError
from probcons.constraints import dirichlet_constraint, neumann_constraint, periodic_constraint
from probcons.constraints.boundary_condition import dirichlet, neumann, periodic
from probcons.covariance import DiagonalCovariance

GRID = Grid.uniform((0.0, 1.0), (0.0, 2.0), 4, 17)
STEP = 2.0 / 16


@pytest.mark.parametrize(
    ("condition", "builder"),
    [
        (dirichlet(), lambda: dirichlet_constraint(GRID, left=0.5, right=-1.0)),
        (dirichlet(("right",)), lambda: dirichlet_constraint(GRID, right=-1.0)),
        (neumann(STEP, order=2), lambda: neumann_constraint(GRID, 0.5, -1.0, order=2)),
        (neumann(STEP, order=3, sides=("left",)), lambda: neumann_constraint(GRID, 0.5, order=3)),
        (periodic(), lambda: periodic_constraint(GRID)),
    ],
)
def test_constraint_is_the_builders_rows(condition, builder):
    rows = condition.constraint(GRID, left=0.5, right=-1.0)
    expected = builder()
    assert rows.names == expected.names
    assert torch.equal(rows.weights, expected.weights)
    assert torch.equal(rows.values, expected.values)


@pytest.mark.parametrize("condition", [dirichlet(), neumann(STEP, order=2), periodic()])
def test_boon_enforce_satisfies_the_probabilistic_rows(condition):
    """A field whose boundary nodes BOON solved for satisfies the LinearConstraint of the same
    condition: the two papers' consumers agree on what the condition means."""
    generator = torch.Generator().manual_seed(0)
    field = torch.randn(GRID.n_t, 1, GRID.n_x, generator=generator, dtype=torch.float64)
    data = torch.tensor([0.5, -1.0], dtype=torch.float64)[: condition.n_rows]
    enforced = condition.enforce(field, data)[:, 0]  # (n_t, n_x)
    rows = condition.constraint(GRID, left=0.5, right=-1.0)
    assert rows.residual(enforced).abs().max() < 1e-12


def test_conditioning_on_a_boundary_condition_holds_exactly():
    variance = torch.rand(GRID.size, generator=torch.Generator().manual_seed(1)).double() + 0.1
    prior = GaussianPrediction(torch.zeros(GRID.shape), DiagonalCovariance(variance), GRID)
    rows = neumann(STEP).constraint(GRID, left=0.0, right=2.0)
    draws = prior.condition(rows).sample(50, torch.Generator().manual_seed(2))
    assert rows.residual(draws).abs().max() < 1e-10


def test_neumann_step_must_match_the_grid():
    with pytest.raises(UsageError, match="step: the Neumann condition's step 0.1 is not"):
        neumann(0.1).constraint(GRID)
    with pytest.raises(UsageError, match="kind: expected one of"):
        BoundaryCondition("robin")
