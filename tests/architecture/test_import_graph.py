"""The package's import graph: no cycles, and neither backend imports the other.

Every import counts, including those inside functions (a lazy import can hide a cycle just as
well); only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "miles_hydra"
LOCAL, MILES = "miles_hydra.backends.local", "miles_hydra.backends.miles"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, here: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of the package that ``tree`` imports (``from a import b`` counts ``a.b`` when that
    is a module, else ``a``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: _imported(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
        - {name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert "miles_hydra.config.run" in graph["miles_hydra.config.store"]
    assert len(graph) > 60


def test_no_import_cycles() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles (each line one cycle):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_backend_imports_the_other() -> None:
    crossing = [
        f"{src} imports {dst}"
        for src, dsts in import_graph().items()
        for dst in sorted(dsts)
        for a, b in ((LOCAL, MILES), (MILES, LOCAL))
        if src.startswith(a) and dst.startswith(b)
    ]
    assert not crossing, "\n".join(crossing)


def test_shared_layers_do_not_import_a_backend() -> None:
    """config/ and tasks/ sit under both backends: neither may reach into one."""
    crossing = [
        f"{src} imports {dst}"
        for src, dsts in import_graph().items()
        if src.startswith(("miles_hydra.config", "miles_hydra.tasks", "miles_hydra.errors"))
        for dst in sorted(dsts)
        if dst.startswith("miles_hydra.backends")
    ]
    assert not crossing, "\n".join(crossing)
