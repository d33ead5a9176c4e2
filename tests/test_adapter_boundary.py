"""The adapter boundary, checked on the sources of the five adapters: they import nothing private
from the core (only ``polybus`` and ``polybus.adapter``), neither touch nor shadow the base classes'
private names (they use the hooks of docs/writing-an-adapter.md), and have no import cycle, not
even through imports inside functions; the core has none at import time."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = sorted(p for p in (ROOT / "adapters").glob("*/src/polybus_*") if p.is_dir())
CORE = ROOT / "src" / "polybus"


def _modules(package: Path) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, *, lazy: bool) -> Iterator[tuple[str, int]]:
    """(module, line) of every import run at import time (and, with ``lazy``, inside functions)."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (item for stmt in child.orelse for item in visit_one(stmt, in_function))
                continue
            yield from visit_one(child, in_function)

    def visit_one(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int]]:
        if isinstance(node, ast.Import | ast.ImportFrom) and (lazy or not in_function):
            if isinstance(node, ast.Import):
                yield from ((alias.name, node.lineno) for alias in node.names)
            elif node.level == 0 and node.module:
                yield node.module, node.lineno
                yield from ((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from visit(node, inner)

    yield from visit(tree, False)


def _edges(path: Path, modules: dict[str, Path], *, lazy: bool) -> set[str]:
    """The package's modules that ``path`` imports (``from pkg import _sub`` imports ``pkg._sub``:
    the package itself is only initialised, which every submodule import does)."""
    imported = {m for m, _ in _imports(ast.parse(path.read_text()), lazy=lazy) if m in modules}
    return {m for m in imported if not any(other.startswith(m + ".") for other in imported)}


def _cycle(package: Path, *, lazy: bool) -> list[str] | None:
    modules = _modules(package)
    graph = {name: sorted(_edges(path, modules, lazy=lazy) - {name}) for name, path in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := walk(name)):
            return found
    return None


def test_there_are_five_adapters() -> None:
    assert len(ADAPTERS) == 5


@pytest.mark.parametrize("package", ADAPTERS, ids=lambda p: p.name)
def test_adapters_import_only_the_public_core(package: Path) -> None:
    private = sorted(
        {
            f"{path.relative_to(ROOT)}:{line}: {module}"
            for path in package.rglob("*.py")
            for module, line in _imports(ast.parse(path.read_text()), lazy=True)
            if module.split(".")[0] == "polybus" and any(p.startswith("_") for p in module.split(".")[1:2])
        }
    )
    assert not private, "adapters may import polybus and polybus.adapter only:\n" + "\n".join(private)


@pytest.mark.parametrize("package", ADAPTERS, ids=lambda p: p.name)
def test_adapters_have_no_import_cycle_even_through_lazy_imports(package: Path) -> None:
    assert _cycle(package, lazy=True) is None, (
        f"import cycle: {' -> '.join(_cycle(package, lazy=True) or [])}"
    )


def test_the_core_has_no_import_cycle_at_import_time() -> None:
    assert _cycle(CORE, lazy=False) is None, f"import cycle: {' -> '.join(_cycle(CORE, lazy=False) or [])}"


# -- the base classes' private state ------------------------------------------------------------------

HOOKS = {
    # what docs/writing-an-adapter.md hands to adapters: hooks they implement, helpers they may call
    "_open", "_aclose", "_topic", "_ensure", "_delete", "_stats", "_producer", "_consumer", "_publish",
    "_publish_bodies", "_fetch", "_settle_native", "_release", "_interrupt", "_ack_batch", "_take_acks",
    "_flush_acks", "_drop_buffered", "_check_open", "_inbox", "_reply", "_request", "_receive",
    "_send_to_group",
}  # fmt: skip
BASES = [
    "_resource.py", "_broker.py", "_topic.py", "_producer.py", "_consumer.py", "_delivery.py", "_reply.py",
]  # fmt: skip


def _base_private_names() -> set[str]:
    names: set[str] = set()
    for base in BASES:
        for node in ast.walk(ast.parse((CORE / base).read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        names.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        names.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        names.update(t.id for t in item.targets if isinstance(t, ast.Name))
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")} - HOOKS


def test_the_private_names_of_the_bases_are_found() -> None:
    assert {
        "_buffer",
        "_unsettled",
        "_queued_acks",
        "_closed",
        "_opened",
        "_mark_settled",
    } <= _base_private_names()


@pytest.mark.parametrize("package", ADAPTERS, ids=lambda p: p.name)
def test_adapters_neither_touch_nor_shadow_the_bases_private_state(package: Path) -> None:
    private = _base_private_names()
    found = sorted(
        f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        for name in _names_used(node)
        if name in private
    )
    assert not found, "adapters use hooks and held(), not the bases' private names:\n" + "\n".join(found)


def _names_used(node: ast.AST) -> list[str]:
    """The attribute read or set, or the function defined, at ``node``."""
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return [node.name]
    return []
