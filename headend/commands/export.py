"""``headend export readings``: daily registers (or interval readings) of many meters for a billing /
CIS system, multipliers applied, with quality flags, as CSV or JSON; streamed from a server-side
cursor with progress on stderr, and byte-identical when the same request is repeated.

(``headend readings NAME`` shows one meter; typer cannot give a command with an argument
subcommands as well, so the export is its own group: ``headend export readings``.)"""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TextIO

import asyncpg
import typer

from headend.commands.app import CommandGroup
from headend.commands.common import ConfigPath, Dsn, chosen_config, fail, run_with_conn
from headend.store.export import DAILY_COLUMNS, INTERVAL_COLUMNS, export_meters, quantity_id, stream_export
from headend.store.lineloss import area_exists

export_app = CommandGroup(help="Exports for other systems (billing, CIS).", no_args_is_help=True)
PROGRESS_STEPS = 10  # progress lines per export (and one at the end)


class ExportFormat(StrEnum):
    """How ``headend export readings`` writes its rows."""

    csv = "csv"
    json = "json"


def cell(value: object) -> object:
    """One exported value: kWh rounded to 6 decimals (registers × multipliers carry no more), days and
    times in ISO 8601, None as empty (CSV) or null (JSON)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


class _Writer:
    """Rows to a text stream as CSV or as one JSON array, one object per line."""

    def __init__(self, out: TextIO, style: ExportFormat, columns: tuple[str, ...]) -> None:
        self.out, self.style, self.columns, self.count = out, style, columns, 0
        self._csv = csv.writer(out, lineterminator="\n")

    def start(self) -> None:
        if self.style is ExportFormat.csv:
            self._csv.writerow(self.columns)
        else:
            self.out.write("[")

    def row(self, values: list[object]) -> None:
        if self.style is ExportFormat.csv:
            self._csv.writerow(["" if v is None else v for v in values])
        else:
            item = json.dumps(dict(zip(self.columns, values, strict=True)), ensure_ascii=False)
            self.out.write(("\n" if self.count == 0 else ",\n") + item)
        self.count += 1

    def finish(self) -> None:
        if self.style is ExportFormat.json:
            self.out.write("\n]\n" if self.count else "]\n")
        self.out.flush()


class _Progress:
    """``export: M/N meters, R rows`` on stderr each time another tenth of the meters is done."""

    def __init__(self, total: int) -> None:
        self.total, self.meter, self.shown = total, 0, 0

    def up_to(self, done: int, rows: int) -> None:
        """Meters 1 … ``done`` are written (``rows`` rows so far)."""
        self.meter = done + 1
        step = done * PROGRESS_STEPS // self.total if self.total else PROGRESS_STEPS
        if step > self.shown:
            self.shown = step
            typer.echo(f"export: {done}/{self.total} meters, {rows} rows", err=True)


@export_app.command("readings")
def export_readings(
    start: Annotated[
        datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First day (local, analytics time zone).")
    ],
    end: Annotated[
        datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Up to this day, not including.")
    ],
    intervals: Annotated[
        bool, typer.Option("--intervals", help="Every stored interval reading instead of daily registers.")
    ] = False,
    style: Annotated[ExportFormat, typer.Option("--format", help="csv or json.")] = ExportFormat.csv,
    meters: Annotated[
        list[str] | None,
        typer.Option("--meter", help="Only this meter (name, address or channel/address); repeat."),
    ] = None,
    area: Annotated[str, typer.Option("--area", help="Only this transformer area's meters.")] = "",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    quantity: Annotated[str, typer.Option("--quantity", help="Which register.")] = "energy_import_kwh",
    config: ConfigPath = None,
    dsn: Dsn = None,
) -> None:
    """Each meter's daily registers for the period: the register at each local midnight (its daily
    freeze) and the day's consumption, both multiplied by the meter's CT × PT multiplier, with the
    register's quality and the consumption's (valid, estimated, suspect, or missing when a register
    is absent). ``--intervals``: every stored interval reading instead. Rows in meter then time
    order, so the same request gives the same bytes; progress on stderr."""
    first, after = start.date(), end.date()
    if after <= first:
        fail(f"--to {after} is not after --from {first}", code=2)
    zone = chosen_config(config).analytics.timezone
    last = after - timedelta(days=1)

    async def work(conn: asyncpg.Connection) -> int:
        if area and not await area_exists(conn, area):
            fail(f"no area named {area!r}")
        chosen = await export_meters(conn, first, last, zone, meters, area or None)
        if meters and not chosen:
            fail(f"no meter matches {', '.join(meters)}")
        qid = await quantity_id(conn, quantity)
        if qid is None:
            fail(f"no readings of {quantity!r} are stored")
        columns = INTERVAL_COLUMNS if intervals else DAILY_COLUMNS
        target = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        writer, report = _Writer(target, style, columns), _Progress(len(chosen))
        try:
            writer.start()
            async for row in stream_export(conn, chosen, first, last, zone, qid, intervals=intervals):
                if report.meter != row["n"]:
                    report.up_to(row["n"] - 1, writer.count)
                writer.row([cell(row[c]) for c in columns])
            writer.finish()
        finally:
            if output:
                target.close()
        report.up_to(len(chosen), writer.count)
        return writer.count

    count = run_with_conn(dsn, work)
    typer.echo(f"exported {count} rows", err=True)


def register(app: typer.Typer) -> None:
    """Attach ``headend export``."""
    app.add_typer(export_app, name="export")
