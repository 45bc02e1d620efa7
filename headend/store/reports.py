"""Read-only report queries over a run: per-channel cycle figures, reading counts, the latest and the
backfilled readings, commands and clock corrections (the demo's dashboard and summary)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from headend.store.results import rows

_CHANNEL_CYCLES = """
SELECT c.name, (SELECT count(*) FROM meters m WHERE m.channel_id = c.id AND m.enabled) AS meters,
       count(rc.cycle_at) FILTER (WHERE rc.finished_at IS NOT NULL) AS cycles,
       coalesce(sum(rc.due) FILTER (WHERE rc.finished_at IS NOT NULL), 0) AS due,
       coalesce(sum(rc.succeeded) FILTER (WHERE rc.finished_at IS NOT NULL), 0) AS succeeded,
       coalesce(sum(rc.readings), 0) AS readings,
       (array_agg(rc.utilisation ORDER BY rc.cycle_at DESC)
            FILTER (WHERE rc.finished_at IS NOT NULL))[1] AS utilisation
FROM channels c LEFT JOIN read_cycles rc ON rc.channel_id = c.id
GROUP BY c.id ORDER BY c.id
"""

_METER_ACTUALS = """
SELECT m.name, EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = m.id AND r.quality = 'actual') AS answered
FROM meters m WHERE m.enabled ORDER BY m.id
"""

_LATEST = """
SELECT m.name AS meter, q.name AS quantity, r.ts, r.value, r.quality::text AS quality
FROM readings r JOIN meters m ON m.id = r.meter_id JOIN quantities q ON q.id = r.quantity_id
WHERE r.received_at > $1 ORDER BY r.received_at DESC, r.ts DESC LIMIT $2
"""

_BACKFILLS = """
SELECT m.name AS meter, count(DISTINCT r.ts) AS intervals, min(r.ts) AS first_ts, max(r.ts) AS last_ts
FROM readings r JOIN meters m ON m.id = r.meter_id
WHERE r.quality IN ('backfilled', 'freeze') AND r.received_at > $1
GROUP BY m.name ORDER BY max(r.received_at) DESC, m.name LIMIT $2
"""

_COMMANDS = """
SELECT c.id, m.name AS meter, c.action, c.state::text AS state, c.cause, c.operator, c.attempts,
       c.created_at, c.finished_at, c.evidence
FROM commands c JOIN meters m ON m.id = c.meter_id ORDER BY c.id
"""


async def channel_cycles(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per channel: enabled meters, finished cycles, due, succeeded, readings, latest utilisation."""
    return await rows(conn, _CHANNEL_CYCLES)


async def readings_by_quality(conn: asyncpg.Connection) -> dict[str, int]:
    """Stored readings counted by quality."""
    rows = await conn.fetch("SELECT quality::text AS quality, count(*) AS n FROM readings GROUP BY 1")
    return {r["quality"]: r["n"] for r in rows}


async def meters_answered(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Each enabled meter's name and whether it has any actual reading."""
    return await rows(conn, _METER_ACTUALS)


async def latest_readings(conn: asyncpg.Connection, since: datetime, limit: int) -> list[asyncpg.Record]:
    """The newest readings received after ``since``."""
    return await rows(conn, _LATEST, since, limit)


async def recent_backfills(conn: asyncpg.Connection, since: datetime, limit: int) -> list[asyncpg.Record]:
    """Per meter, the intervals backfilled (profile or freeze) after ``since``, most recent first."""
    return await rows(conn, _BACKFILLS, since, limit)


async def commands_with_meters(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every relay command with its meter's name, oldest first."""
    return await rows(conn, _COMMANDS)


async def clock_corrections(conn: asyncpg.Connection) -> int:
    """Clock events the daemon recorded (corrections and clocks still off)."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM events WHERE category = 'comm' AND kind LIKE 'clock%'"
    )
    return count


async def account_balance(conn: asyncpg.Connection, number: str) -> Decimal | None:
    """The account's current balance (None if it has none)."""
    balance: Decimal | None = await conn.fetchval(
        "SELECT balance FROM balances b JOIN accounts a ON a.id = b.account_id WHERE a.number = $1", number
    )
    return balance


async def command_action(conn: asyncpg.Connection, command_id: int) -> str | None:
    """A command's action (disconnect or reconnect)."""
    action: str | None = await conn.fetchval("SELECT action FROM commands WHERE id = $1", command_id)
    return action
