"""Imports point down the layers of faceaudit.architecture and never form a cycle.

Every module of the installed packages (pyproject's package-dir) is parsed with ``ast``; every ``import`` and
``from ... import`` counts, at module level, inside functions and under ``TYPE_CHECKING`` alike.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from faceaudit.architecture import LAYERS, Layer, allowed, layer_of

ROOT = Path(__file__).resolve().parent.parent


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file for every module setuptools installs (package-dir of pyproject.toml)."""
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules: dict[str, Path] = {}
    for package in setup["packages"]:
        top = next(p for p in sorted(setup["package-dir"], key=len, reverse=True)
                   if package == p or package.startswith(p + "."))
        folder = root / setup["package-dir"][top] / Path(*package[len(top):].split(".")[1:])
        for file in sorted(folder.glob("*.py")):
            modules[package if file.stem == "__init__" else f"{package}.{file.stem}"] = file
    return modules


def _resolve(name: str, known: set[str]) -> str | None:
    """The known module a dotted name refers to: itself, else its longest known parent package."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str, file: Path, known: set[str]) -> set[tuple[str, int]]:
    """(imported faceaudit module, line) for every import statement anywhere in the file."""
    package = module if file.stem == "__init__" else module.rpartition(".")[0]
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import sub`` imports the submodule when there is one, else a name of pkg itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, known) if target.split(".")[0] == "faceaudit" else None
            if resolved and resolved != module:
                found.add((resolved, node.lineno))
    return found


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line importing it}."""
    modules = package_modules(root)
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for module, file in modules.items():
        edges: dict[str, int] = {}
        for target, line in sorted(imports(module, file, known)):
            edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_edges(graph: dict[str, dict[str, int]]) -> dict[tuple[str, str], int]:
    """(importing layer, imported layer) -> number of module edges, between different layers."""
    counts: dict[tuple[str, str], int] = {}
    for module, edges in graph.items():
        for target in edges:
            pair = (layer_of(module).name, layer_of(target).name)
            if pair[0] != pair[1]:
                counts[pair] = counts.get(pair, 0) + 1
    return counts


def layer_graph_text(graph: dict[str, dict[str, int]]) -> str:
    """One line per layer, highest first: ``layer -> the layers its modules import`` (highest first)."""
    order = [layer.name for layer in reversed(LAYERS)]
    edges = layer_edges(graph)
    width = max(len(name) for name in order)
    lines = []
    for name in order:
        targets = [other for other in order if (name, other) in edges]
        lines.append(f"{name:<{width}} -> {', '.join(targets)}" if targets else name)
    return "\n".join(lines)


def readme_layer_graph(root: Path = ROOT) -> str:
    """The text block after "as the code has it today" in the README's Layout section."""
    text = (root / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):]
    block = layout[layout.index("as the code has it today"):]
    block = block[block.index("```text\n") + len("```text\n"):]
    return block[:block.index("```")].strip()


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_every_module_has_a_layer(graph):
    missing = sorted(module for module in graph if layer_of(module) is None)
    assert not missing, f"modules missing from faceaudit.architecture.LAYERS: {missing}"


def test_imports_point_down(graph):
    modules = package_modules()
    upward = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            source_layer, target_layer = layer_of(module), layer_of(target)
            if source_layer and target_layer and not allowed(source_layer, target_layer):
                where = f"{modules[module].relative_to(ROOT)}:{line}"
                upward.append(f"{where}: {module} ({source_layer.name}) -> {target} ({target_layer.name})")
    assert not upward, "imports against the layers (lower may not import higher or a sibling):\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    found = cycles(graph)
    lines = []
    for component in found:
        members = set(component)
        edges = [f"{a} -> {b} (line {graph[a][b]})" for a in component for b in sorted(graph[a]) if b in members]
        lines.append("cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(edges))
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(lines)


def test_layer_table_is_consistent():
    names = [layer.name for layer in LAYERS]
    assert len(names) == len(set(names)), "layer names repeat"
    entries = [entry for layer in LAYERS for entry in (*layer.packages, *layer.modules)]
    assert len(entries) == len(set(entries)), "a module sits in two layers"
    assert all(isinstance(layer, Layer) and layer.rank >= 0 for layer in LAYERS)
    # The checker itself must catch an upward arrow and a cycle.
    assert not allowed(layer_of("faceaudit.models.runtime"), layer_of("faceaudit.api"))
    assert not allowed(layer_of("faceaudit.training.trainer"), layer_of("faceaudit.auditing.engine"))
    assert allowed(layer_of("faceaudit.auditing.report.render"), layer_of("faceaudit.auditing.engine"))
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_readme_import_graph_matches_the_code(graph):
    expected = layer_graph_text(graph)
    assert readme_layer_graph() == expected, (
        "README.md's Layout import graph differs from the code; replace its block with:\n" + expected)
