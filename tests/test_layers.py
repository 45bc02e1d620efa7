"""Layering: the codec knows nothing of the head-end; the simulators nothing of its engine or store;
headend's own modules import only downward in the order docs/architecture.md writes down, with no
cycles between its packages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> module prefixes none of its files may import (at any depth, under TYPE_CHECKING too)
FORBIDDEN = {
    "protocols": ("headend", "simulators"),
    "simulators": ("headend.engine", "headend.store", "headend.billing", "headend.control"),
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a Python file imports (``from headend import x`` as ``headend.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "headend":
                found.update(f"headend.{alias.name}" for alias in node.names)
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


# -- headend's own layers ---------------------------------------------------------------------------


def documented_layers() -> list[list[str]]:
    """The layer block of docs/architecture.md, top line first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has a layers block"
    return [line.split() for line in block.group(1).splitlines() if line.strip()]


def unit_of(module: str) -> str | None:
    """The headend module or subpackage ``module`` belongs to (None: not headend's, or its root)."""
    parts = module.split(".")
    if parts[0] != "headend" or len(parts) == 1 or parts[1] == "__version__":
        return None
    return parts[1]


def headend_units() -> set[str]:
    return {
        p.stem if p.is_file() else p.name
        for p in (ROOT / "headend").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }


def import_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> {imported unit: the files that import it}."""
    graph: dict[str, dict[str, list[str]]] = {unit: {} for unit in headend_units()}
    for path in sorted((ROOT / "headend").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if len(relative.parts) == 2 and relative.stem == "__init__":
            continue
        unit = relative.parts[1].removesuffix(".py")
        for module in imported_modules(path):
            target = unit_of(module)
            if target is not None and target != unit:
                graph[unit].setdefault(target, []).append(str(relative))
    return graph


def test_every_headend_package_has_its_layer() -> None:
    layered = [unit for line in documented_layers() for unit in line]
    assert len(layered) == len(set(layered)), "a unit is listed twice"
    assert set(layered) == headend_units()


def test_headend_imports_only_downward() -> None:
    rank = {unit: depth for depth, line in enumerate(documented_layers()) for unit in line}
    upward = [
        f"{path} ({unit}) imports {target}"
        for unit, targets in import_graph().items()
        for target, paths in targets.items()
        for path in paths
        if rank[target] <= rank[unit]
    ]
    assert upward == []


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Import cycles between units (each found once from its first unit in sorted order)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> None:
        for target in sorted(graph.get(unit, {})):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target, [*path, target])
        done.add(unit)

    for unit in sorted(graph):
        if unit not in done:
            visit(unit, [unit])
    return found


def test_no_package_level_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b": ["a.py"]}, "b": {"c": ["b.py"]}, "c": {"a": ["c.py"]}, "d": {}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
