"""Layering: the codec knows nothing of the head-end; the simulators nothing of its engine or store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> module prefixes none of its files may import (at any depth, under TYPE_CHECKING too)
FORBIDDEN = {
    "protocols": ("headend", "simulators"),
    "simulators": ("headend.engine", "headend.store", "headend.billing", "headend.control"),
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a Python file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _violations(package: str) -> list[str]:
    prefixes = FORBIDDEN[package]
    return [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module in sorted(imported_modules(path))
        if any(module == p or module.startswith(p + ".") for p in prefixes)
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package: str) -> None:
    assert _violations(package) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from headend.store import writer\n    import headend.engine.jobs\n")
    assert imported_modules(module) == {"headend.store", "headend.engine.jobs"}
