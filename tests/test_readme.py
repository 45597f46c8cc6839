"""The README's Python example runs as written and its constraints hold."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    draws, problem, grid = namespace["draws"], namespace["problem"], namespace["grid"]
    assert draws["u"].shape == (100, *grid.shape)
    assert (draws["mass"] - problem.mass(grid.t, 0.6)[:, None]).abs().max() < 1e-10
    assert (draws["inflow"] - 1.0).abs().max() < 1e-10
