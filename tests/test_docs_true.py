"""README.md and docs/*.md name only what exists: module paths, files, commands and their options,
links inside the repository; and they state the PostgreSQL version the project needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.core import TyperCommand, TyperGroup

from headend.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI = typer.main.get_command(app)
PATH = re.compile(r"`((?:headend|protocols|simulators|tests|bench|docs|\.ci)/[A-Za-z0-9_./-]*)`")
DOTTED = re.compile(r"`((?:headend|protocols|simulators)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")
COMMAND = re.compile(r"`headend ([a-z][^`\n]*)`")
FENCED = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _spans(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return [(doc.name, match) for doc in DOCS for match in pattern.findall(doc.read_text())]


def _command_lines() -> list[tuple[str, str]]:
    """``headend ...`` in backticks, and the lines of fenced blocks that run it (comments cut)."""
    found = [(doc, text.replace("\\|", "|")) for doc, text in _spans(COMMAND)]
    for doc in DOCS:
        for block in FENCED.findall(doc.read_text()):
            for line in block.splitlines():
                line = line.strip().removeprefix("$ ").split("  #")[0].split(" # ")[0]
                if line.startswith("headend "):
                    found.append((doc.name, line.removeprefix("headend ").split(" && ")[0]))
    return found


def _module_file(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def dotted_exists(name: str) -> bool:
    """``a.b.c``: the longest module prefix exists and names what follows (one attribute at most)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = _module_file(parts[:cut])
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        return len(rest) == 1 and re.search(rf"\b{re.escape(rest[0])}\b", module.read_text()) is not None
    return False


def command_exists(text: str) -> str | None:
    """None if ``headend TEXT`` names a command and options it has, else what is missing."""
    words = text.split()
    alternatives = [[]]  # type: list[list[str]]
    for word in words:
        if "|" in word and not word.startswith("-"):
            alternatives = [[*a, w] for a in alternatives for w in word.split("|")]
        else:
            alternatives = [[*a, word] for a in alternatives]
    for line in alternatives:
        command: TyperCommand | TyperGroup = CLI  # type: ignore[assignment]
        options: set[str] = set()
        for word in line:
            options |= {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if isinstance(command, TyperGroup) and word in command.list_commands(typer.Context(command)):
                command = command.get_command(typer.Context(command), word)  # type: ignore[assignment]
                continue
            if isinstance(command, TyperGroup) and not word.startswith("-"):
                return f"no command {word!r} in `headend {' '.join(line)}`"
            break
        options |= {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for word in line:
            option = word.split("=", 1)[0]
            if option.startswith("--") and option not in options:
                return f"no option {option} in `headend {' '.join(line)}`"
    return None


@pytest.mark.parametrize(("doc", "path"), _spans(PATH))
def test_named_paths_exist(doc: str, path: str) -> None:
    if "*" in path or "NNNN" in path:
        pytest.fail(f"{doc}: use a real path, not a pattern: {path}")
    assert (ROOT / path.rstrip("/")).exists(), f"{doc} names {path}, which does not exist"


@pytest.mark.parametrize(("doc", "name"), _spans(DOTTED))
def test_named_modules_exist(doc: str, name: str) -> None:
    assert dotted_exists(name), f"{doc} names {name}, which does not exist"


@pytest.mark.parametrize(("doc", "text"), _command_lines())
def test_named_commands_and_options_exist(doc: str, text: str) -> None:
    assert command_exists(text) is None, f"{doc}: {command_exists(text)}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_links_stay_inside_the_repository_and_resolve(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert resolved.exists(), f"{doc.name} links to {target}, which does not exist"
    assert "../shared" not in doc.read_text()


def test_the_checks_catch_what_is_gone() -> None:
    assert not dotted_exists("headend.transport.no_such_module")
    assert not dotted_exists("headend.engine.clock.no_such_name")
    assert dotted_exists("headend.engine.clock.ClockPolicy")
    assert command_exists("billing holds|resolve") is None
    assert command_exists("billing bill --operator ID") is None
    assert command_exists("billing bill --no-such-option") is not None
    assert command_exists("billing no-such-command") is not None


def test_the_postgresql_version_is_the_one_contributing_states() -> None:
    needed = re.search(
        r"PostgreSQL server binaries \((\d+) or later\)", (ROOT / "CONTRIBUTING.md").read_text()
    )
    assert needed
    readme = (ROOT / "README.md").read_text()
    stated = re.search(r"PostgreSQL server binaries.*?version (\d+) or later", readme, re.S)
    assert stated and stated.group(1) == needed.group(1)
