"""Readings export for a billing / CIS system: each meter's daily registers (or its interval
readings) over a period, multiplied by the meter's CT × PT multiplier (an area's supply meter: the
area's CT and PT ratios, as line loss uses them), with their quality, streamed
from a server-side cursor in a fixed order (meter id, then time) so that a repeat gives the same rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date

import asyncpg

# The meters of the export: in service at some time of the period, optionally only the named ones
# (name, address or channel/address) or one area's members and supply meter.
_METERS = """
SELECT m.id FROM meters m JOIN channels c ON c.id = m.channel_id
WHERE m.installed_at < ($2::date + 1)::timestamp AT TIME ZONE $3
  AND (m.removed_at IS NULL OR m.removed_at > $1::date::timestamp AT TIME ZONE $3)
  AND ($4::text[] IS NULL OR m.name = ANY($4) OR m.address = ANY($4) OR c.name || '/' || m.address = ANY($4))
  AND ($5::text IS NULL OR m.id IN (
        SELECT a.supply_meter_id FROM areas a WHERE a.name = $5
        UNION SELECT am.meter_id FROM area_members am JOIN areas a ON a.id = am.area_id
              WHERE a.name = $5 AND am.valid_from <= $2 AND (am.valid_to IS NULL OR am.valid_to > $1)))
ORDER BY m.id
"""

# The factor a meter's registers are multiplied by: an area's supply meter, the area's CT × PT ratios
# (as line loss uses them); any other meter, its own multiplier.
_FACTOR = """SELECT coalesce((SELECT a.ct_ratio * a.pt_ratio FROM areas a WHERE a.supply_meter_id = m.id),
                          m.multiplier::float8) AS factor"""

# One row per meter and local day: the register at the day's start (its midnight freeze) and the
# day's consumption up to the next midnight, both × the multiplier; a day without a register at either
# end has no consumption, and its quality says why ('missing' when nothing is stored).
_DAILY = f"""
WITH days AS (
    SELECT d::date AS day, d::timestamp AT TIME ZONE $4 AS lo, (d::date + 1)::timestamp AT TIME ZONE $4 AS hi
    FROM generate_series($2::date, $3::date, interval '1 day') AS d
)
SELECT chosen.n, coalesce(m.name, m.address) AS meter, m.address, d.day, f.factor AS multiplier,
       r0.value * f.factor AS register_kwh,
       coalesce(r0.quality::text, 'missing') AS register_quality,
       (r1.value - r0.value) * f.factor AS consumption_kwh,
       CASE WHEN r0.value IS NULL OR r1.value IS NULL THEN 'missing'
            WHEN r0.quality IN ('estimated', 'suspect') THEN r0.quality::text
            WHEN r1.quality IN ('estimated', 'suspect') THEN r1.quality::text
            ELSE 'valid' END AS consumption_quality
FROM unnest($1::int[]) WITH ORDINALITY AS chosen(id, n)
JOIN meters m ON m.id = chosen.id
CROSS JOIN LATERAL ({_FACTOR}) f
CROSS JOIN days d
LEFT JOIN readings r0 ON r0.meter_id = m.id AND r0.quantity_id = $5 AND r0.ts = d.lo
LEFT JOIN readings r1 ON r1.meter_id = m.id AND r1.quantity_id = $5 AND r1.ts = d.hi
ORDER BY chosen.n, d.day
"""

# Every stored interval reading of the period, × the multiplier, with its quality.
_INTERVALS = f"""
SELECT chosen.n, coalesce(m.name, m.address) AS meter, m.address, r.ts, f.factor AS multiplier,
       r.value * f.factor AS value_kwh, r.quality::text AS quality
FROM unnest($1::int[]) WITH ORDINALITY AS chosen(id, n)
JOIN meters m ON m.id = chosen.id
CROSS JOIN LATERAL ({_FACTOR}) f
JOIN readings r ON r.meter_id = m.id AND r.quantity_id = $5
    AND r.ts >= $2::date::timestamp AT TIME ZONE $4 AND r.ts < ($3::date + 1)::timestamp AT TIME ZONE $4
ORDER BY chosen.n, r.ts
"""

DAILY_COLUMNS = (
    "meter",
    "address",
    "day",
    "multiplier",
    "register_kwh",
    "register_quality",
    "consumption_kwh",
    "consumption_quality",
)
INTERVAL_COLUMNS = ("meter", "address", "ts", "multiplier", "value_kwh", "quality")


async def export_meters(
    conn: asyncpg.Connection,
    first: date,
    last: date,
    zone: str,
    names: Sequence[str] | None,
    area: str | None,
) -> list[int]:
    """The ids of the meters to export, in export order."""
    found = await conn.fetch(_METERS, first, last, zone, list(names) if names else None, area)
    return [r["id"] for r in found]


async def quantity_id(conn: asyncpg.Connection, name: str) -> int | None:
    """The id of quantity ``name`` (None when nothing of it was ever stored)."""
    found: int | None = await conn.fetchval("SELECT id FROM quantities WHERE name = $1", name)
    return found


async def stream_export(
    conn: asyncpg.Connection,
    meter_ids: Sequence[int],
    first: date,
    last: date,
    zone: str,
    quantity: int,
    *,
    intervals: bool,
    prefetch: int = 2000,
) -> AsyncIterator[asyncpg.Record]:
    """The export rows of ``meter_ids`` for the local days ``first`` … ``last`` (inclusive), fetched
    ``prefetch`` at a time from a server-side cursor; ``n`` is the row's meter's place (1-based)."""
    query = _INTERVALS if intervals else _DAILY
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(query, list(meter_ids), first, last, zone, quantity, prefetch=prefetch):
            yield row
