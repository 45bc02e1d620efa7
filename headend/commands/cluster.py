"""``headend cluster status``: the daemons sharing the channels (``[cluster] enabled``), the channels
and meters each holds, which one runs the once-only services, the leases about to expire and the
lease moves of the last hour (docs/scaling.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import typer

from headend.commands.app import CommandGroup
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.views import echo_json, echo_table
from headend.store.cluster import (
    Lease,
    Member,
    Move,
    leases,
    members,
    meters_held,
    moves_since,
    services_lease,
)

cluster_app = CommandGroup(help="Daemons sharing the channels through leases (docs/scaling.md).")
MAX_SOON_S = 86400.0
MOVES_WITHIN_S = 3600.0


@dataclass(frozen=True, slots=True)
class _Status:
    members: list[Member]
    leases: list[Lease]
    meters: dict[str, int]
    moves: list[Move]
    services: tuple[str, int, datetime] | None
    now: datetime


async def _status(conn: asyncpg.Connection) -> _Status:
    now = await conn.fetchval("SELECT clock_timestamp()")
    return _Status(
        await members(conn),
        await leases(conn),
        await meters_held(conn),
        await moves_since(conn, MOVES_WITHIN_S),
        await services_lease(conn),
        now,
    )


@cluster_app.command("status")
def status(
    soon: Annotated[
        float, typer.Option("--soon", help="Leases expiring within this many seconds are listed.")
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    dsn: Dsn = None,
) -> None:
    """Members (alive or expired) with their load (channels and meters held, moves in and out in the
    last hour) and which one runs the once-only services, every channel's lease holder and epoch, the
    leases about to expire (or expired: their channels wait for a new owner) and the lease moves of
    the last hour."""
    if not 0 <= soon <= MAX_SOON_S:
        fail(f"--soon: between 0 and {MAX_SOON_S:g} s, got {soon:g}", code=2)
    found = run_with_conn(dsn, _status)
    found_members, found_leases = found.members, found.leases
    now = found.now.astimezone(UTC)
    live = [lease for lease in found_leases if lease.expires_at > now]
    held = Counter(lease.owner for lease in live)
    moved_in = Counter(m.to_owner for m in found.moves if m.from_owner not in (None, m.to_owner))
    moved_out = Counter(m.from_owner for m in found.moves if m.from_owner not in (None, m.to_owner))
    services = found.services
    elected = services[0] if services is not None and services[2] > now else None
    expiring = [lease for lease in found_leases if lease.expires_at <= now + timedelta(seconds=soon)]
    member_rows = [
        {
            "member": m.member,
            "host": m.host,
            "pid": m.pid,
            "alive": m.expires_at > now,
            "channels": held.get(m.member, 0),
            "meters": found.meters.get(m.member, 0),
            "moved_in": moved_in.get(m.member, 0),
            "moved_out": moved_out.get(m.member, 0),
            "services": m.member == elected,
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
    move_rows = [
        {
            "at": m.at,
            "channel": m.channel,
            "from": m.from_owner or "",
            "to": m.to_owner,
            "epoch": m.epoch,
            "reason": m.reason,
        }
        for m in found.moves
    ]
    if as_json:
        expiring_names = [lease.channel for lease in expiring]
        services_row = None
        if services is not None:
            services_row = {
                "owner": services[0],
                "epoch": services[1],
                "expires_in_s": round((services[2] - now).total_seconds(), 1),
            }
        echo_json(
            {
                "members": member_rows,
                "leases": lease_rows,
                "expiring": expiring_names,
                "services": services_row,
                "moves": move_rows,
            }
        )
        return
    if not found_members and not found_leases:
        typer.echo("no cluster members: [cluster] is not enabled on any daemon of this database")
        return
    member_columns = ("member", "host", "pid", "alive", "channels", "meters", "moved_in", "moved_out")
    echo_table("members", (*member_columns, "services", "renewed_at"), member_rows)
    echo_table("leases", ("channel", "owner", "epoch", "expires_in_s"), lease_rows)
    soon_rows = [row for row in lease_rows if row["channel"] in {lease.channel for lease in expiring}]
    echo_table(f"leases expiring within {soon:g} s", ("channel", "owner", "epoch", "expires_in_s"), soon_rows)
    echo_table("lease moves in the last hour", ("at", "channel", "from", "to", "epoch", "reason"), move_rows)


def register(app: typer.Typer) -> None:
    """Attach ``headend cluster``."""
    app.add_typer(cluster_app, name="cluster")
