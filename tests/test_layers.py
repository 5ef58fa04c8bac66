"""The house stays in layers: every import of the application packages is read (with `ast`) and checked.

Layers, bottom to top (a package may import its own modules and any package of a lower layer):

    schemas → tapeflow_runtime → producers | sinks | stream_apps | fake_exchange | tapeflow_notify → execution → review → backtest → tapeflow_ui → tapeflow

Also: the packages of one layer do not import each other; a venue (`producers/binance`,
`producers/bybit`) never imports another venue, and the neutral base never imports a venue; no
import circle between modules, lazy (function-level) imports included. Imports under
`if TYPE_CHECKING:` obey the layers but do not count in a circle: they never run, and a part that names its owner's type in its
annotations (the executor's entry flow, the symbol state's codec) depends on it by design, not in a
circle Python would have to resolve.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

from tests.support.paths import REPO

LAYERS: dict[str, int] = {
    "schemas": 0,
    "tapeflow_runtime": 1,
    "producers": 2,
    "sinks": 2,
    "stream_apps": 2,
    "fake_exchange": 2,
    "tapeflow_notify": 2,
    "execution": 3,
    "review": 4,
    "backtest": 5,
    "tapeflow_ui": 6,
    "tapeflow": 7,
}
VENUES = ("binance", "bybit", "okx")


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, type_only: bool = True) -> list[tuple[str, int]]:
    """Absolute names of every module `path` imports (relative imports resolved), with line numbers;
    ``type_only=False`` leaves out the imports under ``if TYPE_CHECKING:``."""
    every, runtime = _both_imports_of(path)
    return every if type_only else runtime


def _both_imports_of(path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """`imports_of(path)` and `imports_of(path, type_only=False)` from one parse and one walk of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    nodes: list[ast.Import | ast.ImportFrom] = []
    type_checking: set[int] = set()  # ids of the nodes under `if TYPE_CHECKING:`
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            nodes.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            type_checking.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    every: list[tuple[str, int]] = []
    runtime: list[tuple[str, int]] = []
    for node in nodes:
        names = _names_imported(node, package)
        every += names
        if id(node) not in type_checking:
            runtime += names
    return every, runtime


def _names_imported(node: ast.Import | ast.ImportFrom, package: list[str]) -> list[tuple[str, int]]:
    if isinstance(node, ast.Import):
        return [(alias.name, node.lineno) for alias in node.names]
    base = node.module or ""
    if node.level:
        prefix = package[: len(package) - (node.level - 1)]
        base = ".".join([*prefix, base] if base else prefix)
    # `from pkg import module` imports pkg.module; `from pkg import name` needs pkg's __init__
    modules = [f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}")]
    out = [(m, node.lineno) for m in modules]
    if len(modules) < len(node.names):
        out.append((base, node.lineno))
    return out


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (REPO / rel.with_suffix(".py")).is_file() or (REPO / rel / "__init__.py").is_file()


def app_modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = app_modules()


@functools.cache
def graphs() -> tuple[dict[str, list[tuple[str, int]]], dict[str, list[tuple[str, int]]]]:
    """(every import, the imports that run: not under ``if TYPE_CHECKING:``) between the application
    packages, by module. Read at the first test that needs it, not at import: every pytest-xdist worker
    imports this module to collect it, and reading the tree cost ~2.6 CPU-s (each file parsed twice)."""
    graph, runtime = {}, {}
    for name, path in MODULES.items():
        every, running = _both_imports_of(path)
        graph[name] = [(imp, line) for imp, line in every if imp.split(".")[0] in LAYERS]
        runtime[name] = [(imp, line) for imp, line in running if imp.split(".")[0] in LAYERS]
    return graph, runtime


def test_every_package_of_the_layout_is_read():
    assert {name.split(".")[0] for name in MODULES} == set(LAYERS)
    assert len(MODULES) > 150  # the walk really reads the tree


def layer_violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    out = []
    for name, imports in graph.items():
        top = name.split(".")[0]
        for imp, line in imports:
            other = imp.split(".")[0]
            if other != top and LAYERS[other] >= LAYERS[top]:
                out.append(f"{name}:{line} imports {imp}")
    return out


def venue_violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    out = []
    for name, imports in graph.items():
        parts = name.split(".")
        if parts[0] != "producers" or len(parts) < 2 or parts[1] not in (*VENUES, "base"):
            continue
        for imp, line in imports:
            ip = imp.split(".")
            if ip[0] == "producers" and len(ip) > 1 and ip[1] in VENUES and ip[1] != parts[1]:
                out.append(f"{name}:{line} imports {imp}")
    return out


def test_no_package_imports_a_layer_above_it_or_beside_it():
    assert layer_violations(graphs()[0]) == []


def test_venues_never_import_each_other_and_the_base_imports_none():
    assert venue_violations(graphs()[0]) == []


def test_the_checks_catch_planted_violations():
    """The rules themselves can fail: upward, sideways and cross-venue imports are all reported."""
    planted = {
        "tapeflow_runtime.endpoints": [("tapeflow.stack.postgres", 3)],
        "sinks.consumer": [("producers.publisher", 4)],
        "producers.bybit.parse": [("producers.binance.parse", 5)],
        "producers.base.venue": [("producers.binance.producer", 6)],
        "execution.service": [("stream_apps.core.exits", 7), ("tapeflow_runtime.settings", 8)],
    }
    assert layer_violations(planted) == [
        "tapeflow_runtime.endpoints:3 imports tapeflow.stack.postgres",
        "sinks.consumer:4 imports producers.publisher",
    ]
    assert venue_violations(planted) == [
        "producers.bybit.parse:5 imports producers.binance.parse",
        "producers.base.venue:6 imports producers.binance.producer",
    ]


def test_the_fake_exchange_is_outside_producers_and_no_service_imports_it():
    assert not (REPO / "producers" / "fake_exchange").exists()
    users = sorted(
        {
            name.split(".")[0]
            for name, imports in graphs()[0].items()
            for imp, _ in imports
            if imp.split(".")[0] == "fake_exchange" and not name.startswith("fake_exchange")
        }
    )
    assert set(users) <= {"tapeflow"}  # only the CLI and the stack's replay source start it


def test_no_import_circle_between_modules():
    edges: dict[str, set[str]] = defaultdict(set)
    for name, imports in graphs()[1].items():
        for imp, _ in imports:
            # an import of a package runs its __init__; an import of a module names it exactly
            target = imp if imp in MODULES else None
            while target is None and "." in imp:
                imp = imp.rsplit(".", 1)[0]
                target = imp if imp in MODULES else None
            # a module's own packages are imported before it by Python itself: not an edge of a circle
            if target and target != name and not name.startswith(target + "."):
                edges[name].add(target)
    cycles = _cycles(edges)
    assert cycles == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(MODULES):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_walker_resolves_relative_imports():
    resolved = {imp for imp, _ in imports_of(REPO / "fake_exchange" / "state.py")}
    assert {"fake_exchange.agg_trades", "fake_exchange.recording"} <= resolved


def test_a_planted_circle_is_found():
    edges = {name: set() for name in MODULES}
    first, second = "producers.base.book", "producers.base.stream"
    edges[first] = {second}
    edges[second] = {first}
    assert _cycles(edges) == [[first, second]]
