"""Meter event records (power down, relay trip/close) into the ``events`` table, without duplicates."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from headend.engine.model import MeterSpec

_INSERT = """
INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, ended_at, details)
VALUES ('meter', $1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (meter_id, kind, occurred_at) WHERE category = 'meter' DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class MeterEvent:
    kind: str
    occurred_at: datetime
    ended_at: datetime | None = None
    details: dict = field(default_factory=dict)


async def store_events(conn: asyncpg.Connection, meter: MeterSpec, events: Iterable[MeterEvent]) -> int:
    """Insert the meter's event records; records already stored are skipped. Returns rows inserted."""
    rows = [
        (e.kind, meter.id, meter.channel_id, e.occurred_at, e.ended_at, json.dumps(e.details, default=str))
        for e in events
    ]
    if not rows:
        return 0
    before = await conn.fetchval(
        "SELECT count(*) FROM events WHERE meter_id = $1 AND category = 'meter'", meter.id
    )
    await conn.executemany(_INSERT, rows)
    after = await conn.fetchval(
        "SELECT count(*) FROM events WHERE meter_id = $1 AND category = 'meter'", meter.id
    )
    return after - before
