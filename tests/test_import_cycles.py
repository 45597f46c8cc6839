"""No import cycles between the modules of probcons, imports inside functions included.

The scan reads each module's syntax tree, so it sees every `import` and `from ... import`
wherever it stands (top level, function, class body), resolves relative imports, and skips only
those under `if TYPE_CHECKING:`, which never run. An edge A -> B means module A imports module B
itself (importing `probcons.x.y` is an edge to it, not to the packages above it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import probcons

PACKAGE_ROOT = Path(probcons.__file__).resolve().parent
"""The probcons package folder."""


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module under `root` (the folder of `package`) by its dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Import nodes anywhere in `tree`, except inside `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """`name` if it is a known module, else the longest known module it lies in, else None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line of the import}, known modules only."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    anchor = anchor if is_package else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else base)
            for target in targets:
                found = _resolve(target, modules)
                if found is not None and found != module:
                    edges.setdefault(found, node.lineno)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def describe_cycles(graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> list[str]:
    """One line per cycle: its modules and the imports that close it (file:line)."""
    lines = []
    for component in strongly_connected(graph):
        members = set(component)
        edges = [
            f"{source} -> {target} ({modules[source].name}:{line})"
            for source in component
            for target, line in sorted(graph[source].items())
            if target in members
        ]
        lines.append(" <-> ".join(component) + ": " + "; ".join(edges))
    return lines


def test_probcons_has_no_import_cycles():
    modules = module_files(PACKAGE_ROOT, "probcons")
    cycles = describe_cycles(import_graph(modules), modules)
    assert not cycles, "import cycles in probcons:\n" + "\n".join(cycles)


def test_the_scan_finds_a_cycle_through_a_function_level_import(tmp_path):
    """A planted cycle closed by an import inside a function, and a relative import."""
    root = tmp_path / "planted"
    (root / "inner").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "inner" / "__init__.py").write_text("")
    (root / "a.py").write_text("from planted.inner import b\n")
    (root / "inner" / "b.py").write_text("def f():\n    from .. import c\n")
    (root / "c.py").write_text("import planted.a\n")
    (root / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from planted import a\n"
    )
    (root / "e.py").write_text("import planted.d\n")
    modules = module_files(root, "planted")
    graph = import_graph(modules)
    assert graph["planted.inner.b"] == {"planted.c": 2}
    assert graph["planted.d"] == {}
    assert strongly_connected(graph) == [["planted.a", "planted.c", "planted.inner.b"]]
    (root / "c.py").write_text("import os\n")
    assert strongly_connected(import_graph(module_files(root, "planted"))) == []
