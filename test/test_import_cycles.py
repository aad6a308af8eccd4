"""No import cycle between showroom_ros modules, counting every import: top level, TYPE_CHECKING, in functions.

A cycle is a trap even while it loads: a TYPE_CHECKING or function-level import hides it until someone
moves that import to the top, and then neither module can be imported first. test_layering.py forbids
cycles between folders; this test forbids them between modules, inside a folder too.

Modules are the nodes. ``import a.b`` and ``from a import b`` (``b`` a module) are edges to that module,
``from a.b import name`` an edge to ``a.b``. A package whose ``__init__`` loads its names lazily (a
module-level ``__getattr__``, PEP 562) may load any of its modules, so it has an edge to each of them.
"""

from __future__ import annotations

import ast
import graphlib
import itertools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "showroom_ros"

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first such import}


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``package`` (a package is its ``__init__.py``)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(package: Path) -> Graph:
    """Every module's imports of other modules of ``package`` (see the module docstring for the rules)."""
    modules = module_names(package)
    graph: Graph = {name: {} for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = graph[name]

        def add(target: str, line: int, edges: dict[str, int] = edges, source: str = name) -> None:
            if target in modules and target != source:
                edges.setdefault(target, line)

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the current package, one level up per extra dot
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    add(submodule if submodule in modules else base, node.lineno)
        lazy = any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in tree.body)
        if is_package and lazy:
            for other in modules:
                if other.rpartition(".")[0] == name:
                    add(other, 0)
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """Cycles as import paths ``[a, b, ..., a]`` (a imports b ...); each found cycle loses one edge, then
    the search goes on, so independent cycles are all reported."""
    remaining = {name: dict(edges) for name, edges in graph.items()}
    cycles = []
    while True:
        try:
            # Imported modules are the predecessors: a cycle comes back with each node imported by the next.
            graphlib.TopologicalSorter(remaining).prepare()
        except graphlib.CycleError as error:
            cycle = list(reversed(error.args[1]))
            cycles.append(cycle)
            del remaining[cycle[0]][cycle[1]]
        else:
            return cycles


def describe(cycle: list[str], graph: Graph) -> str:
    """``a (line 3) -> b (line 40) -> a``: where each import of the cycle is."""
    steps = []
    for module, target in itertools.pairwise(cycle):
        line = graph[module][target]
        steps.append(f"{module} ({'lazy package' if line == 0 else f'line {line}'})")
    return " -> ".join([*steps, cycle[-1]])


def test_no_import_cycle_between_showroom_ros_modules() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100, "the import graph came out nearly empty"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (break them by moving the shared piece down):\n" + "\n".join(
        describe(cycle, graph) for cycle in cycles
    )


def test_every_kind_of_import_is_followed_and_each_cycle_is_reported(tmp_path: Path) -> None:
    """The finder itself, on a package that hides cycles in each way it must see."""
    package = tmp_path / "pkg"
    (package / "lazy").mkdir(parents=True)
    files = {
        "__init__.py": "",
        # a -> b at the top, b -> a only for type checking
        "a.py": "from pkg.b import thing\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import other\nthing = 1\n",
        # c -> d in a function, d -> c by a relative import of the module
        "c.py": "def load():\n    import pkg.d\n",
        "d.py": "from . import c\n",
        # e -> the lazy package by one of its names; the package may load f, which imports e
        "e.py": "from pkg.lazy import value\n",
        "lazy/__init__.py": "def __getattr__(name):\n    raise AttributeError(name)\n",
        "lazy/f.py": "import pkg.e\n",
        # no cycle: g -> h, h imports a third-party module and itself
        "g.py": "import pkg.h\n",
        "h.py": "import numpy\nimport pkg.h\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    cycles = find_cycles(graph)
    found = {frozenset(cycle) for cycle in cycles}
    assert found == {
        frozenset({"pkg.a", "pkg.b"}),
        frozenset({"pkg.c", "pkg.d"}),
        frozenset({"pkg.e", "pkg.lazy", "pkg.lazy.f"}),
    }, cycles
    for cycle in cycles:
        assert cycle[0] == cycle[-1]
        assert all(target in graph[module] for module, target in itertools.pairwise(cycle))
    a_b = next(describe(c, graph) for c in cycles if "pkg.a" in c)
    assert "pkg.a (line 1)" in a_b and "pkg.b (line 3)" in a_b, a_b
