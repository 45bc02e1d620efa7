"""SQL of ``channel_trusts`` (migration 0051): an admin's grant that the next connection of a dial-in
device counts as verified for its archive request only; the daemon records the connection that used it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from headend.store.results import Queryable

MAX_WINDOW = timedelta(minutes=30)  # the database refuses a longer grant


@dataclass(frozen=True, slots=True)
class TrustGrant:
    """One grant as stored: ``used`` once a connection claimed it."""

    id: int
    channel_id: int
    channel: str
    granted_by: str
    reason: str
    granted_at: datetime
    expires_at: datetime
    used: bool
    used_peer: str | None


_COLUMNS = """t.id, t.channel_id, c.name AS channel, t.granted_by, t.reason, t.granted_at, t.expires_at,
              t.used_at IS NOT NULL AS used, t.used_peer"""


def _grant(r: asyncpg.Record) -> TrustGrant:
    return TrustGrant(
        int(r["id"]),
        int(r["channel_id"]),
        str(r["channel"]),
        str(r["granted_by"]),
        str(r["reason"]),
        r["granted_at"],
        r["expires_at"],
        bool(r["used"]),
        r["used_peer"],
    )


async def grant_trust(
    conn: Queryable, channel_id: int, operator: str, reason: str, window: timedelta
) -> TrustGrant:
    """Insert a grant by the signed-in admin ``operator`` (the database refuses anyone else)."""
    found = await conn.fetchrow(
        f"""WITH t AS (INSERT INTO channel_trusts (channel_id, granted_by, reason, expires_at)
                       VALUES ($1, $2, $3, now() + $4::interval) RETURNING *)
            SELECT {_COLUMNS} FROM t JOIN channels c ON c.id = t.channel_id""",
        channel_id,
        operator,
        reason,
        window,
    )
    assert found is not None
    return _grant(found)


async def lasting_trusts(conn: Queryable) -> list[TrustGrant]:
    """The grants neither revoked nor expired (used or not), newest per channel."""
    found = await conn.fetch(
        f"""SELECT DISTINCT ON (t.channel_id) {_COLUMNS}
            FROM channel_trusts t JOIN channels c ON c.id = t.channel_id
            WHERE t.revoked_at IS NULL AND t.expires_at > now()
            ORDER BY t.channel_id, t.id DESC"""
    )
    return [_grant(r) for r in found]


async def record_trust_used(conn: Queryable, trust_id: int, peer: str) -> bool:
    """Record the connection that claimed grant ``trust_id`` (the daemon's; once)."""
    done = await conn.fetchval(
        """WITH u AS (UPDATE channel_trusts SET used_at = now(), used_peer = $2
                      WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL RETURNING 1)
           SELECT count(*) FROM u""",
        trust_id,
        peer[:200],
    )
    return bool(done)
