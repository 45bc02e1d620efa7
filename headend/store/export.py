"""Queries of the readings export for a billing / CIS system: the meters of an export with the
factor their registers are multiplied by, and their stored readings at given instants or over a time
range, streamed from a server-side cursor in meter id then time order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

# The meters of the export, by id: in service at some time of the period, optionally only the named
# ones (name, address or channel/address) or one area's members and supply meter. The factor: an
# area's supply meter, the area's CT × PT ratios (as line loss uses them); any other meter, its own
# multiplier.
# Parameters: $1 first day, $2 last day, $3 time zone, $4 names (or NULL), $5 area (or NULL).
_CHOSEN = """
SELECT m.id, coalesce(m.name, m.address) AS meter, m.address,
       coalesce(a.ct_ratio * a.pt_ratio, m.multiplier::float8) AS factor
FROM meters m JOIN channels c ON c.id = m.channel_id LEFT JOIN areas a ON a.supply_meter_id = m.id
WHERE m.installed_at < ($2::date + 1)::timestamp AT TIME ZONE $3
  AND (m.removed_at IS NULL OR m.removed_at > $1::date::timestamp AT TIME ZONE $3)
  AND ($4::text[] IS NULL OR m.name = ANY($4) OR m.address = ANY($4) OR c.name || '/' || m.address = ANY($4))
  AND ($5::text IS NULL OR m.id IN (
        SELECT a.supply_meter_id FROM areas a WHERE a.name = $5
        UNION SELECT am.meter_id FROM area_members am JOIN areas a ON a.id = am.area_id
              WHERE a.name = $5 AND am.valid_from <= $2 AND (am.valid_to IS NULL OR am.valid_to > $1)))
"""
_METERS = _CHOSEN + "ORDER BY m.id"
_COUNT = f"SELECT count(*) FROM ({_CHOSEN}) x"
# Few meters: their ids are looked up; many: the id range is scanned in index order and the caller
# skips the meters it did not choose (one pass instead of a lookup per meter and chunk). The registers
# at given instants: one scan per instant (as the daily CSV below, for the same reason).
FEW_METERS = 1000
_AT = """
SELECT r.meter_id, r.ts, r.value, r.quality::text AS quality
FROM unnest($2::timestamptz[]) t(at)
CROSS JOIN LATERAL (SELECT * FROM readings WHERE quantity_id = $1 AND ts = t.at AND {meters} OFFSET 0) r
ORDER BY r.meter_id, r.ts
"""
_BETWEEN = """
SELECT meter_id, ts, value, quality::text AS quality FROM readings
WHERE quantity_id = $1 AND ts >= $2 AND ts < $3 AND {meters}
ORDER BY meter_id, ts
"""


# The daily export as CSV rows formatted by the server (COPY): per chosen meter (by id: the order
# export_meters gives, and the one the merge join with the registers yields without a sort)
# and local day $1 … $2, the register at the day's opening midnight and the consumption to the next
# (the next stored register, when it is at the day's end), × the factor, rounded to 6 decimals. The
# registers are read for the chosen meters' id range (a lookup per meter and chunk costs far more),
# one index scan per midnight in the chunk holding it (``OFFSET 0`` keeps that loop): with
# ``ts = ANY(midnights)`` instead, each chunk's scan was repeated for every midnight of the period,
# over the day's intervals too. The join keeps the chosen meters.
_DAILY_CSV = f"""
WITH days AS (
    SELECT n, $1::date + n AS day, ($1::date + n)::timestamp AT TIME ZONE $3 AS lo,
           ($1::date + n + 1)::timestamp AT TIME ZONE $3 AS hi
    FROM generate_series(0, $2::date - $1::date) AS n
), chosen AS MATERIALIZED ({_CHOSEN}), regs AS (
    SELECT r.meter_id, r.ts, r.value, r.quality,
           lead(r.ts) OVER w AS next_ts, lead(r.value) OVER w AS next_value,
           lead(r.quality) OVER w AS next_quality
    FROM (SELECT lo AS at FROM days UNION ALL SELECT max(hi) FROM days) t
    CROSS JOIN LATERAL (
        SELECT r.meter_id, r.ts, r.value, r.quality FROM readings r
        WHERE r.ts = t.at AND r.quantity_id = $6 AND r.value IS NOT NULL
          AND r.meter_id BETWEEN (SELECT min(id) FROM chosen) AND (SELECT max(id) FROM chosen)
        OFFSET 0) r
    WINDOW w AS (PARTITION BY r.meter_id ORDER BY r.ts)
)
SELECT c.meter, c.address, d.day, c.factor AS multiplier,
       trim_scale(round((r.value * c.factor)::numeric, 6)) AS register_kwh,
       coalesce(r.quality::text, 'missing') AS register_quality,
       CASE WHEN r.next_ts = d.hi
            THEN trim_scale(round(((r.next_value - r.value) * c.factor)::numeric, 6)) END AS consumption_kwh,
       CASE WHEN r.next_ts IS DISTINCT FROM d.hi THEN 'missing'
            WHEN r.quality IN ('estimated', 'suspect') THEN r.quality::text
            WHEN r.next_quality IN ('estimated', 'suspect') THEN r.next_quality::text
            ELSE 'valid' END AS consumption_quality
