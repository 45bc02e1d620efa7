"""Every test runs ``headend`` through tests/support/cli.py (issue 20): one runner, which also puts each
command under the login docs/operations.md names for it. A test module that starts ``headend.cli``
itself (``python -m headend.cli``, ``runpy``, the runner's ``COMMAND``) bypasses both."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
OWN_RUNNER = TESTS / "support"
INSTALLED = TESTS / "packaging"  # runs the installed wheel's ``headend`` script, not the checkout


def _bypasses(tree: ast.AST) -> list[int]:
    """Lines that name the CLI module as text or use the runner's command line directly."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "headend.cli" in node.value:
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "tests.support.cli":
            lines += [node.lineno for alias in node.names if alias.name == "COMMAND"]
        elif isinstance(node, ast.Attribute) and node.attr == "COMMAND":
            lines.append(node.lineno)
    return sorted(lines)


def test_no_test_module_starts_the_cli_itself() -> None:
    found = {}
    for path in sorted(TESTS.rglob("*.py")):
        if OWN_RUNNER in path.parents or INSTALLED in path.parents or path == Path(__file__):
            continue
        lines = _bypasses(ast.parse(path.read_text(), str(path)))
        if lines:
            found[str(path.relative_to(TESTS))] = lines
    assert found == {}, f"use tests/support/cli.py instead: {found}"


def test_the_check_sees_a_module_that_starts_the_cli() -> None:
    source = 'import subprocess, sys\nsubprocess.run([sys.executable, "-m", "headend.cli", "read"])\n'
    assert _bypasses(ast.parse(source)) == [2]
    assert _bypasses(ast.parse("from tests.support.cli import COMMAND\n")) == [1]
    assert _bypasses(ast.parse("from tests.support import cli\ncli.COMMAND\n")) == [2]
