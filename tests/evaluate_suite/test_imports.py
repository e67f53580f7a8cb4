"""evaluate_suite's modules import each other one way: no cycle, counting imports inside functions too (the old
runner -> tasks -> vlm -> runner circle hid behind function-level imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import evaluate_suite

PACKAGE = Path(evaluate_suite.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: evaluate_suite modules it imports anywhere in its body}."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from . import hub` imports the submodule; `from .runner import x` the module `runner`.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name:
                    graph[name].add(target)
    return graph


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_task_registry_imports_neither_runner_nor_vlm():
    graph = import_graph()
    tasks = [m for m in graph if m.startswith("evaluate_suite.tasks")]
    assert tasks
    for module in tasks:
        assert not graph[module] & {"evaluate_suite.runner", "evaluate_suite.vlm", "evaluate_suite.report"}, module
