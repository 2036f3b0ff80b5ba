"""The code's shape: no import circle among the modules of src/pycpilot (lazy imports inside functions count
too; only `if TYPE_CHECKING:` imports, which never run, do not)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """pycpilot modules a module imports anywhere in it, except under `if TYPE_CHECKING:`."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("pycpilot")}


def test_no_import_circles() -> None:
    paths = {_module(p): p for p in SRC.joinpath("pycpilot").rglob("*.py")}
    graph = {name: {m for m in _imports(path, name) if m in paths and m != name} for name, path in paths.items()}
    # A package's own __init__ is loaded before its modules: that edge is not a circle of ours.
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if seen.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            if dep not in seen:
                visit(dep)
        stack.pop()
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name)
