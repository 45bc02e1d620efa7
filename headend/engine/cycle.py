"""Bookkeeping of one channel's read cycle: due, succeeded, readings, busy time -> ``read_cycles``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

_UPSERT = """
INSERT INTO read_cycles (channel_id, cycle_at, due, succeeded, readings, started_at, finished_at, utilisation)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (cycle_at, channel_id) DO UPDATE SET due = EXCLUDED.due, succeeded = EXCLUDED.succeeded,
    readings = EXCLUDED.readings, finished_at = EXCLUDED.finished_at, utilisation = EXCLUDED.utilisation
"""


@dataclass(slots=True)
class CycleStats:
    """Counts for one channel and one interval; ``utilisation`` is bus busy time / interval length."""

    channel_id: int
    channel: str
    cycle_at: datetime
    interval: float
    busy_at_start: float
    due: int = 0
    succeeded: int = 0
    readings: int = 0
    done: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_mono: float = field(default_factory=time.monotonic)
    finished_at: datetime | None = None
    utilisation: float = 0.0

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.due if self.due else None

    def projected_utilisation(self, busy_now: float) -> float:
        """Bus time the whole cycle needs / interval, extrapolated from the jobs done so far."""
        busy = busy_now - self.busy_at_start
        if self.done == 0:
            return max(busy, time.monotonic() - self.started_mono) / self.interval
        return busy / self.done * self.due / self.interval

    def finish(self, busy_now: float) -> None:
        self.finished_at = datetime.now(UTC)
        self.utilisation = (busy_now - self.busy_at_start) / self.interval

    async def store(self, conn: asyncpg.Connection) -> None:
        await conn.execute(
            _UPSERT,
            self.channel_id,
            self.cycle_at,
            self.due,
            self.succeeded,
            self.readings,
            self.started_at,
            self.finished_at,
            self.utilisation,
        )
