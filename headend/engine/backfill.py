"""Gap detection (intervals without a reading) and turning profile records into backfill readings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from headend.config import ReadPlan
from headend.engine.model import MeterSpec
from headend.store.gaps import missing_intervals
from headend.store.reading import Reading
from headend.vocabulary import ReadingQuality


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """One stored record of a meter: its interval time, values and where it came from.

    ``quality`` is ``backfilled`` for load-profile records and ``freeze`` for daily-freeze records.
    """

    ts: datetime
    values: dict[str, float]
    quality: ReadingQuality = "backfilled"


async def find_gaps(
    conn: asyncpg.Connection,
    meters: list[MeterSpec],
    plan_for: Callable[[MeterSpec], ReadPlan],
    since: datetime,
    upto: datetime,
    interval: float,
    limit_per_meter: int,
) -> dict[int, list[datetime]]:
    """Interval times in ``[since, upto]`` (not before installation) lacking the plan's gap quantity.

    At most ``limit_per_meter`` newest gaps per meter are returned.
    """
    rows = await missing_intervals(
        conn, [m.id for m in meters], [plan_for(m).gap_key for m in meters], since, upto, interval
    )
    gaps: dict[int, list[datetime]] = defaultdict(list)
    for row in rows:
        gaps[row["meter_id"]].append(row["ts"])
    return {mid: stamps[-limit_per_meter:] for mid, stamps in gaps.items()}


def gap_readings(
    meter_id: int,
    plan: ReadPlan,
    gaps: list[datetime],
    records: Iterable[ProfileRecord] | None,
    settled_before: datetime | None = None,
) -> list[Reading]:
    """Readings filling ``gaps`` from ``records``; ``missing`` markers where nothing can fill them.

    ``records=None`` means the meter keeps no history (markers for every gap). With records, gaps
    after the newest record stay open (the meter may not have stored them yet), unless they are
    before ``settled_before`` (a profile period ago): a record the meter has not stored by then it
    never will (e.g. one-minute reads between 15-minute profile records)."""
    wanted = set(plan.quantities)
    if records is None:
        return [Reading(meter_id, q, ts, None, "missing", "backfill") for ts in gaps for q in plan.quantities]
    by_ts = {r.ts: r for r in records}
    newest = max(by_ts, default=None)
    out: list[Reading] = []
    for ts in gaps:
        record = by_ts.get(ts)
        if record is not None:
            source = "freeze" if record.quality == "freeze" else "profile"
            out += [
                Reading(meter_id, q, ts, float(v), record.quality, source)
                for q, v in record.values.items()
                if q in wanted and v is not None
            ]
        elif (newest is not None and ts < newest) or (settled_before is not None and ts < settled_before):
            out += [Reading(meter_id, q, ts, None, "missing", "backfill") for q in plan.quantities]
    return out
