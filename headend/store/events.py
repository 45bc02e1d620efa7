"""Queries on the ``events`` table: meter event records (deduplicated) and the daemon's own events."""

from __future__ import annotations

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


async def insert_meter_events(conn: asyncpg.Connection, meter_id: int, rows: Sequence[MeterEventRow]) -> int:
    """Insert one meter's event records, skipping those already stored; returns rows inserted."""
    if not rows:
        return 0
    before: int = await conn.fetchval(_COUNT_METER, meter_id)
    await conn.executemany(_INSERT_METER, rows)
    after: int = await conn.fetchval(_COUNT_METER, meter_id)
    return after - before


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
