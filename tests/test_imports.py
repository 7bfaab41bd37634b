"""The package's import graph: subpackages import only downward, and no module cycles.

Read from the source (every ``import`` statement, those inside functions too), so a
lazy import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "orient3d"

# Bottom to top (the architecture of DESIGN.md): each may import only those before it.
# The package root itself (``orient3d.__version__``) sits below all of them.
LAYERS = (
    "errors",
    "lazy",
    "allocator",
    "config_schema",
    "geometry",
    "config",
    "devices",
    "data",
    "model",
    "metrics",
    "rundir",
    "search",
    "evaluation",
    "report",
    "training",
    "orient",
    "experiments",
    "cli",
    "__main__",
)


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in SRC.rglob("*.py"):
        parts = list(f.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _imports(f: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``f`` imports (``from a import b``: ``a.b`` if a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            out |= {n if n in modules else node.module for n in names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    resolved = set()
    for name in out:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.startswith("orient3d"):
            resolved.add(name)
    return resolved


def _unit(module: str) -> str:
    """The top-level module or subpackage a module belongs to ("" for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_compat(f: Path) -> bool:
    doc = ast.get_docstring(ast.parse(f.read_text())) or ""
    return doc.startswith("Compatibility:")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(f, mods) - {m} for m, f in mods.items()}


def test_every_unit_is_layered_or_a_compatibility_alias() -> None:
    mods = _modules()
    units: dict[str, list[str]] = defaultdict(list)
    for m in mods:
        units[_unit(m)].append(m)
    for unit, members in units.items():
        if unit and unit not in LAYERS:
            odd = [m for m in members if not _is_compat(mods[m])]
            assert not odd, f"{odd}: neither in LAYERS nor a 'Compatibility:' alias module"


def test_imports_only_run_downward(graph: dict[str, set[str]]) -> None:
    rank = {u: i for i, u in enumerate(LAYERS)}
    upward = []
    for m, targets in graph.items():
        src = _unit(m)
        if src not in rank:
            continue  # a compatibility alias: it points at where its names moved
        for t in targets:
            dst = _unit(t)
            if dst == src or dst == "":
                continue
            if dst not in rank or rank[dst] > rank[src]:
                upward.append(f"{m} -> {t}")
    assert not upward, "imports that do not run downward: " + ", ".join(sorted(upward))


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    """Depth-first search for a back edge among the package's modules."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return [*path[path.index(t) :], t]
            if t not in state and (cycle := visit(t)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle)


def test_the_checks_see_an_upward_edge(tmp_path: Path) -> None:
    """The reader finds a lazy import inside a function (the kind that hid one before)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from orient3d.training.modes.search import SearchMode\n")
    mods = {"orient3d.training.modes.search": f, "orient3d.training": f}
    assert _imports(f, mods) == {"orient3d.training.modes.search"}
