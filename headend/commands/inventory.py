"""``headend inventory import FILE`` and ``headend inventory list``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from headend.inventory import InventoryError, import_inventory, list_inventory, read_inventory
from headend.store.dsn import resolve_dsn

inventory_app = typer.Typer(help="Channels and meters in the database.", no_args_is_help=True)


async def _import(dsn: str, path: Path) -> str:
    inventory = read_inventory(path)
    conn = await asyncpg.connect(dsn)
    try:
        result = await import_inventory(conn, inventory, str(path))
    finally:
        await conn.close()
    return f"imported {result.channels} channel(s) and {result.meters} meter(s) from {path}"


@inventory_app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="Inventory file (.toml or .csv)"),
    dsn: str = typer.Option("", "--dsn", help="Database (default: $HEADEND_DSN or the embedded server)"),
) -> None:
    """Add or update channels and meters from a TOML or CSV file (a running daemon picks them up)."""
    try:
        message = asyncio.run(_import(resolve_dsn(dsn or None), file))
    except InventoryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(message)


async def _list(dsn: str, channel: str | None) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await list_inventory(conn, channel)
    finally:
        await conn.close()


@inventory_app.command("list")
def list_command(
    channel: str = typer.Option("", "--channel", help="Only this channel"),
    as_json: bool = typer.Option(False, "--json", help="One JSON array of meters"),
    dsn: str = typer.Option("", "--dsn", help="Database (default: $HEADEND_DSN or the embedded server)"),
) -> None:
    """Show channels and their meters."""
    rows = asyncio.run(_list(resolve_dsn(dsn or None), channel or None))
    if as_json:
        typer.echo(json.dumps([dict(r) for r in rows]))
        return
    table = Table("channel", "url", "meter", "protocol", "address", "model", "relay", "protected", "enabled")
    for r in rows:
        table.add_row(
            r["channel"],
            r["url"] or "",
            str(r["id"]),
            r["protocol"],
            r["address"],
            r["model"],
            "yes" if r["has_relay"] else "",
            "yes" if r["protected"] else "",
            "yes" if r["enabled"] and r["channel_enabled"] else "no",
        )
    Console().print(table)
    typer.echo(f"{len(rows)} meter(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(inventory_app, name="inventory")
