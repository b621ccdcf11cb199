"""The package's imports flow one way: no import cycles between errorforcing's modules, and no
module imports another subpackage's private module (it imports what that subpackage exports).

The graph is read with `ast` from the source, function-level imports included (a lazy import
is still a dependency: it only hides a cycle until the function runs)."""

from __future__ import annotations

import ast
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "errorforcing"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str) -> list[str]:
    """Every errorforcing module `name` imports (`from x import y` counts `x.y` where y is a module)."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, node)
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        found += [t for t in targets if t.split(".")[0] == "errorforcing"]
    return found


def _owner(module: str) -> str:
    """The subpackage a module belongs to (`errorforcing.rules._bptt` -> `errorforcing.rules`)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and not parts[1].startswith("_") else "errorforcing"


GRAPH = {name: sorted({t for t in _imports(name) if t in MODULES and t != name}) for name in MODULES}


def _package_graph() -> dict[str, set[str]]:
    """Subpackage -> the subpackages it imports (a subpackage importing itself is not an edge)."""
    edges: dict[str, set[str]] = {}
    for name, targets in GRAPH.items():
        src = _owner(name)
        edges.setdefault(src, set()).update(_owner(t) for t in targets if _owner(t) not in (src, "errorforcing"))
    return edges


def _cycle(edges: dict[str, set[str]] | dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_function_level_and_relative_imports():
    # the checks below mean nothing if the walker misses imports: these are known edges
    assert "errorforcing.experiments" in GRAPH["errorforcing.cli._training"]  # lazy, relative, in a function
    assert "errorforcing.rules._base" in GRAPH["errorforcing.rules._bptt"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_subpackages():
    cycle = _cycle(_package_graph())
    assert cycle is None, "subpackage cycle: " + " -> ".join(cycle)


def _private_imports() -> list[tuple[str, str]]:
    """(importer, target) where target is a private module of another subpackage."""
    out = []
    for name, targets in GRAPH.items():
        for t in targets:
            private = any(part.startswith("_") for part in t.split(".")[2:])
            if private and _owner(t) != _owner(name) and _owner(t) != "errorforcing":
                out.append((name, t))
    return out


def test_no_module_imports_another_subpackages_private_module():
    found = [f"{a} imports {b}" for a, b in _private_imports()]
    assert not found, "\n".join(found)


# DESIGN.md's layers, lowest first: a subpackage imports only subpackages of a lower layer.
LAYERS = [("tasks", "models", "store"), ("forcing", "analysis"), ("rules",), ("training",), ("experiments",),
          ("reproductions",), ("plotting", "bench"), ("cli",)]
RANK = {f"errorforcing.{name}": i for i, layer in enumerate(LAYERS) for name in layer}


def test_every_subpackage_has_a_layer():
    assert set(_package_graph()) - {"errorforcing"} == set(RANK)


def test_imports_flow_down_the_layers():
    upward = [f"{src} imports {dst}" for src, dsts in _package_graph().items() if src in RANK
              for dst in sorted(dsts) if RANK[dst] >= RANK[src]]
    assert not upward, "\n".join(upward)


def test_summary_statistics_are_a_leaf():
    # Wilson intervals, best setting and the tests on them import nothing that trains or draws,
    # so plotting, reproductions and the cli can all use them (method labels read the registry)
    assert set(GRAPH["errorforcing.experiments._summary"]) <= {"errorforcing.experiments._registry"}
    assert GRAPH["errorforcing.experiments._stats"] == ["errorforcing.experiments._summary"]
