"""Queries of the dial-in aggregate: identities that dialled in without a channel, and connections
that claimed a connected device (conflicts), in ``dialin_pending``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class PendingRow:
    """One pending identity as stored."""

    identity: str
    kind: str
    listener: str
    peer: str
    first_seen: datetime
    last_seen: datetime
    attempts: int
    held: bool
    conflicts: int = 0  # connections refused or replacing because the device was connected


_UPSERT = """
INSERT INTO dialin_pending (identity, kind, listener, peer, first_seen, last_seen, attempts, held, conflicts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (kind, identity) DO UPDATE SET
    listener = EXCLUDED.listener, peer = EXCLUDED.peer,
    first_seen = LEAST(dialin_pending.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(dialin_pending.last_seen, EXCLUDED.last_seen),
    attempts = GREATEST(dialin_pending.attempts, EXCLUDED.attempts), held = EXCLUDED.held,
    conflicts = GREATEST(dialin_pending.conflicts, EXCLUDED.conflicts)
"""

_ADOPTED = """
DELETE FROM dialin_pending p USING channels c
WHERE c.kind = p.kind AND c.address = p.identity AND p.conflicts = 0
"""


async def save_pending(conn: asyncpg.Connection, rows: Iterable[PendingRow]) -> None:
    """Upsert pending identities and conflicts (counts only grow), then drop the unknown identities
    now in the inventory."""
    args = [
        (r.identity, r.kind, r.listener, r.peer, r.first_seen, r.last_seen, r.attempts, r.held, r.conflicts)
        for r in rows
    ]
    async with conn.transaction():
        if args:
            await conn.executemany(_UPSERT, args)
        await conn.execute(_ADOPTED)


async def list_pending(conn: asyncpg.Connection) -> list[PendingRow]:
    """Pending identities and conflicts, most recently seen first (adopted identities are not listed)."""
    rows = await conn.fetch(
        """
        SELECT p.identity, p.kind, p.listener, p.peer, p.first_seen, p.last_seen, p.attempts, p.held,
               p.conflicts
        FROM dialin_pending p
        WHERE p.conflicts > 0
           OR NOT EXISTS (SELECT 1 FROM channels c WHERE c.kind = p.kind AND c.address = p.identity)
        ORDER BY p.last_seen DESC, p.identity
        """
    )
    return [PendingRow(**dict(r)) for r in rows]
