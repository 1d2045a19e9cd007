"""The walls between the parts: no import cycles among first-party modules, no CDK (or the
construct library) in the gateway runtime, no app wiring in the library."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = {"llm_serving": ROOT / "llm_serving", "llm_gateway": ROOT / "lambda" / "llm_gateway"}


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """First-party module → the first-party modules it imports at run time (imports under
    ``if TYPE_CHECKING:`` are left out: they never execute)."""
    modules = {
        _module_name(package, root, path): path
        for package, root in PACKAGES.items()
        for path in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text("utf-8"))
        type_checking = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body
            for node in ast.walk(stmt)
        }
        imported: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in type_checking:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                # ``from pkg import submodule`` imports the submodule; ``from m import name``, m.
                targets = [
                    f"{node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in modules
                    else node.module
                    for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            imported |= {t for t in targets if t in modules and t != name}
        graph[name] = imported
    return graph


def _external_imports(root: Path) -> set[str]:
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
    return found


def test_no_import_cycles() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if node in done:
            return
        for target in sorted(graph[node]):
            # A package's __init__ importing its own submodules is how packages work.
            if not target.startswith(f"{node}."):
                visit(target, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert len(graph) > 40
    assert {"llm_serving.gateway_api", "llm_gateway.contract"} <= graph["llm_serving.gateway"]


def test_the_runtime_imports_no_cdk_and_not_the_library() -> None:
    imported = _external_imports(PACKAGES["llm_gateway"])
    assert not imported & {"aws_cdk", "constructs", "cdk_nag", "jsii", "llm_serving", "stacks"}


def test_the_library_imports_no_app_wiring() -> None:
    imported = _external_imports(PACKAGES["llm_serving"])
    assert not imported & {"stacks", "app", "tests", "local", "bench"}
    assert "llm_gateway" in imported  # the wire contract, from the same distribution


def test_the_library_reaches_the_runtime_only_through_the_contract() -> None:
    crossing = {
        target
        for module, targets in _graph().items()
        if module.startswith("llm_serving")
        for target in targets
        if target.startswith("llm_gateway")
    }
    assert crossing == {"llm_gateway.contract"}
