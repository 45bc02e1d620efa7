"""``headend export readings``: daily registers (or interval readings) of many meters for a billing /
CIS system, multipliers applied, with quality flags, as CSV or JSON; streamed (the daily CSV formatted
by the server and copied out, the rest from one server-side cursor) with progress on stderr, and
byte-identical when the same request is repeated.

(``headend readings NAME`` shows one meter; typer cannot give a command with an argument
subcommands as well, so the export is its own group: ``headend export readings``.)"""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, BinaryIO, TextIO

import asyncpg
import typer

from headend.analytics.export import DAILY_COLUMNS, INTERVAL_COLUMNS, Row, daily_rows, interval_rows
from headend.commands.app import CommandGroup
from headend.commands.common import ConfigPath, Dsn, chosen_config, fail, run_with_conn
from headend.store.export import copy_daily_csv, count_meters, export_meters, quantity_id
from headend.store.lineloss import area_exists

export_app = CommandGroup(help="Exports for other systems (billing, CIS).", no_args_is_help=True)
PROGRESS_STEPS = 10  # progress lines per export (and one at the end)


class ExportFormat(StrEnum):
    """How ``headend export readings`` writes its rows."""

    csv = "csv"
    json = "json"


def _plain(value: object) -> object:
    """Days and times in ISO 8601; everything else as it is."""
    return value.isoformat() if isinstance(value, date | datetime) else value


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

    def row(self, values: Row) -> None:
        if self.style is ExportFormat.csv:
            self._csv.writerow(values)  # None is written as an empty field
        else:
            item = json.dumps(dict(zip(self.columns, map(_plain, values), strict=True)), ensure_ascii=False)
            self.out.write(("\n" if self.count == 0 else ",\n") + item)
        self.count += 1

    def finish(self) -> None:
        if self.style is ExportFormat.json:
            self.out.write("\n]\n" if self.count else "]\n")
        self.out.flush()


class _Progress:
    """``export: P% (R rows)`` on stderr each time another tenth of the work is done."""

    def __init__(self, total: int) -> None:
        self.total, self.shown = total, 0

    def __call__(self, done: int, rows: int) -> None:
        """``done`` of ``total`` units (meters or rows) are written, ``rows`` rows so far."""
        step = done * PROGRESS_STEPS // self.total if self.total else PROGRESS_STEPS
        if step > self.shown:
            self.shown = step
            typer.echo(f"export: {step * 100 // PROGRESS_STEPS}% ({rows} rows)", err=True)


class _CopySink:
    """COPY's CSV chunks to a binary stream, counting rows (lines after the header) for progress."""

    def __init__(self, out: BinaryIO, progress: _Progress) -> None:
        self.out, self.progress, self.lines = out, progress, 0

    async def __call__(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self.lines += chunk.count(b"\n")
        self.progress(self.rows, self.rows)

    @property
    def rows(self) -> int:
        return max(self.lines - 1, 0)


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
        typer.Option(
            "--meter", metavar="NAME", help="Only this meter (name, address or channel/address); repeat."
        ),
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
    freeze) and the day's consumption, both multiplied by the meter's CT × PT multiplier (an area's
    supply meter: the area's CT and PT ratios), with the register's quality and the consumption's
    (valid, estimated, suspect, or missing when a register is absent). ``--intervals``: every stored
    interval reading instead. Rows in meter then time order, so the same request gives the same
    bytes; progress on stderr."""
    first, after = start.date(), end.date()
    if after <= first:
        fail(f"--to {after} is not after --from {first}", code=2)
    zone = chosen_config(config).analytics.zone
    last = after - timedelta(days=1)

    async def work(conn: asyncpg.Connection) -> int:
        if area and not await area_exists(conn, area):
            fail(f"no area named {area!r}")
        chosen = await count_meters(conn, first, last, str(zone), meters, area or None)
        if meters and not chosen:
            fail(f"no meter matches {', '.join(meters)}")
        qid = await quantity_id(conn, quantity)
        if qid is None:
            fail(f"no readings of {quantity!r} are stored")
        if style is ExportFormat.csv and not intervals:
            return await _copy_csv(conn, chosen, qid)
        listed = await export_meters(conn, first, last, str(zone), meters, area or None)
        columns = INTERVAL_COLUMNS if intervals else DAILY_COLUMNS
        target = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        writer = _Writer(target, style, columns)
        progress = _Progress(len(listed))
        rows = (interval_rows if intervals else daily_rows)(
            conn, listed, qid, first, last, zone, lambda done: progress(done, writer.count)
        )
        try:
            writer.start()
            async for row in rows:
                writer.row(row)
            writer.finish()
        finally:
            if output:
                target.close()
        return writer.count

    async def _copy_csv(conn: asyncpg.Connection, chosen: int, qid: int) -> int:
        """The daily CSV formatted by the server and copied out as it comes."""
        target = output.open("wb") if output else sys.stdout.buffer
        sink = _CopySink(target, _Progress(chosen * ((last - first).days + 1)))
        try:
            await copy_daily_csv(conn, first, last, str(zone), meters, area or None, qid, sink)
            target.flush()
        finally:
            if output:
                target.close()
        return sink.rows

    count = run_with_conn(dsn, work)
    typer.echo(f"exported {count} rows", err=True)


def register(app: typer.Typer) -> None:
    """Attach ``headend export``."""
    app.add_typer(export_app, name="export")
