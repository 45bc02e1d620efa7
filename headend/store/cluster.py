"""Queries for daemons sharing the channels (migrations 0065, 0074, 0075): membership, channel leases
with epochs (taken by rendezvous assignment, or seized by a dial-in connection unless another member
has the device connected), the elected services' lease, lease moves, and the fences a side effect
names its lease by."""

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


@dataclass(frozen=True, slots=True)
class Holding:
    """Who holds a channel's lease (not expired), and whether with its device connected."""

    owner: str
    connected: bool


async def live_holding(conn: asyncpg.Connection, channel_id: int) -> Holding | None:
    """The live holder of a channel's lease; None when nobody holds it (no row, or expired)."""
    row = await conn.fetchrow(
        "SELECT owner, connected FROM channel_leases"
        " WHERE channel_id = $1 AND expires_at > clock_timestamp()",
        channel_id,
    )
    return None if row is None else Holding(str(row["owner"]), bool(row["connected"]))


async def renew_member(conn: asyncpg.Connection, member: str, host: str, pid: int, ttl: float) -> None:
    """Announce or renew this daemon's membership for ``ttl`` seconds."""
    ttl_interval = timedelta(seconds=ttl)
    await conn.execute("SELECT headend_cluster_renew($1, $2, $3, $4)", member, host, pid, ttl_interval)


async def live_members(conn: asyncpg.Connection) -> list[str]:
    """The daemons whose membership has not expired."""
    found = await rows(conn, "SELECT member FROM cluster_members WHERE expires_at > clock_timestamp()")
    return [str(r["member"]) for r in found]


async def enabled_channels(conn: asyncpg.Connection) -> dict[int, bool]:
    """Every enabled channel's id (the ones to share), with whether its device dials in."""
    found = await rows(
        conn, "SELECT id, kind IN ('dtu', 'gdw1376') AS dialin FROM channels WHERE enabled ORDER BY id"
    )
    return {int(r["id"]): bool(r["dialin"]) for r in found}


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


async def take_leases(
    conn: asyncpg.Connection, channel_ids: list[int], member: str, ttl: float, connected: set[int]
) -> dict[int, int]:
    """Take or renew many leases in one statement, saying which of them have their device connected to
    ``member`` now: the epoch of each channel taken (a channel missing is held by another live daemon)."""
    if not channel_ids:
        return {}
    found = await rows(
        conn,
        "SELECT channel, lease_epoch FROM headend_lease_take_many($1::integer[], $2::integer[], $3, $4)",
        sorted(channel_ids),
        sorted(connected),
        member,
        timedelta(seconds=ttl),
    )
    return {int(r["channel"]): int(r["lease_epoch"]) for r in found}


@dataclass(frozen=True, slots=True)
class Seized:
    """The outcome of a dial-in connection's claim on its channel's lease: the epoch taken, or None
    while ``holder`` (another member) holds it with the device connected."""

    epoch: int | None
    holder: str


async def seize_lease(conn: asyncpg.Connection, channel_id: int, member: str, ttl: float) -> Seized:
    """Take a dial-in channel's lease for ``member`` (its device connected there), unless another
    member holds it live with the device connected (migration 0075)."""
    ttl_interval = timedelta(seconds=ttl)
    row = await conn.fetchrow(
        "SELECT lease_epoch, holder FROM headend_lease_seize($1, $2, $3)", channel_id, member, ttl_interval
    )
    if row is None:  # the channel is gone (deleted meanwhile): nothing held, nobody to name
        return Seized(None, "")
    epoch = row["lease_epoch"]
    return Seized(None if epoch is None else int(epoch), str(row["holder"]))


async def lease_disconnected(conn: asyncpg.Connection, channel_id: int, member: str) -> None:
    """The device's connection to ``member`` closed: its lease no longer keeps the device there."""
    await conn.execute("SELECT headend_lease_disconnected($1, $2)", channel_id, member)


async def take_service(conn: asyncpg.Connection, member: str, ttl: float) -> int | None:
    """Take or renew the elected services' lease; its epoch, or None while another daemon holds it."""
    ttl_interval = timedelta(seconds=ttl)
    epoch = await conn.fetchval("SELECT headend_service_take('services', $1, $2)", member, ttl_interval)
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


async def set_service_fence(conn: asyncpg.Connection, owner: str, epoch: int) -> None:
    """Name the services' lease this session writes under (bills, ledger, automatic commands are
    refused unless it is current); a pooled connection forgets it when released (RESET ALL)."""
    await conn.execute(
        "SELECT set_config('headend.service_owner', $1, false),"
        " set_config('headend.service_epoch', $2, false)",
        owner,
        str(epoch),
    )


async def check_write_fence(conn: asyncpg.Connection, meter_id: int, owner: str, epoch: int) -> None:
    """Right before a clock or parameter write frame: raises asyncpg.InsufficientPrivilegeError unless
    ``owner`` holds the meter's channel lease at ``epoch`` (a channel with no lease is not fenced)."""
    await conn.execute("SELECT headend_write_fence($1, $2, $3)", meter_id, owner, epoch)


@dataclass(frozen=True, slots=True)
class Move:
    """A lease's change of epoch in ``lease_moves`` (first take, hand-over, take-over, dial-in)."""

    channel: str
    from_owner: str | None
    to_owner: str
    epoch: int
    reason: str
    at: datetime


async def moves_since(conn: asyncpg.Connection, seconds: float) -> list[Move]:
    """The lease moves of the last ``seconds``, oldest first."""
    found = await rows(
        conn,
        """SELECT c.name AS channel, m.from_owner, m.to_owner, m.epoch, m.reason, m.at
           FROM lease_moves m JOIN channels c ON c.id = m.channel_id
           WHERE m.at > clock_timestamp() - $1::interval ORDER BY m.at, m.id""",
        timedelta(seconds=seconds),
    )
    return [Move(**dict(r)) for r in found]


async def meters_held(conn: asyncpg.Connection) -> dict[str, int]:
    """How many enabled meters each daemon reads through the live leases it holds."""
    found = await rows(
        conn,
        """SELECT l.owner, count(m.id) AS meters FROM channel_leases l
           LEFT JOIN meters m ON m.channel_id = l.channel_id AND m.enabled
           WHERE l.expires_at > clock_timestamp() GROUP BY l.owner""",
    )
    return {str(r["owner"]): int(r["meters"]) for r in found}


async def services_lease(conn: asyncpg.Connection) -> tuple[str, int, datetime] | None:
    """The elected services' lease (owner, epoch, expiry), None before any election."""
    r = await conn.fetchrow("SELECT owner, epoch, expires_at FROM service_leases WHERE name = 'services'")
    return None if r is None else (str(r["owner"]), int(r["epoch"]), r["expires_at"])


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
