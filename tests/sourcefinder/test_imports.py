"""The finder's modules import each other without a circle (tiling -> array, never back)."""

from __future__ import annotations

import ast
from pathlib import Path

from caesar_rest import sourcefinder

PACKAGE = "caesar_rest.sourcefinder"


def _graph() -> dict[str, set[str]]:
    """Module -> finder modules it imports (every import: top level, in functions, typing)."""
    graph: dict[str, set[str]] = {}
    for path in Path(sourcefinder.__file__).parent.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
                deps.add(str(node.module).split(".")[2])
        graph[path.stem] = deps - {path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, set()) & set(graph)):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_circle_in_the_finder() -> None:
    graph = _graph()
    assert {"array", "pipeline", "tiling", "lm", "_types"} <= set(graph)
    assert "array" in graph["tiling"] and "pipeline" not in graph["tiling"]
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
