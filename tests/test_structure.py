"""The tree is the data flow: no import cycle among the project's modules, no import that runs
back up the layers, and ``workloads``/``hardware_specs`` see only the graph records and errors.

The import graph is built from the source with ``ast`` (every import, top-level or inside a
function, since a lazy import is still a dependency) and checked with ``networkx``.
"""
import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulator", "workloads", "hardware_specs")

# Lowest first: a module may import only from its own layer or the layers before it.
LAYERS = [
    ("simulator.errors",),
    ("simulator.graph",),
    ("workloads", "hardware_specs"),
    ("simulator.plan",),
    ("simulator.training",),
    ("simulator.parallel",),
    ("simulator.engine",),
    ("simulator.cost",),
    ("simulator.schedule",),
    ("simulator.report",),
    ("simulator.api",),
    ("simulator.explore",),
    ("simulator.calibrate",),
    ("simulator.cli",),
]
# What workloads and hardware_specs may use of simulator (DESIGN.md: one direction only).
RECORDS = ("simulator.errors", "simulator.graph")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lives in (a package's names: its __init__)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] not in PACKAGES:
                    continue
                found = _resolve(target, modules)
                if found and found != name:
                    graph.add_edge(name, found)
    return graph


def layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


GRAPH = import_graph()


def test_the_graph_sees_the_modules_it_should():
    assert {"simulator.api", "simulator.graph.op", "workloads.zoo",
            "hardware_specs.loader"} <= set(GRAPH)
    assert GRAPH.has_edge("simulator.api", "simulator.schedule.step")
    assert GRAPH.number_of_edges() > 100


def test_no_import_cycle():
    # the package roots re-export lazily through __getattr__ and are not module edges here
    cycles = list(nx.simple_cycles(GRAPH.subgraph(n for n in GRAPH if n not in PACKAGES)))
    assert cycles == []


def test_every_module_has_a_layer():
    assert [m for m in GRAPH if m not in PACKAGES and layer(m) is None] == []


def test_no_import_runs_back_up():
    upward = [(a, b) for a, b in GRAPH.edges
              if a not in PACKAGES and b not in PACKAGES and layer(b) > layer(a)]
    assert upward == []


def test_workloads_and_specs_use_only_records_and_errors():
    leaks = [(a, b) for a, b in GRAPH.edges if _within(a, ("workloads", "hardware_specs"))
             and b.startswith("simulator") and not _within(b, RECORDS)]
    assert leaks == []
