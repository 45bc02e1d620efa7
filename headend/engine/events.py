"""Meter event records (power down, relay trip/close) as drivers report them, stored without duplicates."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from headend.engine.model import MeterSpec
from headend.store.records import MeterEventsRecord


@dataclass(frozen=True, slots=True)
class MeterEvent:
    kind: str
    occurred_at: datetime
    ended_at: datetime | None = None
    details: dict = field(default_factory=dict)


def events_record(meter: MeterSpec, events: Iterable[MeterEvent]) -> MeterEventsRecord:
    """The meter's event records as one record for the writer (stored once, skipping known ones)."""
    rows = tuple(
        (e.kind, meter.id, meter.channel_id, e.occurred_at, e.ended_at, json.dumps(e.details, default=str))
        for e in events
    )
    return MeterEventsRecord(meter.id, rows)
