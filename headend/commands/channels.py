"""``headend channels pending`` (identities that dialled in without a channel in the inventory),
``headend channels show NAME`` and ``headend channels trust NAME`` (an admin's grant that the next login
of a dial-in concentrator counts as verified for its archive request only, migration 0051)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Annotated

import asyncpg
import typer
from rich.table import Table

from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.views import console, echo_fields, echo_json, echo_table
from headend.operators import OperatorError
from headend.store.concentrators import channel_of
from headend.store.dialin import PendingRow, list_pending
from headend.store.dsn import resolve_dsn
from headend.store.overview import channel_overview
from headend.store.trusts import MAX_WINDOW, TrustGrant, grant_trust
from headend.transport import ChannelUrlError, parse_channel_url

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
            "timeouts (24 h)": found.fields["timeouts_24h"],
        }
    )
    echo_table("meters", ("name", "protocol", "address", "enabled", "last_read"), found.lists["meter_list"])
    echo_table("cycles", ("cycle_at", "due", "succeeded", "readings", "utilisation"), cycles)
    echo_table("errors", ("occurred_at", "kind", "details"), found.lists["errors"])


@channels_app.command("trust")
def trust_command(
    name: Annotated[str, typer.Argument(help="The dial-in concentrator's channel name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded with the grant and audited).")],
    operator: OperatorId,
    minutes: Annotated[
        int, typer.Option("--minutes", help="How long the grant lasts (1..30): the login must come by then.")
    ] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    dsn: Dsn = None,
) -> None:
    """Trust the next login of a dial-in concentrator for its archive request only (role admin).

    A replacement concentrator arrives with an empty archive, so it fails the archive check and is
    closed, and `concentrator archive push` cannot fix it. Within the window the first login of that
    address whose archive disagrees is kept instead: it may be sent the meter archive (AFN 04 F10) of
    an archive request and nothing else that needs its PW, and its readings stay suspect, until the
    archive reads back as the inventory's and the ordinary check verifies it. Recorded with who and
    why; the daemon records the login that used it (docs/safety.md)."""
    if not reason.strip():
        fail("--reason is required: it is recorded with the grant")
    if not 1 <= minutes <= MAX_WINDOW.total_seconds() // 60:
        fail(f"--minutes must be 1..{MAX_WINDOW.total_seconds() // 60:.0f}")
    me = login(operator)

    async def work(conn: asyncpg.Connection) -> TrustGrant:
        signed_in = await me.sign_in(conn, None)  # the database decides who may trust (admins)
        found = await channel_of(conn, name)
        if found is None:
            fail(f"unknown channel {name!r}")
        try:
            device = parse_channel_url(found[1]).device
        except ChannelUrlError:
            device = None
        if device is None or device[0] != "gdw1376":
            fail(f"channel {name!r} is not a concentrator that dials in (gdw1376://): nothing to trust")
        return await grant_trust(conn, found[0], signed_in.id, reason.strip(), timedelta(minutes=minutes))

    try:
        grant = run_with_conn(dsn, work)
    except (OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    shown = {
        "trust": grant.id,
        "channel": grant.channel,
        "granted_by": grant.granted_by,
        "reason": grant.reason,
        "expires_at": grant.expires_at.isoformat(),
    }
    if as_json:
        echo_json(shown)
        return
    echo_fields(shown)


def register(app: typer.Typer) -> None:
    """Attach ``channels`` to the CLI."""
    app.add_typer(channels_app, name="channels")
