"""The package's shape: no import cycle at module level, one definition of the token hash, no shared/ import."""

from __future__ import annotations

import ast
from pathlib import Path

import longctx

PACKAGE = Path(longctx.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules of longctx imported at module level (imports inside functions are deliberate and lazy)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("longctx"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("longctx"))
    return found


def test_no_import_cycle_at_module_level():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _top_level_imports(p) if m in modules and m != name} for name, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if not state.get(nxt):
                visit(nxt, [*stack, node])
        state[node] = 2

    for name in graph:
        if not state.get(name):
            visit(name, [])


def test_one_token_hash_definition_and_no_reference_imports():
    sources = {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}
    assert [p.name for p, text in sources.items() if "def token_ids_sha256" in text] == ["tokens.py"]
    assert not [p for p, text in sources.items() if "shared/reference" in text or "../shared" in text]
