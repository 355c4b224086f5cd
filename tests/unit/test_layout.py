"""The package layout holds: imports flow one way (tools -> runtime -> ops/pipeline -> estimate
-> core), there are no import cycles, and the pure packages never import I/O libraries. Read
from the source (AST), so a violation fails here before it can hide behind a lazy import."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Each package's rank: a module may import only from packages of a lower rank, or its own.
RANKS = {"core": 0, "estimate": 1, "pipeline": 2, "ops": 2, "runtime": 3, "tools": 4, "cli": 5}
#: What the simulator (producers/) may import of streams/: the shared contract only.
PRODUCERS_MAY_IMPORT = {"core"}
#: Libraries the pure packages must not import: they would need a broker, Redis or a web server.
IO_LIBRARIES = {"faust", "aiohttp", "redis", "aiokafka", "kafka", "mode"}
PURE = {"core", "estimate"}


def modules() -> dict[str, Path]:
    found = {}
    for top in ("streams", "producers"):
        for path in sorted((REPO / top).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of streams/ or producers/ that `name` imports (at any depth, lazy ones too),
    and, prefixed with "lib:", every third-party top-level package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                out.add(target)
        for target in targets:
            top = target.split(".")[0]
            if top and top not in ("streams", "producers"):
                out.add(f"lib:{top}")
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "streams" or len(parts) < 2:
        return None
    return parts[1]


def test_every_streams_module_belongs_to_a_ranked_package() -> None:
    loose = [m for m in graph() if m.startswith("streams.") and package_of(m) not in RANKS and package_of(m) != "data"]
    assert loose == [], f"modules outside the packages of the map (docs/architecture.md): {loose}"


def test_imports_flow_one_way() -> None:
    wrong = []
    for module, targets in graph().items():
        own = package_of(module)
        for target in targets:
            theirs = package_of(target)
            if target.startswith("lib:") or theirs is None:
                continue
            if module.startswith("producers"):
                if theirs not in PRODUCERS_MAY_IMPORT:
                    wrong.append(f"{module} -> {target}")
            elif own != theirs and RANKS[theirs] >= RANKS[own]:
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    edges = {m: {t for t in targets if not t.startswith("lib:")} for m, targets in graph().items()}
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert cycles == [], f"import cycles: {cycles}"


def test_pure_packages_import_no_io_library() -> None:
    wrong = [
        f"{module} -> {target[4:]}"
        for module, targets in graph().items()
        if package_of(module) in PURE
        for target in targets
        if target.startswith("lib:") and target[4:] in IO_LIBRARIES
    ]
    assert wrong == [], f"pure modules importing I/O libraries: {wrong}"


def test_the_checks_see_a_violation() -> None:
    """The graph is real: it finds the imports that are known to exist."""
    g = graph()
    assert "streams.core.keys" in g["streams.pipeline.hll_store"]
    assert "lib:faust" in g["streams.runtime.app"]
    assert "streams.core.wire" in g["producers.publisher"]
