"""The one kind of typer application every command group uses: help shown as written.

Help texts are plain text, never rich markup (``[[bus]]`` and ``[billing] due_days`` stay as
written), and a docstring's hard-wrapped lines are joined into paragraphs that the terminal wraps.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import typer

CommandFunction = TypeVar("CommandFunction", bound=Callable[..., Any])


def as_written(docstring: str) -> str:
    """``docstring`` as help: paragraphs (blank-line separated) with their line breaks joined,
    list items (``- ``) kept on lines of their own, ````code```` shown as ```code```."""
    paragraphs = []
    for paragraph in inspect.cleandoc(docstring).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith("- "):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs).replace("``", "`")


class CommandGroup(typer.Typer):
    """A ``typer.Typer`` whose commands' help is plain text with paragraphs as written."""

    def __init__(self, *, help: str | None = None, **settings: Any) -> None:
        settings.setdefault("rich_markup_mode", None)
        super().__init__(help=as_written(help) if help else None, **settings)

    def command(
        self, name: str | None = None, *, help: str | None = None, **settings: Any
    ) -> Callable[[CommandFunction], CommandFunction]:
        """Register a command; its help is ``help`` or the function's docstring, as written."""

        def register(function: CommandFunction) -> CommandFunction:
            text = help if help is not None else inspect.getdoc(function)
            decorator = super(CommandGroup, self).command(
                name, help=as_written(text) if text else None, **settings
            )
            return decorator(function)

        return register
