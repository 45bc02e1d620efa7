"""Read-only queries behind the web console's audit log (run under the reporting login): the audit
entries of an operator, an action (or actions starting with a prefix), a meter (its own entries and
its commands') and a time range, newest first; and the same entries in order for a CSV export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

Row = dict[str, object]
COLUMNS = ("id", "at", "actor", "action", "entity", "entity_id", "reason", "details")


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries: each field None means any."""

    actor: str | None = None
    action: str | None = None  # an action, or a prefix ("command." for every command action)
    meter_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def arguments(self) -> tuple[object, ...]:
        return (self.actor, self.action, self.meter_id, self.since, self.until)


_WHERE = """
WHERE ($1::text IS NULL OR a.actor = $1)
  AND ($2::text IS NULL OR starts_with(a.action, $2))
  AND ($3::integer IS NULL
       OR (a.entity = 'meter' AND a.entity_id = $3::text)
       OR (a.entity = 'command' AND a.entity_id IN (SELECT id::text FROM commands WHERE meter_id = $3)))
  AND ($4::timestamptz IS NULL OR a.at >= $4)
  AND ($5::timestamptz IS NULL OR a.at < $5)
"""

_SELECT = "SELECT a.id, a.at, a.actor, a.action, a.entity, a.entity_id, a.reason, a.details::text AS details"


async def entries(conn: asyncpg.Connection, which: AuditFilter, limit: int = 200) -> list[Row]:
    """The newest ``limit`` entries that match, newest first."""
    query = f"{_SELECT} FROM audit_log a {_WHERE} ORDER BY a.id DESC LIMIT $6"
    return [dict(r) for r in await conn.fetch(query, *which.arguments(), limit)]


async def newest_id(conn: asyncpg.Connection) -> int:
    """The id of the newest audit entry (0 when there is none): where an export stops."""
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM audit_log"))


async def after(conn: asyncpg.Connection, which: AuditFilter, last: int, upto: int, limit: int) -> list[Row]:
    """Up to ``limit`` matching entries with ids in ``(last, upto]``, oldest first: one page of an
    export that holds no connection between its pages (the log is append-only, ids only grow)."""
    query = f"{_SELECT} FROM audit_log a {_WHERE} AND a.id > $6 AND a.id <= $7 ORDER BY a.id LIMIT $8"
    return [dict(r) for r in await conn.fetch(query, *which.arguments(), last, upto, limit)]


async def stream(conn: asyncpg.Connection, which: AuditFilter, batch: int = 1000) -> AsyncIterator[Row]:
    """Every matching entry, oldest first, read through a cursor ``batch`` rows at a time."""
    query = f"{_SELECT} FROM audit_log a {_WHERE} ORDER BY a.id"
    async with conn.transaction(readonly=True):
        async for record in conn.cursor(query, *which.arguments(), prefetch=batch):
            yield dict(record)
