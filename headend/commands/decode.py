"""``headend decode``: explain a DL/T 645 frame captured by a serial sniffer."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from protocols.dlt645 import DLT645Error, Frame, decode

HEX_SEPARATORS = re.compile(r"[\s:,\-]|0x", re.IGNORECASE)


def parse_hex(text: str) -> bytes:
    """Bytes from a pasted hex dump (spaces, colons, commas, dashes and 0x prefixes allowed)."""
    cleaned = HEX_SEPARATORS.sub("", text)
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits ({len(cleaned)})")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        bad = next(ch for ch in cleaned if ch not in "0123456789abcdefABCDEF")
        raise ValueError(f"not a hex digit: {bad!r}") from None


def _table(frame: Frame) -> Table:
    data: dict[str, Any] = frame.to_json()
    table = Table(title="DL/T 645 frame", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("edition", "address", "function", "direction", "abnormal", "followup", "di", "name"):
        value = data[key]
        table.add_row(key, f"0x{value:02X}" if key == "function" else str(value))
    value = data["value"]
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
    table.add_row("value", shown)
    table.add_row("unit", str(data["unit"]))
    table.add_row("error", ", ".join(data["error"]) if data["error"] else "-")
    for key, item in data["fields"].items():
        table.add_row(key, str(item))
    return table


def decode_command(
    frame_hex: Annotated[
        list[str], typer.Argument(help="Frame bytes in hex; spaces allowed, FE preamble optional.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decode a DL/T 645 frame (2007 or 1997) and print what it means."""
    try:
        frame = decode(parse_hex(" ".join(frame_hex)))
    except (DLT645Error, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps(frame.to_json(), ensure_ascii=False))
    else:
        Console().print(_table(frame))


def register(app: typer.Typer) -> None:
    """Attach ``decode`` to the CLI."""
    app.command("decode")(decode_command)
