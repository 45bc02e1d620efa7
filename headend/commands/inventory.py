"""``headend inventory import FILE`` and ``headend inventory list``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.table import Table

from headend.areas import area_views, areas_json, areas_toml
from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.views import console
from headend.inventory import (
    ImportResult,
    InventoryError,
    import_inventory,
    list_inventory,
    read_inventory,
)
from headend.operators import OperatorError
from headend.store.audit import audit


class AreaFormat(StrEnum):
    """What ``headend inventory areas`` prints."""

    table = "table"
    json = "json"
    toml = "toml"


inventory_app = CommandGroup(help="Channels and meters in the database.", no_args_is_help=True)


@inventory_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Inventory file (.toml or .csv)")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Add or update channels and meters from a TOML or CSV file (role admin; a running daemon picks
    them up). One audit row names the operator, the file and the counts."""
    try:
        inventory = read_inventory(file)
    except InventoryError as exc:
        fail(str(exc), code=2, prefix="")
    admin = login(operator)  # after reading the file: a typo in it is said before the password is asked

    async def work(conn: asyncpg.Connection) -> ImportResult:
        signed_in = await admin.sign_in(conn, "admin")
        async with conn.transaction():
            result = await import_inventory(conn, inventory, str(file))
            details = {
                "file": file.name,
                "channels": result.channels,
                "meters": result.meters,
                "areas": result.areas,
                "moves": result.moves,
            }
            await audit(
                conn, signed_in.id, "inventory.imported", "inventory", file.name, "inventory import", details
            )
        return result

    try:
        result = run_with_conn(dsn, work)
    except InventoryError as exc:
        fail(str(exc), code=2, prefix="")
    except (OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    areas = f", {result.areas} area(s) ({result.moves} membership change(s))" if result.areas else ""
    typer.echo(f"imported {result.channels} channel(s) and {result.meters} meter(s){areas} from {file}")


@inventory_app.command("list")
def list_command(
    channel: Annotated[str, typer.Option("--channel", help="Only this channel")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of meters")] = False,
    dsn: Dsn = None,
) -> None:
    """Show channels and their meters."""
    rows = run_with_conn(dsn, lambda c: list_inventory(c, channel or None))
    if as_json:
        typer.echo(json.dumps([dict(r) for r in rows]))
        return
    columns = ("name", "channel", "url", "protocol", "address", "meter number", "model", "relay", "protected")
    table = Table(*columns, "enabled")
    for r in rows:
        table.add_row(
            r["name"],
            r["channel"],
            r["url"] or "",
            r["protocol"],
            r["address"],
            r["meter_number"] or "",
            r["model"],
            "yes" if r["has_relay"] else "",
            "yes" if r["protected"] else "",
            "yes" if r["enabled"] and r["channel_enabled"] else "no",
        )
    console().print(table)
    typer.echo(f"{len(rows)} meter(s)")


@inventory_app.command("areas")
def areas_command(
    area: Annotated[str, typer.Option("--area", help="Only this area")] = "",
    at: Annotated[
        datetime | None,
        typer.Option("--at", formats=["%Y-%m-%d"], help="Members on this date (default today UTC)"),
    ] = None,
    output: Annotated[
        AreaFormat, typer.Option("--format", help="table, json, or toml (re-importable [[areas]])")
    ] = AreaFormat.table,
    dsn: Dsn = None,
) -> None:
    """Show transformer areas with their supply meter, ratios, loss limit and customer meters."""
    day = at.date() if at is not None else datetime.now(UTC).date()
    views = run_with_conn(dsn, lambda c: area_views(c, day, area or None))
    if area and not views:
        fail(f"no area named {area!r}")
    if output is AreaFormat.json:
        typer.echo(areas_json(views))
    elif output is AreaFormat.toml:
        typer.echo(areas_toml(views), nl=False)
    else:
        table = Table("area", "supply meter", "CT", "PT", "loss limit %", "customers")
        for v in views:
            table.add_row(
                v.name,
                v.supply_meter,
                f"{v.ct_ratio:g}",
                f"{v.pt_ratio:g}",
                f"{v.loss_limit_pct:g}",
                ", ".join(v.members),
            )
        console().print(table)
        typer.echo(f"{len(views)} area(s) on {day}")


def register(app: typer.Typer) -> None:
    app.add_typer(inventory_app, name="inventory")
