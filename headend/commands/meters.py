"""``headend meters show NAME``: one meter as an operator asks about it, without SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import asyncpg
import typer

from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.requests import read, recollect
from headend.commands.views import echo_fields, echo_json, echo_table, time_text
from headend.inventory import InventoryError, find_meter
from headend.store.overview import Overview, meter_overview

meters_app = typer.Typer(help="One meter at a time.", no_args_is_help=True)
RELAY_STATE = {"disconnect": "open", "reconnect": "closed"}


@meters_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="The meter's name (or its address, or channel/address).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    dsn: Dsn = None,
) -> None:
    """Channel, account, last successful read and last contact, latest readings with their quality,
    relay state, clock offset, open VEE holds, recent events and commands."""

    async def work(conn: asyncpg.Connection) -> Overview:
        meter_id, _ = await find_meter(conn, name)
        return await meter_overview(conn, meter_id)

    try:
        overview = run_with_conn(dsn, work)
    except InventoryError as exc:
        fail(str(exc))
    meter, lists = overview.fields, overview.lists
    action = meter.pop("last_relay_action")
    meter["relay"] = (
        "none" if not meter["has_relay"] else RELAY_STATE.get(str(action), "unknown (no confirmed command)")
    )
    if as_json:
        echo_json(overview.to_json())
        return
    echo_fields(
        {
            "meter": meter["name"],
            "channel": meter["channel"],
            "protocol": meter["protocol"],
            "address": meter["address"],
            "model": meter["model"],
            "enabled": meter["enabled"],
            "account": meter["account"],
            "last read": meter["last_read"],
            "last contact": meter["last_contact"],
            "clock offset s": meter["clock_offset_s"],
            "relay": meter["relay"],
            "protected": meter["protected_reason"] if meter["protected"] else False,
            "open VEE holds": meter["open_holds"],
            "quarantine": _quarantine(meter),
        }
    )
    latest = [
        {**r, "value": ("closed" if r["value"] else "open")} if r["quantity"] == "relay" else r
        for r in lists["latest"]
    ]  # the relay quantity is stored as 1.0 (closed) / 0.0 (open)
    echo_table("latest readings", ("quantity", "ts", "value", "unit", "quality"), latest)
    echo_table("recent events", ("occurred_at", "category", "kind", "details"), lists["events"])
    echo_table(
        "recent commands",
        ("id", "action", "state", "cause", "operator", "created_at", "last_error"),
        lists["commands"],
    )


def _quarantine(meter: dict[str, object]) -> str:
    """``no``, or until when the daemon skips the meter, after how many failures and the last error."""
    until = meter["quarantined_until"]
    if not isinstance(until, datetime):
        return "no"
    failures, error = meter["quarantine_failures"], meter["quarantine_error"]
    return f"until {time_text(until)} after {failures} failures ({error})"


def register(app: typer.Typer) -> None:
    """Attach ``headend meters`` (``read`` and ``recollect`` are requests to the daemon)."""
    meters_app.command("read")(read)
    meters_app.command("recollect")(recollect)
    app.add_typer(meters_app, name="meters")
