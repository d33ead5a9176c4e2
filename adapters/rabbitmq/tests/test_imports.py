"""The adapter's modules import one another in one direction, at module level only, and take from
the core only what ``polybus`` and ``polybus.adapter`` export.

Annotation-only imports go under ``if TYPE_CHECKING:``; an import inside a function (a lazy import
working around a cycle) or a cycle among the run-time imports fails here. Reads the sources only.
"""

from __future__ import annotations

import ast
import pathlib

import polybus_rabbitmq

PACKAGE = pathlib.Path(polybus_rabbitmq.__file__).parent


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _own(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module] if node.module and node.module.startswith("polybus_rabbitmq") else []
    return [a.name for a in node.names if a.name.startswith("polybus_rabbitmq")]


def _run_time(statements: list[ast.stmt]) -> list[str]:
    """Own modules imported by module-level ``statements`` (not under ``if TYPE_CHECKING:``)."""
    found: list[str] = []
    for node in statements:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found += _own(node)
        elif isinstance(node, ast.If):
            found += _run_time(node.orelse) if _is_type_checking(node) else _run_time(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            found += _run_time(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                found += _run_time(handler.body)
    return found


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    graph: dict[str, set[str]] = {}
    lazy: list[str] = []
    for path in sorted(PACKAGE.glob("*.py")):
        module = "polybus_rabbitmq" if path.stem == "__init__" else f"polybus_rabbitmq.{path.stem}"
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = set(_run_time(tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        lazy += [f"{module}.{node.name} imports {name}" for name in _own(inner)]
    return graph, lazy


def test_nothing_private_of_the_core_is_imported() -> None:
    private = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            private += [f"{path.name}: {n}" for n in names if n.startswith("polybus._")]
    assert private == []


def test_no_import_inside_a_function() -> None:
    assert _imports()[1] == []


def test_run_time_imports_form_no_cycle() -> None:
    graph, _ = _imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_checker_sees_type_checking_blocks_as_not_run_time() -> None:
    # _topic names RabbitBroker only for annotations; _broker imports _topic at run time
    graph, _ = _imports()
    assert "polybus_rabbitmq._topic" in graph["polybus_rabbitmq._broker"]
    assert "polybus_rabbitmq._broker" not in graph["polybus_rabbitmq._topic"]
