"""``headend report daily``: one local day of collection as the operations desk reviews it each
morning: collection success per channel (a concentrator is a channel of kind gdw1376) and per area,
the meters that missed the day's freeze (漏抄) with the reason, re-collection results, line loss per
area, exceptions opened and closed, and fee-control actions, each section computed in SQL
(headend.store.daily_report)."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

import asyncpg
import typer

from headend.analytics.lineloss import boundaries, refresh
from headend.commands.app import CommandGroup
from headend.commands.common import ConfigPath, Dsn, chosen_config, run_with_conn
from headend.commands.views import echo_table, jsonable
from headend.store.daily_report import COLUMNS, SECTIONS, report_sections

report_app = CommandGroup(help="Reports over what the daemon stored.", no_args_is_help=True)
TITLES = {
    "channels": "Collection per channel",
    "areas": "Collection and line loss per area",
    "missed": "Meters without the day's freeze (漏抄)",
    "backfill": "Re-collection (补抄) of the day's intervals",
    "exceptions": "Exceptions per rule (opened, closed, active at the day's end)",
    "fee_control": "Fee-control actions",
}


class ReportFormat(StrEnum):
    """How ``headend report daily`` prints."""

    table = "table"
    csv = "csv"
    json = "json"


def _plain(value: object) -> object:
    """A value as CSV and JSON carry it: numbers as numbers, times in ISO 8601, None as is."""
    if isinstance(value, Decimal):
        return float(value)
    return jsonable(value) if isinstance(value, datetime) else value


@report_app.command("daily")
def daily(
    day: Annotated[
        datetime | None,
        typer.Option(
            "--date", formats=["%Y-%m-%d"], help="The day (default: yesterday, analytics time zone)."
        ),
    ] = None,
    output: Annotated[
        ReportFormat, typer.Option("--format", help="table, csv or json.")
    ] = ReportFormat.table,
    config: ConfigPath = None,
    dsn: Dsn = None,
) -> None:
    """One day's collection report: success per channel and per area, the meters that missed the
    day's freeze (the register at the midnight that closes the day) with the reason, the day's
    intervals recovered or given up by backfill, line loss per area (refreshed first), exceptions
    opened, resolved and closed automatically per rule, and the fee-control commands and refusals
    of the day."""
    zone = chosen_config(config).analytics.zone
    chosen = day.date() if day else datetime.now(UTC).astimezone(zone).date() - timedelta(days=1)
    lo, hi = boundaries(chosen, zone)

    async def work(conn: asyncpg.Connection) -> dict[str, list[asyncpg.Record]]:
        await refresh(conn, [chosen], zone)
        return await report_sections(conn, chosen, lo, hi)

    sections = run_with_conn(dsn, work)
    plain = {name: [{c: _plain(r[c]) for c in COLUMNS[name]} for r in sections[name]] for name in SECTIONS}
    if output is ReportFormat.json:
        document = {"date": chosen.isoformat(), "timezone": str(zone), **plain}
        typer.echo(json.dumps(document, ensure_ascii=False, indent=2))
        return
    if output is ReportFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        for index, name in enumerate(SECTIONS):
            if index:
                sys.stdout.write("\n")
            sys.stdout.write(f"# {name}\n")
            writer.writerow(COLUMNS[name])
            for item in plain[name]:
                writer.writerow(["" if v is None else v for v in item.values()])
        return
    typer.echo(f"Daily report {chosen.isoformat()} ({zone})")
    for name in SECTIONS:
        echo_table(TITLES[name], COLUMNS[name], [dict(r) for r in sections[name]])


def register(app: typer.Typer) -> None:
    """Attach ``headend report``."""
    app.add_typer(report_app, name="report")
