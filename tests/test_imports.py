"""Every module of the factory imports on its own, and no two modules import each other (not even lazily,
inside a function): the factory-internal import graph, read statically with ``ast``, has no cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "factory"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The factory modules ``module`` imports anywhere in its code (module level and inside functions),
    except under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    out: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                source = ".".join(anchor + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` needs the submodule, not pkg's names
                out.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in out if name in MODULES and name != module}


def import_graph() -> dict[str, set[str]]:
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)), name,
                           path.name == "__init__.py") for name, path in MODULES.items()}


def cyclic_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per cyclic component, as a closed path of modules."""
    return [_path_through(graph, set(c), c[0]) for c in cyclic_components(graph)]


def _path_through(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest cycle from ``start`` back to itself inside one component (breadth first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def test_cycle_finder_names_the_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_factory_modules() -> None:
    graph = import_graph()
    problems = [f"{' -> '.join(_path_through(graph, set(c), c[0]))} (modules on cycles together: {', '.join(c)})"
                for c in cyclic_components(graph)]
    assert not problems, "import cycles: " + "; ".join(problems)


def _import_alone(name: str) -> str | None:
    result = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    return None if result.returncode == 0 else f"{name}: {(result.stderr.strip().splitlines() or ['?'])[-1]}"


def _loaded_by_parent(name: str) -> bool:
    """Whether the parent package's ``__init__`` imports ``name`` at its top level: then importing ``name``
    alone runs exactly what importing the parent runs, and one of the two suffices."""
    parent = name.rpartition(".")[0]
    if parent not in MODULES:
        return False
    body = ast.parse(MODULES[parent].read_text(encoding="utf-8")).body
    return name in _imports(ast.Module(body=[n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))],
                                       type_ignores=[]), parent, True)


def test_every_module_imports_alone() -> None:
    """Each module in a fresh interpreter of its own (a few at a time)."""
    names = [m for m in MODULES if not _loaded_by_parent(m)]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        failed = [f for f in pool.map(_import_alone, names) if f]
    assert not failed, "\n".join(failed)
