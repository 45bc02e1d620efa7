"""Queries for daemons sharing the channels (migration 0065): membership, channel leases with
epochs, and the fencing settings a sending transaction names its lease by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from headend.store.results import rows


@dataclass(frozen=True, slots=True)
class Member:
    """A daemon in ``cluster_members``."""

    member: str
    host: str
    pid: int
    started_at: datetime
    renewed_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Lease:
    """A channel's row in ``channel_leases``."""

    channel_id: int
    channel: str
    owner: str
    epoch: int
    taken_at: datetime
    expires_at: datetime


async def renew_member(conn: asyncpg.Connection, member: str, host: str, pid: int, ttl: float) -> None:
    """Announce or renew this daemon's membership for ``ttl`` seconds."""
    ttl_interval = timedelta(seconds=ttl)
    await conn.execute("SELECT headend_cluster_renew($1, $2, $3, $4)", member, host, pid, ttl_interval)


async def live_members(conn: asyncpg.Connection) -> list[str]:
    """The daemons whose membership has not expired."""
    found = await rows(conn, "SELECT member FROM cluster_members WHERE expires_at > clock_timestamp()")
    return [str(r["member"]) for r in found]


async def enabled_channels(conn: asyncpg.Connection) -> list[int]:
    """Every enabled channel's id (the ones to share)."""
    return [int(r["id"]) for r in await rows(conn, "SELECT id FROM channels WHERE enabled ORDER BY id")]


async def lease_owners(conn: asyncpg.Connection) -> dict[int, str]:
    """The owner of every channel whose lease has not expired."""
    found = await rows(
        conn, "SELECT channel_id, owner FROM channel_leases WHERE expires_at > clock_timestamp()"
    )
    return {int(r["channel_id"]): str(r["owner"]) for r in found}


async def take_lease(conn: asyncpg.Connection, channel_id: int, member: str, ttl: float) -> int | None:
    """Take or renew a channel's lease; its epoch, or None while another daemon holds it."""
    ttl_interval = timedelta(seconds=ttl)
    epoch = await conn.fetchval("SELECT headend_lease_take($1, $2, $3)", channel_id, member, ttl_interval)
    return None if epoch is None else int(epoch)


async def release_lease(conn: asyncpg.Connection, channel_id: int, member: str) -> None:
    """Let a held lease go at once."""
    await conn.execute("SELECT headend_lease_release($1, $2)", channel_id, member)


async def leave(conn: asyncpg.Connection, member: str) -> None:
    """Let every lease of ``member`` go and remove its membership."""
    await conn.execute("SELECT headend_cluster_leave($1)", member)


async def set_fence(conn: asyncpg.Connection, owner: str, epoch: int) -> None:
    """Name the lease this transaction acts under (checked when a command moves to ``sent``)."""
    await conn.execute(
        "SELECT set_config('headend.lease_owner', $1, true), set_config('headend.lease_epoch', $2, true)",
        owner,
        str(epoch),
    )


async def members(conn: asyncpg.Connection) -> list[Member]:
    """Every daemon in the membership table, oldest first."""
    query = "SELECT member, host, pid, started_at, renewed_at, expires_at FROM cluster_members"
    found = await rows(conn, query + " ORDER BY started_at")
    return [Member(**dict(r)) for r in found]


async def leases(conn: asyncpg.Connection) -> list[Lease]:
    """Every channel lease, by channel name."""
    found = await rows(
        conn,
        """SELECT l.channel_id, c.name AS channel, l.owner, l.epoch, l.taken_at, l.expires_at
           FROM channel_leases l JOIN channels c ON c.id = l.channel_id ORDER BY c.name""",
    )
    return [Lease(**dict(r)) for r in found]
