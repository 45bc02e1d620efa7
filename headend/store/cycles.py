"""Queries on ``read_cycles``: one row per channel and interval (due, succeeded, busy share)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_UPSERT = """
INSERT INTO read_cycles (channel_id, cycle_at, due, succeeded, readings, started_at, finished_at, utilisation)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (cycle_at, channel_id) DO UPDATE SET due = EXCLUDED.due, succeeded = EXCLUDED.succeeded,
    readings = EXCLUDED.readings, finished_at = EXCLUDED.finished_at, utilisation = EXCLUDED.utilisation
"""


async def upsert_read_cycle(
    conn: asyncpg.Connection,
    channel_id: int,
    cycle_at: datetime,
    due: int,
    succeeded: int,
    readings: int,
    started_at: datetime,
    finished_at: datetime | None,
    utilisation: float,
) -> None:
    """Record (or, for a repeated interval, update) one channel's cycle."""
    await conn.execute(
        _UPSERT, channel_id, cycle_at, due, succeeded, readings, started_at, finished_at, utilisation
    )
