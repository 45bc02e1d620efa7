"""``headend readings NAME --from --to``: a meter's interval readings or daily consumption with their
quality, as a table, CSV or JSON, streamed (a year of 15-minute readings never sits in memory)."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from typing import Annotated

import asyncpg
import typer

from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.timerange import TimeRangeError, time_range
from headend.commands.views import jsonable, text
from headend.inventory import InventoryError, find_meter
from headend.store.series import stream_readings


class Interval(StrEnum):
    """What one row is: a stored interval reading, or a local day."""

    interval = "15m"
    day = "1d"


class Format(StrEnum):
    """How the rows are printed."""

    table = "table"
    csv = "csv"
    json = "json"


class _Printer:
    """Rows to stdout as they arrive, in one of the formats."""

    def __init__(self, style: Format, columns: tuple[str, ...]) -> None:
        self.style, self.columns, self.count = style, columns, 0
        self._csv = csv.writer(sys.stdout, lineterminator="\n")

    def start(self) -> None:
        if self.style is Format.csv:
            self._csv.writerow(self.columns)
        elif self.style is Format.table:
            typer.echo("  ".join(f"{c:<25}" if i == 0 else f"{c:>14}" for i, c in enumerate(self.columns)))
        else:
            sys.stdout.write("[")

    def row(self, values: tuple[object, ...]) -> None:
        if self.style is Format.csv:
            self._csv.writerow(["" if v is None else text(v) for v in values])
        elif self.style is Format.table:
            cells = [text(v) for v in values]
            typer.echo("  ".join(f"{c:<25}" if i == 0 else f"{c:>14}" for i, c in enumerate(cells)).rstrip())
        else:
            item = json.dumps(dict(zip(self.columns, values, strict=True)), default=jsonable)
            sys.stdout.write(("\n" if self.count == 0 else ",\n") + item)
        self.count += 1

    def finish(self) -> None:
        if self.style is Format.json:
            sys.stdout.write("\n]\n" if self.count else "]\n")
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Attach ``headend readings``."""

    @app.command("readings")
    def readings(
        name: Annotated[str, typer.Argument(help="The meter's name (or address, or channel/address).")],
        start: Annotated[str, typer.Option("--from", help="From (a date: local midnight; or a time).")],
        end: Annotated[str, typer.Option("--to", help="Up to, not including.")],
        interval: Annotated[
            Interval, typer.Option("--interval", help="15m: every stored reading; 1d: per local day.")
        ] = Interval.interval,
        style: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
        quantity: Annotated[str, typer.Option("--quantity", help="Which register.")] = "energy_import_kwh",
        zone: Annotated[
            str, typer.Option("--timezone", help="Local time of dates and days.")
        ] = "Asia/Shanghai",
        dsn: Dsn = None,
    ) -> None:
        """A meter's readings of one quantity with their consumption and quality."""
        try:
            first, last, tz = time_range(start, end, zone)
        except TimeRangeError as exc:
            fail(str(exc))
        daily = interval is Interval.day
        printer = _Printer(style, ("day" if daily else "ts", "value", "consumption", "quality"))

        async def work(conn: asyncpg.Connection) -> None:
            meter_id, _ = await find_meter(conn, name)
            printer.start()
            rows = stream_readings(conn, meter_id, quantity, first, last, daily_in=zone if daily else None)
            async for row in rows:
                at = row["day"] if daily else row["ts"].astimezone(tz)
                printer.row((at, row["value"], row["consumption"], row["quality"]))
            printer.finish()

        try:
            run_with_conn(dsn, work)
        except InventoryError as exc:
            fail(str(exc))
