"""``headend channels pending`` (identities that dialled in without a channel in the inventory) and
``headend channels show NAME``."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import asyncpg
import typer
from rich.table import Table

from headend.commands.app import CommandGroup
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.views import console, echo_fields, echo_json, echo_table
from headend.store.dialin import PendingRow, list_pending
from headend.store.dsn import resolve_dsn
from headend.store.overview import channel_overview

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
    console().print(table)
    typer.echo(f"{len(rows)} pending identit{'y' if len(rows) == 1 else 'ies'}")


@channels_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="The channel's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    dsn: Dsn = None,
) -> None:
    """One channel: its URL, meters (last successful read of each), last contact, the success and
    utilisation of its last complete read cycles, and its recent communication events."""
    found = run_with_conn(dsn, lambda c: channel_overview(c, name))
    if found is None:
        fail(f"unknown channel {name!r}")
    if as_json:
        echo_json(found.to_json())
        return
    cycles = found.lists["cycles"]
    due = sum(int(str(c["due"])) for c in cycles)
    succeeded = sum(int(str(c["succeeded"])) for c in cycles)
    echo_fields(
        {
            "channel": found.fields["name"],
            "url": found.fields["url"],
            "enabled": found.fields["enabled"],
            "meters": found.fields["meters"],
            "last contact": found.fields["last_contact"],
            f"success (last {len(cycles)} cycles)": f"{succeeded}/{due}" if due else None,
            "utilisation (last cycle)": cycles[0]["utilisation"] if cycles else None,
        }
    )
    echo_table("meters", ("name", "protocol", "address", "enabled", "last_read"), found.lists["meter_list"])
    echo_table("cycles", ("cycle_at", "due", "succeeded", "readings", "utilisation"), cycles)
    echo_table("errors", ("occurred_at", "kind", "details"), found.lists["errors"])


def register(app: typer.Typer) -> None:
    """Attach ``channels`` to the CLI."""
    app.add_typer(channels_app, name="channels")
