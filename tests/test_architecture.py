"""The architecture's rules, checked (README "Architecture").

- no import cycle among edgekit modules, counting imports inside functions too;
- imports between edgekit modules sit at module top (only TensorFlow, Keras and LiteRT are
  imported lazily), so the structure is visible;
- no module imports another module's private (``_name``) attributes;
- no hand-written module over 600 lines;
- the layer contract itself is ``lint-imports`` (pyproject ``[tool.importlinter]``), run by .ci/run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgekit"
MAX_LINES = 600
GENERATED: set[str] = set()  # generated modules (e.g. flatc output) are exempt from the line limit


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_no_import_cycles_among_edgekit_modules():
    graph = grimp.build_graph("edgekit", include_external_packages=False)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if module == imported:
                continue
            path = graph.find_shortest_chain(importer=imported, imported=module)
            if path:
                cycles.append(" -> ".join([module, *path]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])


def _lazy_edgekit_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("edgekit"):
                    found.append(f"{_name(path)}:{inner.lineno} from {inner.module}")
                elif isinstance(inner, ast.Import) and any(a.name.startswith("edgekit") for a in inner.names):
                    found.append(f"{_name(path)}:{inner.lineno} import {inner.names[0].name}")
    return found


# The CLI imports its commands' libraries inside the callbacks so `edgekit --help` imports no TensorFlow;
# the runner and the remote probe are standalone scripts copied to devices.
LAZY_ALLOWED = ("edgekit.cli",)


def test_edgekit_imports_sit_at_module_top():
    lazy = [hit for p in _modules() if not _name(p).startswith(LAZY_ALLOWED) for hit in _lazy_edgekit_imports(p)]
    assert not lazy, "edgekit imports inside functions:\n" + "\n".join(lazy)


def test_no_module_imports_private_names_of_another():
    bad = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgekit"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{_name(path)}: from {node.module} import {alias.name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_module_size(path: Path):
    if _name(path) in GENERATED:
        return
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines (at most {MAX_LINES}): split it by what it owns"
