"""What the demo shows and reports: figures read back from the database and the running engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from headend.store import reports
from headend.transport.concentrator import LinkStats


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


def _line_counters(engine: Any) -> dict[str, tuple[int, int, int]]:
    """``{channel name: (timeouts, bad frames, noise bytes)}`` from the workers' open channels."""
    out = {}
    for worker in list(getattr(engine, "workers", {}).values()):
        stats = getattr(worker.channel, "stats", None)
        if isinstance(stats, LinkStats):  # a concentrator link: frames, not line bytes
            bad = stats.bad_frames + stats.late_frames + stats.foreign_frames
            out[worker.spec.name] = (stats.timeouts, bad, 0)
        elif stats is not None:
            bad = stats.checksum_errors + stats.unexpected_frames
            out[worker.spec.name] = (stats.timeouts, bad, stats.noise_bytes)
    return out


async def take_snapshot(
    conn: asyncpg.Connection, engine: Any, *, since: datetime, latest: int = 6
) -> Snapshot:
    """Read the figures of this demo run (``since``: its start) from the database and the engine."""
    snap = Snapshot()
    lines = _line_counters(engine)
    for row in await reports.channel_cycles(conn):
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
    snap.readings_by_quality = await reports.readings_by_quality(conn)
    for row in await reports.meters_answered(conn):
        if row["answered"]:
            snap.meters_with_actual += 1
        else:
            snap.meters_without_actual.append(row["name"])
    snap.latest = await reports.latest_readings(conn, since, latest)
    snap.backfills = await reports.recent_backfills(conn, since, 4)
    snap.commands = await reports.commands_with_meters(conn)
    snap.clock_corrections = await reports.clock_corrections(conn)
    health = getattr(engine, "health", None)
    snap.quarantined = health.quarantined_count() if health is not None else 0
    return snap
