"""``headend decode``: explain a DL/T 645 or Q/GDW 1376.1 frame captured by a sniffer.

The protocol is detected from the bytes: a 1376.1 frame starts ``68 L L 68`` with the two length
copies equal and a valid protocol id; anything else goes to the DL/T 645 decoder. A DL/T 645 frame
forwarded inside a 1376.1 AFN 10 F1 unit is decoded too and shown underneath.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.table import Table

from headend.commands.views import console
from protocols import gdw1376
from protocols.dlt645 import DLT645Error, Frame, decode, parse_link

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


def _is_dlt645(raw: bytes) -> bool:
    """A valid DL/T 645 frame whose address bytes happen to look like a 1376.1 header
    (e.g. address 686801010101: ``68 01 01 01 01 68 68 68``) and which is no valid 1376.1 frame."""
    try:
        gdw1376.parse_link(raw)
    except gdw1376.GDW1376Error:
        try:
            parse_link(raw)
        except DLT645Error:
            return False
        return True
    return False


def _forwarded(frame: gdw1376.Frame) -> list[dict[str, Any]]:
    """The DL/T 645 frames carried by AFN 10 F1 units, decoded (or the error, if they do not decode)."""
    out: list[dict[str, Any]] = []
    for pn, fn, value in frame.items():
        if isinstance(value, gdw1376.ForwardRequest | gdw1376.ForwardReply) and value.content:
            entry: dict[str, Any] = {"pn": pn, "fn": fn, "port": value.port}
            try:
                entry["dlt645"] = decode(value.content).to_json()
            except DLT645Error as exc:
                entry["error"] = str(exc)
            out.append(entry)
    return out


def _gdw_table(data: dict[str, Any]) -> Table:
    table = Table(title=f"Q/GDW {data['protocol']} frame", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("direction", "prm", "function", "acd", "fcb", "address", "msa", "afn_name", "seq"):
        if key in data:
            table.add_row(key, json.dumps(data[key]) if isinstance(data[key], dict) else str(data[key]))
    for item in data["units"]:
        label = f"p{item['pn']} F{item['fn']}" + (f" {item['name']}" if item["name"] else "")
        table.add_row(label, _shown(item["value"], item["unit"]))
    for key in ("pw", "ec", "tp"):
        if data[key] is not None:
            table.add_row(key, json.dumps(data[key]))
    if data["stopped"] is not None:
        stop = data["stopped"]
        table.add_row(
            "stopped",
            f"unit {stop['unit'] + 1} (p{stop['pn']} {stop['name']}) at byte {stop['offset']}: "
            f"Fn not decoded, {stop['remaining']} bytes left undecoded",
        )
    return table


def _shown(value: Any, unit: str | None) -> str:
    """A unit's value for the table: a curve as its points with their unit, anything else as JSON."""
    if isinstance(value, dict) and value.get("type") == "Curve":
        minutes = gdw1376.DENSITY_MINUTES.get(value["density"])
        every = f"every {minutes} min" if minutes else f"density code {value['density']}"
        points = ", ".join("-" if v is None else f"{v:g}" for v in value["values"])
        return f"from {value['start']} {every}: {points}" + (f" {unit}" if unit else "")
    shown = json.dumps(value, ensure_ascii=False)
    return f"{shown} {unit}" if unit else shown


def _print_gdw(raw: bytes, as_json: bool) -> None:
    frame = gdw1376.decode(raw)
    data = frame.to_json()
    forwarded = _forwarded(frame)
    if as_json:
        data["forwarded"] = forwarded
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    out = console()
    out.print(_gdw_table(data))
    for entry in forwarded:
        if "dlt645" in entry:
            out.print(f"forwarded on port {entry['port']}:")
            out.print(_table(decode(_content(frame, entry["pn"]))))
        else:
            out.print(f"forwarded on port {entry['port']}: not a DL/T 645 frame ({entry['error']})")


def _content(frame: gdw1376.Frame, pn: int) -> bytes:
    for p, _fn, value in frame.items():
        if p == pn and isinstance(value, gdw1376.ForwardRequest | gdw1376.ForwardReply):
            return value.content
    raise KeyError(pn)


def decode_command(
    frame_hex: Annotated[
        list[str], typer.Argument(help="Frame bytes in hex; spaces allowed, FE preamble optional.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Decode a DL/T 645 (2007 or 1997) or Q/GDW 1376.1 frame and print what it means."""
    try:
        raw = parse_hex(" ".join(frame_hex))
        if gdw1376.looks_like_frame(raw) and not _is_dlt645(raw):
            _print_gdw(raw, as_json)
            return
        frame = decode(raw)
    except (DLT645Error, gdw1376.GDW1376Error, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps(frame.to_json(), ensure_ascii=False))
    else:
        console().print(_table(frame))


def register(app: typer.Typer) -> None:
    """Attach ``decode`` to the CLI."""
    app.command("decode")(decode_command)
