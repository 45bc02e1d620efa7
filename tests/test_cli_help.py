"""Every command's ``--help`` shows its help as written: nothing eaten as markup (``[[bus]]``,
``[billing] due_days``), no docstring line breaks in the middle of a sentence, no RST quoting."""

from __future__ import annotations

import inspect

import pytest
import typer
from typer.core import TyperCommand, TyperGroup
from typer.testing import CliRunner

from headend.cli import app

WIDE = 10_000


def _commands(
    group: TyperGroup, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], TyperCommand | TyperGroup]]:
    """Every command and group under ``group`` with its path of names."""
    found: list[tuple[tuple[str, ...], TyperCommand | TyperGroup]] = [(path, group)]
    context = typer.Context(group)
    for name in sorted(group.list_commands(context)):
        command = group.get_command(context, name)
        assert isinstance(command, TyperCommand | TyperGroup), name
        if isinstance(command, TyperGroup):
            found += _commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


ROOT = typer.main.get_command(app)
assert isinstance(ROOT, TyperGroup)
COMMANDS = _commands(ROOT)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _render(path: tuple[str, ...], width: int) -> list[str]:
    result = CliRunner().invoke(
        app, [*path, "--help"], terminal_width=width, max_content_width=width, prog_name="headend"
    )
    assert result.exit_code == 0, result.output
    return [line.strip() for line in result.output.splitlines()]


def _paragraphs(command: TyperCommand | TyperGroup) -> list[str]:
    """The help the command's author wrote: its docstring (or ``help=``), paragraph by paragraph."""
    callback = command.callback
    source = inspect.getdoc(callback) if callback is not None and callback.__doc__ else command.help
    return [_flat(p).replace("``", "`") for p in inspect.cleandoc(source or "").split("\n\n") if p.strip()]


def test_every_command_is_covered() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"read", "switch", "sim dlt645", "billing bill", "operators token add", "db migrate"} <= names
    # one meter's readings and the export of many live side by side
    assert {"readings", "export readings", "report daily"} <= names
    assert len(COMMANDS) > 60


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "headend" for p, _ in COMMANDS])
def test_help_renders_as_written(path: tuple[str, ...], command: TyperCommand | TyperGroup) -> None:
    lines = _render(path, WIDE)
    # each paragraph of the docstring is one line of help: joined, not broken where the source wrapped
    for paragraph in _paragraphs(command):
        assert paragraph in lines, f"{' '.join(path)}: paragraph not shown as written: {paragraph!r}"
    output = "\n".join(lines)
    # every option's and argument's help is shown whole, brackets included
    for param in command.params:
        text = getattr(param, "help", None)
        if text:
            assert _flat(text) in output, f"{' '.join(path)} {param.name}: help not shown as written"
    assert "``" not in output
    assert "[]" not in output
    assert "(default:  " not in output


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "headend" for p, _ in COMMANDS])
def test_help_fits_an_80_column_terminal(path: tuple[str, ...], command: TyperCommand | TyperGroup) -> None:
    lines = _render(path, 80)
    assert max(len(line) for line in lines) <= 80


def test_markup_like_text_survives() -> None:
    bill = "\n".join(_render(("billing", "bill"), WIDE))
    assert "(default: [billing] due_days)" in bill
    multi = [c for p, c in COMMANDS if p[:1] == ("sim",) and "[[bus]]" in (c.help or "")]
    assert multi, "a sim command documents its [[bus]] tables"
    for path, command in COMMANDS:
        if command in multi:
            assert "[[bus]]" in "\n".join(_render(path, WIDE))
