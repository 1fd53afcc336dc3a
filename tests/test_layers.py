"""The layers import one way: agents never imports infra or streams; infra never imports
streams. (infra, the adapters, may import schemas and agents' pure functions.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every module-level or nested import in a package."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module))
    return found


def _offenders(package: str, forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(f, m) for f, m in _imports(package) if m.split(".")[0] in forbidden]


def test_agents_imports_neither_infra_nor_streams():
    assert _offenders("agents", ("infra", "streams")) == []


def test_infra_never_imports_streams():
    assert _offenders("infra", ("streams",)) == []
