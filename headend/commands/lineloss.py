"""``headend lineloss``: line loss per transformer area for a day or a month (computed in SQL)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from headend.analytics.lineloss import AreaLoss, daily, monthly
from headend.commands.common import ConfigPath, Dsn, chosen_config, fail, run_with_conn
from headend.store.lineloss import area_exists

FIELDS = ("area", "period", "supply_kwh", "customers_kwh", "loss_kwh", "loss_pct", "complete", "missing")


class LossFormat(StrEnum):
    """What ``headend lineloss`` prints."""

    table = "table"
    csv = "csv"
    json = "json"


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _render(losses: list[AreaLoss], output: LossFormat) -> str:
    if output is LossFormat.json:
        return json.dumps(
            [{**asdict(loss), "complete": loss.complete} for loss in losses], ensure_ascii=False
        )
    if output is LossFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(FIELDS)
        for loss in losses:
            writer.writerow(
                [
                    loss.area,
                    loss.period,
                    _number(loss.supply_kwh),
                    _number(loss.customers_kwh),
                    _number(loss.loss_kwh),
                    _number(loss.loss_pct, 2),
                    "yes" if loss.complete else "no",
                    " ".join(loss.missing),
                ]
            )
        return buffer.getvalue()
    table = Table("area", "period", "supply kWh", "customers kWh", "loss kWh", "loss %", "missing")
    for loss in losses:
        missing = "" if loss.complete else "incomplete: " + ", ".join(loss.missing)
        table.add_row(
            loss.area,
            loss.period,
            _number(loss.supply_kwh),
            _number(loss.customers_kwh),
            _number(loss.loss_kwh),
            _number(loss.loss_pct, 2),
            missing,
        )
    buffer = io.StringIO()
    Console(file=buffer, width=160).print(table)
    out = buffer.getvalue()
    complete = sum(1 for loss in losses if loss.complete)
    return f"{out}{complete} of {len(losses)} area(s) complete\n"


def lineloss_command(
    day: Annotated[
        datetime | None,
        typer.Option(
            "--date", formats=["%Y-%m-%d"], help="The day (default: yesterday, analytics time zone)"
        ),
    ] = None,
    month: Annotated[
        datetime | None, typer.Option("--month", formats=["%Y-%m"], help="A whole month instead of a day")
    ] = None,
    area: Annotated[str, typer.Option("--area", help="Only this transformer area")] = "",
    output: Annotated[LossFormat, typer.Option("--format", help="table, csv or json")] = LossFormat.table,
    config: ConfigPath = None,
    dsn: Dsn = None,
) -> None:
    """Line loss per transformer area: supply − Σ customers from the midnight freezes, loss rate in %.
    An area is computed only when every meter has both freezes; otherwise it is listed incomplete
    with the missing meters (a month: the days not complete)."""
    if day is not None and month is not None:
        fail("give --date or --month, not both", code=2)
    zone = chosen_config(config).analytics.zone
    today = datetime.now(UTC).astimezone(zone).date()

    async def work(conn: asyncpg.Connection) -> list[AreaLoss]:
        if area and not await area_exists(conn, area):
            fail(f"no area named {area!r}")
        if month is not None:
            return await monthly(conn, month.date(), zone, today, area or None)
        return await daily(conn, day.date() if day else today - timedelta(days=1), zone, area or None)

    typer.echo(_render(run_with_conn(dsn, work), output), nl=False)


def register(app: typer.Typer) -> None:
    app.command("lineloss")(lineloss_command)
