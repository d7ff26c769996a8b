"""The house, checked from the code's own imports and names (ast, nothing is run):

- engine/ is the library: it imports neither storage nor the applications above it, but for the
  `python -m engine` shim and the one documented recorder hook of the offline LLM;
- no import circles among the project's modules (module-level imports, the way Python loads them);
- no module reaches into another object's private attributes (`x._name` where x is not self/cls).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "storage", "cli", "sessions", "whatif", "serving", "tune", "dashboard", "views")
APPLICATIONS = ("storage", "cli", "sessions", "whatif", "serving", "tune", "dashboard", "views", "app")
# (module, what it may import from above the library, why)
ENGINE_EXCEPTIONS = {
    ("engine.__main__", "cli.main"),  # `python -m engine` keeps working
    ("engine.llm", "storage.database"),  # LLM(record=True): the one lazy recorder hook
    ("engine.llm", "storage.recorder"),
}
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_SubParsersAction", "_ArgumentGroup"}  # stdlib API
# torch's registered oneDNN ops that its own compiler emits for CPU linears: one module wraps them.
TORCH_OPS = {"_linear_pointwise": "engine/executors/packed_linear.py",
             "_reorder_linear_weight": "engine/executors/packed_linear.py"}


def _modules() -> dict[str, Path]:
    found = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path, module_level_only: bool) -> list[str]:
    """Modules imported by a file (absolute names); optionally only those run at import time
    (not inside functions or `if TYPE_CHECKING:` blocks)."""
    tree = ast.parse(path.read_text())
    names: list[str] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not module_level_only:
                    visit(child, False)
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                if not module_level_only:
                    visit(child, top)
                continue
            if isinstance(child, ast.Import):
                names.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names.append(child.module)
                names.extend(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child, top)

    visit(tree, True)
    return [n for n in names if n.split(".")[0] in {m.split(".")[0] for m in MODULES}]


def _project_module(name: str) -> str | None:
    """The project module an import name refers to (a name imported from a module maps to it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_the_library_imports_no_storage_and_no_application() -> None:
    offending = []
    for module, path in MODULES.items():
        if not module.startswith("engine"):
            continue
        for imported in _imports(path, module_level_only=False):
            target = _project_module(imported)
            if target and target.split(".")[0] in APPLICATIONS and (module, target) not in ENGINE_EXCEPTIONS:
                offending.append(f"{module} imports {target}")
    assert offending == []


def test_there_are_no_import_circles() -> None:
    graph = {m: {t for i in _imports(p, module_level_only=True) if (t := _project_module(i)) and t != m}
             for m, p in MODULES.items()}
    # A package's own __init__ is loaded before its submodules; an import of a package is an edge to it.
    seen: dict[str, int] = {}  # 1 on the current path, 2 done
    circles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                circles.append([*path[path.index(nxt):], nxt])
            elif nxt not in seen:
                walk(nxt, [*path, nxt])
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            walk(module, [module])
    assert circles == []


@pytest.mark.parametrize("package", [*PACKAGES, "app"])
def test_no_module_reaches_into_private_attributes(package: str) -> None:
    offending = []
    for module, path in MODULES.items():
        if module.split(".")[0] != package:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and node.attr not in PUBLIC_UNDERSCORED
                    and TORCH_OPS.get(node.attr) != str(path.relative_to(ROOT))
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offending.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offending == []


def test_only_the_command_line_imports_the_command_line() -> None:
    """cli/ parses flags and prints; what it runs (sessions, whatif, serving, tune, storage, the
    dashboard) takes plain values, so none of it imports cli back (`python -m engine` is the shim)."""
    offending = []
    for module, path in MODULES.items():
        if module.split(".")[0] in ("cli",) or module == "engine.__main__":
            continue
        for imported in _imports(path, module_level_only=False):
            target = _project_module(imported)
            if target and target.split(".")[0] == "cli":
                offending.append(f"{module} imports {target}")
    assert offending == []


def test_pages_know_only_the_dashboard_helpers() -> None:
    """A page is widgets and layout: its data, charts and command lines come from dashboard/; from
    storage it may name the error types it reports."""
    ours = {m.split(".")[0] for m in MODULES}
    offending = []
    for module, path in MODULES.items():
        if module.split(".")[0] not in ("views", "app"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [(alias.name, "") for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [(node.module, alias.name) for alias in node.names]
            else:
                continue
            for source, name in found:
                top = source.split(".")[0]
                if top not in ours or top in ("dashboard", "views"):
                    continue
                if source == "storage.database" and name.endswith("Error"):
                    continue
                offending.append(f"{module} imports {source}{'.' + name if name else ''}")
    assert offending == []
