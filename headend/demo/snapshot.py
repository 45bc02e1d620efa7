"""What the demo shows and reports: figures read back from the database and the running engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg


@dataclass
class ChannelFigures:
    """One channel's cycles so far, as stored in ``read_cycles``, plus its live line counters."""

    name: str
    meters: int
    cycles: int = 0
    due: int = 0
    succeeded: int = 0
    readings: int = 0
    utilisation: float | None = None  # latest finished cycle
    timeouts: int = 0
    bad_frames: int = 0  # checksum errors and frames that were not the awaited reply
    noise_bytes: int = 0

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.due if self.due else None


@dataclass
class Snapshot:
    """Everything one dashboard refresh or the final summary needs."""

    channels: list[ChannelFigures] = field(default_factory=list)
    readings_by_quality: dict[str, int] = field(default_factory=dict)
    meters_with_actual: int = 0
    meters_without_actual: list[str] = field(default_factory=list)
    latest: list[asyncpg.Record] = field(default_factory=list)
    backfills: list[asyncpg.Record] = field(default_factory=list)
    commands: list[asyncpg.Record] = field(default_factory=list)
    clock_corrections: int = 0
    quarantined: int = 0

    @property
    def readings_stored(self) -> int:
        return sum(self.readings_by_quality.values())

    @property
    def success_rate(self) -> float | None:
        due = sum(c.due for c in self.channels)
        return sum(c.succeeded for c in self.channels) / due if due else None


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


def _line_counters(engine: Any) -> dict[str, tuple[int, int, int]]:
    """``{channel name: (timeouts, bad frames, noise bytes)}`` from the workers' open channels."""
    out = {}
    for worker in list(getattr(engine, "workers", {}).values()):
        stats = getattr(worker.channel, "stats", None)
        if stats is not None:
            bad = stats.checksum_errors + stats.unexpected_frames
            out[worker.spec.name] = (stats.timeouts, bad, stats.noise_bytes)
    return out


async def take_snapshot(
    conn: asyncpg.Connection, engine: Any, *, since: datetime, latest: int = 6
) -> Snapshot:
    """Read the figures of this demo run (``since``: its start) from the database and the engine."""
    snap = Snapshot()
    lines = _line_counters(engine)
    for row in await conn.fetch(_CHANNEL_CYCLES):
        snap.channels.append(
            ChannelFigures(
                row["name"],
                row["meters"],
                row["cycles"],
                row["due"],
                row["succeeded"],
                row["readings"],
                row["utilisation"],
                *lines.get(row["name"], (0, 0, 0)),
            )
        )
    snap.readings_by_quality = {
        r["quality"]: r["n"]
        for r in await conn.fetch("SELECT quality::text AS quality, count(*) AS n FROM readings GROUP BY 1")
    }
    for row in await conn.fetch(_METER_ACTUALS):
        if row["answered"]:
            snap.meters_with_actual += 1
        else:
            snap.meters_without_actual.append(row["name"])
    snap.latest = await conn.fetch(_LATEST, since, latest)
    snap.backfills = await conn.fetch(_BACKFILLS, since, 4)
    snap.commands = await conn.fetch(_COMMANDS)
    snap.clock_corrections = await conn.fetchval(
        "SELECT count(*) FROM events WHERE category = 'comm' AND kind LIKE 'clock%'"
    )
    health = getattr(engine, "health", None)
    snap.quarantined = health.quarantined_count() if health is not None else 0
    return snap
