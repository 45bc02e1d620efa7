"""``headend channels pending``: identities that dialled in without a channel in the inventory."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from headend.commands.app import CommandGroup
from headend.store.dialin import PendingRow, list_pending
from headend.store.dsn import resolve_dsn

channels_app = CommandGroup(help="Channels as the daemon sees them.", no_args_is_help=True)


async def _pending(dsn: str) -> list[PendingRow]:
    conn = await asyncpg.connect(dsn)
    try:
        return await list_pending(conn)
    finally:
        await conn.close()


def _status(row: PendingRow) -> str:
    if row.conflicts:
        return "conflict"
    return "held" if row.held else "refused"


@channels_app.command("pending")
def pending_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    dsn: Annotated[
        str, typer.Option("--dsn", help="Database (default: $HEADEND_DSN or the embedded server)")
    ] = "",
) -> None:
    """Devices that dialled in with an identity no channel has (adopt one: add a dtu://ID channel),
    and conflicts: connections that claimed a device while it was connected (an impostor, or the
    device redialling over a lingering connection)."""
    try:
        rows = asyncio.run(_pending(resolve_dsn(dsn or None)))
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"error: cannot read pending identities: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "identity": r.identity,
                        "kind": r.kind,
                        "listener": r.listener,
                        "peer": r.peer,
                        "first_seen": r.first_seen.isoformat(),
                        "last_seen": r.last_seen.isoformat(),
                        "attempts": r.attempts,
                        "status": _status(r),
                        "conflicts": r.conflicts,
                    }
                    for r in rows
                ]
            )
        )
        return
    columns = ("identity", "kind", "listener", "last peer", "first seen", "last seen", "attempts", "status")
    table = Table(*columns)
    for r in rows:
        table.add_row(
            r.identity,
            r.kind,
            r.listener,
            r.peer,
            r.first_seen.isoformat(timespec="seconds"),
            r.last_seen.isoformat(timespec="seconds"),
            str(r.attempts),
            _status(r),
        )
    Console().print(table)
    typer.echo(f"{len(rows)} pending identit{'y' if len(rows) == 1 else 'ies'}")


def register(app: typer.Typer) -> None:
    """Attach ``channels`` to the CLI."""
    app.add_typer(channels_app, name="channels")
