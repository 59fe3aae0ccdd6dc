"""The house rules of kraken's imports: no circles, and kraken/core knows no server."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kraken"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The kraken modules *path* imports, at any depth of its code (not only at the top)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> nx.DiGraph:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = nx.DiGraph()
    for f in files:
        source = module_name(f)
        graph.add_node(source)
        for target in imported_modules(f, modules) - {source}:
            # a package's __init__ importing its own modules is the package's face, not a circle
            if not (f.name == "__init__.py" and target.startswith(source + ".")):
                graph.add_edge(source, target)
    return graph


def test_kraken_has_no_import_circles() -> None:
    graph = import_graph()
    assert graph.number_of_edges() > 100, "the walk found the imports"
    assert list(nx.simple_cycles(graph)) == []


def test_core_imports_no_server() -> None:
    graph = import_graph()
    upward = [
        (source, target)
        for source, target in graph.edges
        if source.startswith("kraken.core") and not target.startswith("kraken.core")
    ]
    assert upward == []
