"""The finder's modules import each other without a circle (tiling -> array, never back)."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def _loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has loaded after running ``code``."""
    probe = f"import sys; {code}; print(sorted(n for n in {names!r} if n in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return list(ast.literal_eval(out.stdout.strip()))


#: Modules only some runs need: the non-default extended methods and scikit-image (contours).
ON_DEMAND = (
    f"{PACKAGE}.activecontour",
    f"{PACKAGE}.saliency",
    f"{PACKAGE}.superpixel",
    "skimage",
)


def test_the_finder_loads_the_other_extended_methods_and_skimage_on_demand() -> None:
    # What benchmarks/finders.py's caesar runner imports, and the caesar program.
    runner = (
        "from caesar_rest.catalogue.writers import write_csv; "
        "from caesar_rest.sourcefinder import build_catalogues, find_sources, from_legacy"
    )
    for code in (runner, "import caesar_rest.apps.caesar_run"):
        assert _loaded_after(code, ON_DEMAND) == [], code
