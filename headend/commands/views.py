"""Plain-text and JSON output of what the ``show``-style commands read: times with their UTC offset,
money and kWh as stored, no wrapping (the output goes into pipes and files as printed)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal

import typer
from rich.console import Console

PIPE_WIDTH = 1 << 14  # into a pipe or a file: no wrapping, lines as long as they are


def console(*, stderr: bool = False) -> Console:
    """A rich console that wraps at the terminal's width, and never when the output is not a terminal
    (``DSN=$(headend db start)`` gets the DSN on one line)."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)


def text(value: object) -> str:
    """One value as shown: times to the second with their offset, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def jsonable(value: object) -> object:
    """A value for ``json.dumps``: times in ISO 8601 with their offset, decimals as strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def echo_json(data: object) -> None:
    """``data`` as one JSON document."""
    typer.echo(json.dumps(data, default=jsonable, ensure_ascii=False, indent=2))


def echo_fields(fields: Mapping[str, object]) -> None:
    """``key: value`` lines, keys aligned."""
    width = max((len(k) for k in fields), default=0)
    for key, value in fields.items():
        typer.echo(f"{key + ':':<{width + 1}} {text(value)}")


def echo_table(title: str, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> None:
    """A titled table of ``columns``, one line per row, columns padded; ``(none)`` when empty."""
    typer.echo(f"\n{title}:")
    if not rows:
        typer.echo("  (none)")
        return
    cells = [[text(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    typer.echo("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for line in cells:
        typer.echo("  " + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
