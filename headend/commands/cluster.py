"""``headend cluster status``: the daemons sharing the channels (``[cluster] enabled``), the channels
each holds and the leases about to expire (docs/scaling.md)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import typer

from headend.commands.app import CommandGroup
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.views import echo_json, echo_table
from headend.store.cluster import Lease, Member, leases, members

cluster_app = CommandGroup(help="Daemons sharing the channels through leases (docs/scaling.md).")
MAX_SOON_S = 86400.0


async def _status(conn: asyncpg.Connection) -> tuple[list[Member], list[Lease], datetime]:
    now = await conn.fetchval("SELECT clock_timestamp()")
    return await members(conn), await leases(conn), now


@cluster_app.command("status")
def status(
    soon: Annotated[
        float, typer.Option("--soon", help="Leases expiring within this many seconds are listed.")
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    dsn: Dsn = None,
) -> None:
    """Members (alive or expired) with their channel counts, every channel's lease holder and epoch,
    and the leases about to expire (or expired: their channels wait for a new owner)."""
    if not 0 <= soon <= MAX_SOON_S:
        fail(f"--soon: between 0 and {MAX_SOON_S:g} s, got {soon:g}", code=2)
    found_members, found_leases, now = run_with_conn(dsn, _status)
    now = now.astimezone(UTC)
    live = [lease for lease in found_leases if lease.expires_at > now]
    held = Counter(lease.owner for lease in live)
    expiring = [lease for lease in found_leases if lease.expires_at <= now + timedelta(seconds=soon)]
    member_rows = [
        {
            "member": m.member,
            "host": m.host,
            "pid": m.pid,
            "alive": m.expires_at > now,
            "channels": held.get(m.member, 0),
            "started_at": m.started_at,
            "renewed_at": m.renewed_at,
        }
        for m in found_members
    ]
    lease_rows = [
        {
            "channel": lease.channel,
            "owner": lease.owner,
            "epoch": lease.epoch,
            "taken_at": lease.taken_at,
            "expires_in_s": round((lease.expires_at - now).total_seconds(), 1),
        }
        for lease in found_leases
    ]
    if as_json:
        expiring_names = [lease.channel for lease in expiring]
        echo_json({"members": member_rows, "leases": lease_rows, "expiring": expiring_names})
        return
    if not found_members and not found_leases:
        typer.echo("no cluster members: [cluster] is not enabled on any daemon of this database")
        return
    echo_table("members", ("member", "host", "pid", "alive", "channels", "renewed_at"), member_rows)
    echo_table("leases", ("channel", "owner", "epoch", "expires_in_s"), lease_rows)
    soon_rows = [row for row in lease_rows if row["channel"] in {lease.channel for lease in expiring}]
    echo_table(f"leases expiring within {soon:g} s", ("channel", "owner", "epoch", "expires_in_s"), soon_rows)


def register(app: typer.Typer) -> None:
    """Attach ``headend cluster``."""
    app.add_typer(cluster_app, name="cluster")
