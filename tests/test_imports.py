"""The package's import graph: no cycles anywhere, and the layering the architecture promises.

Imports are read from the source (``ast``), at module level and inside functions alike
(a lazy import inside a function is still a dependency), except those under
``if TYPE_CHECKING:`` (annotations only). ``from package import name`` counts as an
import of ``package.name`` when that is a module, else of ``package``.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "netdissect_widgets"
PACKAGE = "netdissect_widgets"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> set[str]:
    """The package modules that ``module`` imports."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith(PACKAGE):
                        target = resolve(alias.name)
                        if target:
                            found.add(target)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                if source.startswith(PACKAGE):
                    for alias in child.names:
                        target = f"{source}.{alias.name}"
                        found.add(target if target in MODULES else resolve(source))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    found.discard(None)
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_lazy_and_package_imports():
    graph = import_graph()
    # a relative import of a sibling module, a lazy one inside a function, and `from .. import _order`
    assert "netdissect_widgets.dissection._order" in graph["netdissect_widgets.dissection.backends.base"]
    assert "netdissect_widgets.dissection.report" in graph["netdissect_widgets.dissection.result"]
    assert "netdissect_widgets.stats._bilinear" in graph["netdissect_widgets.dissection.backends.tensor"]


def test_no_import_cycles_in_the_package():
    assert find_cycles(import_graph()) == []


def test_pure_helpers_import_nothing_of_the_package():
    graph = import_graph()
    for name in ("netdissect_widgets.dissection._order", "netdissect_widgets.dissection._labels"):
        assert graph[name] == set(), (name, graph[name])


def test_each_backend_imports_only_the_shared_modules_never_another_backend():
    graph = import_graph()
    backends = {"netdissect_widgets.dissection.backends.tensor", "netdissect_widgets.dissection.backends.numba_cpu"}
    for name in backends:
        assert not (graph[name] & backends), (name, graph[name])
        assert not any(m.startswith("netdissect_widgets.dissection.") and m.rpartition(".")[2] in
                       ("_stats", "_pass", "_run", "_cache") for m in graph[name]), graph[name]


def test_the_method_never_imports_the_toy_world_or_the_widgets():
    graph = import_graph()
    method = ("dissection", "stats", "intervene", "segment", "hooks")
    for name, deps in graph.items():
        if name.split(".")[1:2] and name.split(".")[1] in method:
            bad = {d for d in deps if d.split(".")[1:2] and d.split(".")[1] in ("toyworld", "widgets")}
            assert not bad, (name, bad)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if ".bench" not in m and not m.endswith("__main__")))
def test_every_module_imports(name):
    importlib.import_module(name)
