"""Meter event records (power down, relay trip/close) as drivers report them, stored without duplicates."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from headend.engine.model import MeterSpec
from headend.store.events import insert_meter_events


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
    return await insert_meter_events(conn, meter.id, rows)
