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


def _modules() -> dict[str, Path]:
    """Every module of ``stn`` by dotted name (``stn.layer.kinds``), packages included."""
    modules = {}
    for path in sorted((ROOT / "stn").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _stn_imports(path: Path) -> set[str]:
    """``stn`` modules that ``path`` imports, at import time or inside a function.

    ``from stn.a import b`` counts as ``stn.a.b`` when that is a module, else as ``stn.a``.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("stn."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "stn" or node.module.startswith("stn."):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in MODULES else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {name: _stn_imports(path) - {name} for name, path in MODULES.items()
            if name != "stn"}  # ``stn`` itself imports only the kept stn.layers


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
    graph = _graph()
    assert "stn.train.monitor" in graph["stn.train.training"]  # the walk sees stn's own imports
    assert "stn.layer.kinds" in graph["stn.layer.layers"]
    assert _cycle(graph) is None  # a lazy import inside a function counts too


# What each subpackage may import of stn besides itself: the layer nothing,
# data only the layer, and so on up; the model builders sit between data and
# the training loop (they read stn.train.config's ModelConfig).
ALLOWED = {
    "stn.layer": set(),
    "stn.data": {"stn.layer"},
    "stn.model": {"stn.layer", "stn.data", "stn.train.config"},
    "stn.train": {"stn.layer", "stn.data", "stn.model"},
    "stn.analysis": {"stn.layer", "stn.data", "stn.model", "stn.train"},
    "stn.viz": {"stn.layer", "stn.data", "stn.model", "stn.train", "stn.analysis"},
}


def _home(module: str) -> str:
    for home in sorted(ALLOWED, key=len, reverse=True):
        if module == home or module.startswith(home + "."):
            return home
    return module


def _allowed(home: str, target: str) -> bool:
    return _home(target) == home or any(
        target == a or target.startswith(a + ".") for a in ALLOWED[home])


def test_subpackages_import_only_those_below_them():
    graph = _graph()
    homes = {_home(m) for m in graph}
    assert set(ALLOWED) <= homes, homes  # every subpackage exists
    wrong = {m: sorted(t for t in targets if not _allowed(_home(m), t))
             for m, targets in graph.items() if _home(m) in ALLOWED}
    assert not any(wrong.values()), {m: t for m, t in wrong.items() if t}
    layer = {m: targets for m, targets in graph.items() if m.startswith("stn.layer")}
    assert layer and all(t.startswith("stn.layer") for ts in layer.values() for t in ts)


def test_the_import_rule_sees_a_wrong_import():
    assert not _allowed("stn.layer", "stn.data.warps")
    assert not _allowed("stn.data", "stn.train.config")
    assert _allowed("stn.viz", "stn.analysis.pose")


def test_the_kept_shims_import_only_their_new_homes():
    assert _stn_imports(MODULES["stn.layers"]) == {"stn.layer.layers"}


def test_no_stn_module_over_500_lines():
    # A generous cap, not a rule to split by: modules split by concept.
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in MODULES.values()}
    assert max(sizes.values()) <= 500, {k: v for k, v in sizes.items() if v > 500}


# --- no private name crosses a module -------------------------------------

SCANNED = ("stn", "experiments", "bench", "train.py", "evaluate.py")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str) -> list[str]:
    """``from m import _x`` and ``m._x`` (``m`` an imported module or name) in ``source``."""
    tree = ast.parse(source)
    imported, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                imported.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            imported.update(a.asname or a.name.split(".")[0] for a in node.names)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in imported):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_private_use_finder_finds_both_forms():
    source = ("from stn.a import _b, c\nimport stn.d as d\nfrom stn import e\n"
              "d._f(e._g, c.h, self._i)\n")
    assert private_uses(source) == ["line 1: from stn.a import _b", "line 4: d._f",
                                    "line 4: e._g"]
    assert private_uses("class A:\n    def _f(self):\n        return self._g\n") == []


def test_no_private_name_imported_across_modules():
    paths = [p for name in SCANNED for p in ((ROOT / name).rglob("*.py")
                                             if (ROOT / name).is_dir() else [ROOT / name])]
    assert len(paths) > 60
    found = {str(p.relative_to(ROOT)): uses for p in paths if (uses := private_uses(p.read_text()))}
    assert not found, found


def test_pip_install_ships_every_subpackage():
    from setuptools import find_packages
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(where=str(ROOT), include=include))
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert packages == shipped and "stn.layer" in shipped, (packages, shipped)
