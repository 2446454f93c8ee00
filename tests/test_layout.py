"""The package's shape (issue #31): no import loop, counting imports inside functions; no function over 80
lines; fewer than 40 imports inside functions, each with its reason on its line (`# lazy: ...`)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "llast"


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = (f, ast.parse(f.read_text(encoding="utf-8")))
    return out


def _imported(node: ast.AST, modules) -> set[str]:
    """The llast modules an import statement names (`from llast import x` names llast.x when x is one)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if isinstance(node, ast.ImportFrom) and node.module in modules:
        subs = {f"{node.module}.{a.name}" for a in node.names}
        return (subs & modules.keys()) or {node.module}
    return set()


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for node in ast.walk(tree) for m in _imported(node, modules)} - {name}
            for name, (_, tree) in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(n, path):
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m, path + [m])):
                return found
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n, [n])):
            return found
    return None


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def inner_imports() -> list[tuple[str, int, str]]:
    found = []
    for f, tree in _modules().values():
        lines = f.read_text(encoding="utf-8").splitlines()
        seen = set()
        for fn in _functions(tree):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in seen:
                    seen.add(node.lineno)
                    found.append((f.name, node.lineno, lines[node.end_lineno - 1]))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_no_import_loop_counting_imports_inside_functions():
    graph = import_graph()
    assert "llast.decode" in graph["llast.cli"] and "llast.generate" in graph["llast.decode"]  # the graph is read
    assert find_cycle(graph) is None


def test_no_function_over_80_lines():
    long = [(f.name, fn.name, fn.end_lineno - fn.lineno + 1) for f, tree in _modules().values()
            for fn in _functions(tree) if fn.end_lineno - fn.lineno + 1 > 80]
    assert long == []


def test_fewer_than_40_imports_inside_functions_each_with_its_reason():
    found = inner_imports()
    assert 0 < len(found) < 40, len(found)
    assert [f"{f}:{n}" for f, n, line in found if "# lazy:" not in line] == []
