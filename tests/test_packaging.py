"""The package's shape: the layer's install needs only Keras and NumPy; no import cycle in ``stn``."""

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _requirement_names(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[<>=!~\[; ]", line)[0].lower() for line in lines if line}


def test_the_layer_alone_installs_keras_and_numpy_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    files = project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    names = set().union(*(_requirement_names(ROOT / f) for f in files))
    assert names == {"keras", "numpy"}


def _stn_imports(path: Path) -> set[str]:
    """``stn`` modules that ``path`` imports, at import time or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("stn."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "stn":
                found.update(a.name for a in node.names)
            elif node.module.startswith("stn."):
                found.add(node.module.split(".")[1])
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_stn():
    modules = {p.stem: p for p in (ROOT / "stn").glob("*.py") if p.stem != "__init__"}
    graph = {name: _stn_imports(path) & modules.keys() - {name}
             for name, path in modules.items()}
    assert "monitor" in graph["training"]  # the walk sees stn's own imports
    assert _cycle(graph) is None  # a lazy import inside a function counts too


def test_no_stn_module_over_400_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "stn").glob("*.py")}
    assert max(sizes.values()) <= 400, {k: v for k, v in sizes.items() if v > 400}