FROM chosen c CROSS JOIN days d
LEFT JOIN regs r ON r.meter_id = c.id AND r.ts = d.lo
ORDER BY c.id, d.lo
"""


@dataclass(frozen=True, slots=True)
class ExportMeter:
    """A meter of the export: its id, how it is named in the export, its register factor."""

    id: int
    name: str
    address: str
    factor: float


async def export_meters(
    conn: asyncpg.Connection,
    first: date,
    last: date,
    zone: str,
    names: Sequence[str] | None,
    area: str | None,
) -> list[ExportMeter]:
    """The meters to export, by id."""
    found = await conn.fetch(_METERS, first, last, zone, list(names) if names else None, area)
    return [ExportMeter(r["id"], r["meter"], r["address"], r["factor"]) for r in found]


async def quantity_id(conn: asyncpg.Connection, name: str) -> int | None:
    """The id of quantity ``name`` (None when nothing of it was ever stored)."""
    found: int | None = await conn.fetchval("SELECT id FROM quantities WHERE name = $1", name)
    return found


def _meters_clause(ids: Sequence[int], first_arg: int) -> tuple[str, list[object]]:
    if len(ids) <= FEW_METERS:
        return f"meter_id = ANY(${first_arg}::int[])", [list(ids)]
    return f"meter_id BETWEEN ${first_arg} AND ${first_arg + 1}", [min(ids), max(ids)]


async def _stream(conn: asyncpg.Connection, query: str, args: list[object]) -> AsyncIterator[asyncpg.Record]:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL jit = off")  # compiling the plan costs more than it saves here
        async for row in conn.cursor(query, *args, prefetch=5000):
            yield row


async def count_meters(
    conn: asyncpg.Connection,
    first: date,
    last: date,
    zone: str,
    names: Sequence[str] | None,
    area: str | None,
) -> int:
    """How many meters :func:`export_meters` would give."""
    found: int = await conn.fetchval(_COUNT, first, last, zone, list(names) if names else None, area)
    return found


async def copy_daily_csv(
    conn: asyncpg.Connection,
    first: date,
    last: date,
    zone: str,
    names: Sequence[str] | None,
    area: str | None,
    quantity: int,
    sink: Callable[[bytes], Awaitable[None]],
) -> None:
    """The daily export of the meters :func:`export_meters` gives, as CSV with a header, formatted
    by the server and streamed to ``sink`` chunk by chunk (nothing of it is held here)."""
    chosen = list(names) if names else None
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL jit = off")
        await conn.execute("SET LOCAL work_mem = '64MB'")  # the window's sort stays in memory longer
        await conn.copy_from_query(
            _DAILY_CSV, first, last, zone, chosen, area, quantity, output=sink, format="csv", header=True
        )


def registers_at(
    conn: asyncpg.Connection, ids: Sequence[int], quantity: int, stamps: Sequence[datetime]
) -> AsyncIterator[asyncpg.Record]:
    """``meter_id, ts, value, quality`` of the readings at ``stamps`` (meters of ``ids``, and with
    many ids others of their id range), by meter id then time."""
    clause, extra = _meters_clause(ids, 3)
    return _stream(conn, _AT.format(meters=clause), [quantity, list(stamps), *extra])


def readings_between(
    conn: asyncpg.Connection, ids: Sequence[int], quantity: int, start: datetime, end: datetime
) -> AsyncIterator[asyncpg.Record]:
    """``meter_id, ts, value, quality`` of the readings in ``[start, end)`` (as :func:`registers_at`)."""
    clause, extra = _meters_clause(ids, 4)
    return _stream(conn, _BETWEEN.format(meters=clause), [quantity, start, end, *extra])


async def export_meters_after(
    conn: asyncpg.Connection, day: date, zone: str, after: int | None, limit: int
) -> list[ExportMeter]:
    """Up to ``limit`` meters of the export of local ``day`` (all meters) with an id above ``after``,
    by id: a keyset page of the integration API."""
    query = _CHOSEN + "AND ($6::int IS NULL OR m.id > $6) ORDER BY m.id LIMIT $7"
    found = await conn.fetch(query, day, day, zone, None, None, after, limit)
    return [ExportMeter(r["id"], r["meter"], r["address"], r["factor"]) for r in found]
