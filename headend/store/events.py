"""Queries on the ``events`` table: meter event records (deduplicated) and the daemon's own events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

# kind, meter id, channel id, occurred at, ended at, details (JSON text)
MeterEventRow = tuple[str, int, int, datetime, datetime | None, str]

_INSERT_METER = """
INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, ended_at, details)
VALUES ('meter', $1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (meter_id, kind, occurred_at) WHERE category = 'meter' DO NOTHING
"""
_COUNT_METER = "SELECT count(*) FROM events WHERE meter_id = $1 AND category = 'meter'"
# Conditions a status word reports (not records): one event from the first time the condition is seen
# until the first time it is seen cleared; a replayed observation older than what is stored changes nothing.
CONDITION_KINDS = frozenset({"clock_battery_low"})
_OPEN_CONDITION = """
INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, details)
SELECT 'meter', $1, $2, $3, $4, $5::jsonb
WHERE NOT EXISTS (SELECT 1 FROM events WHERE category = 'meter' AND meter_id = $2 AND kind = $1
                  AND (ended_at IS NULL OR ended_at >= $4))
ON CONFLICT (meter_id, kind, occurred_at) WHERE category = 'meter' DO NOTHING
"""
_CLOSE_CONDITION = """
UPDATE events SET ended_at = $3
WHERE category = 'meter' AND meter_id = $1 AND kind = $2 AND ended_at IS NULL AND occurred_at <= $3
"""


async def insert_meter_events(conn: asyncpg.Connection, meter_id: int, rows: Sequence[MeterEventRow]) -> int:
    """Insert one meter's event records, skipping those already stored, and open or close its
    conditions (:data:`CONDITION_KINDS`); returns rows inserted."""
    if not rows:
        return 0
    records = [r for r in rows if r[0] not in CONDITION_KINDS]
    before: int = await conn.fetchval(_COUNT_METER, meter_id)
    if records:
        await conn.executemany(_INSERT_METER, records)
    for kind, meter, channel, seen_at, _ended, details in rows:
        if kind not in CONDITION_KINDS:
            continue
        if json.loads(details).get("active"):
            await conn.execute(_OPEN_CONDITION, kind, meter, channel, seen_at, details)
        else:
            await close_meter_event(conn, meter, kind, seen_at)
    after: int = await conn.fetchval(_COUNT_METER, meter_id)
    return after - before


async def close_meter_event(conn: asyncpg.Connection, meter_id: int, kind: str, at: datetime) -> None:
    """End the meter's open event of ``kind`` that started by ``at`` (a condition reported cleared)."""
    await conn.execute(_CLOSE_CONDITION, meter_id, kind, at)


async def insert_comm_event(
    conn: asyncpg.Connection,
    kind: str,
    meter_id: int,
    channel_id: int,
    occurred_at: datetime,
    details_json: str,
) -> None:
    """Record a communication event the daemon observed (e.g. a clock correction); stored once even
    when replayed."""
    await conn.execute(
        "INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, details)"
        " VALUES ('comm', $1, $2, $3, $4, $5::jsonb)"
        " ON CONFLICT (meter_id, kind, occurred_at) WHERE category = 'comm' DO NOTHING",
        kind,
        meter_id,
        channel_id,
        occurred_at,
        details_json,
    )
