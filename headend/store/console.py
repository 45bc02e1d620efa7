"""Read-only queries behind the web console's overview, meter and command pages (run under the
reporting login): collection today per channel, meters not read today and why, fee-control state, a
meter's load curve and its consumption per day, week or month, commands filtered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from headend.store.feecontrol import halted_by
from headend.store.plans import custom_plans

Row = dict[str, object]

# Collection today per channel and the meters not read today with why, in one statement: whether
# each meter has a reading today is looked up once (an index probe per meter) and serves both. A
# meter's reason, first match wins: disabled channel, quarantine, open VEE hold, the last
# communication event today (no reply), else not read yet. Rows: each channel (kind 0, by name), then
# the first $3 meters not read (kind 1, by channel and name).
_TODAY = """
WITH m AS MATERIALIZED (
    SELECT m.id, m.name, m.channel_id,
           EXISTS (SELECT 1 FROM readings r WHERE r.meter_id = m.id AND r.ts >= $1 AND r.ts < $2
                      AND r.value IS NOT NULL) AS read
    FROM meters m WHERE m.enabled AND m.removed_at IS NULL
), collection AS (
    SELECT c.name AS channel, c.enabled, count(m.id) AS meters, count(m.id) FILTER (WHERE m.read) AS read
    FROM channels c LEFT JOIN m ON m.channel_id = c.id
    GROUP BY c.id
), not_read AS (
    SELECT m.name, c.name AS channel,
           CASE WHEN NOT c.enabled THEN 'channel_disabled'
                WHEN q.until > now() THEN 'quarantined'
                WHEN EXISTS (SELECT 1 FROM vee_holds h WHERE h.meter_id = m.id AND h.resolved_at IS NULL)
                    THEN 'held'
                WHEN e.kind IS NOT NULL THEN 'no_reply'
                ELSE 'not_read_yet' END AS reason,
           e.occurred_at AS last_error_at
    FROM m
    JOIN channels c ON c.id = m.channel_id
    LEFT JOIN LATERAL (
        SELECT (x.details->>'until')::timestamptz AS until FROM events x
        WHERE x.meter_id = m.id AND x.category = 'comm' AND x.kind IN ('quarantined', 'quarantine_ended')
        ORDER BY x.occurred_at DESC, x.id DESC LIMIT 1) q ON true
    LEFT JOIN LATERAL (
        SELECT x.kind, x.occurred_at FROM events x
        WHERE x.meter_id = m.id AND x.category = 'comm' AND x.kind = 'timeout' AND x.occurred_at >= $1
        ORDER BY x.occurred_at DESC LIMIT 1) e ON true
    WHERE NOT m.read
    ORDER BY c.name, m.name LIMIT $3
)
SELECT 0 AS kind, channel, enabled, meters, read, NULL AS name, NULL AS reason,
       NULL::timestamptz AS last_error_at
FROM collection
UNION ALL
SELECT 1, channel, NULL, NULL, NULL, name, reason, last_error_at FROM not_read
ORDER BY kind, channel, name
"""
_CHANNEL_COLUMNS = ("channel", "enabled", "meters", "read")
_METER_COLUMNS = ("name", "channel", "reason", "last_error_at")

_IN_FLIGHT = """
SELECT state::text AS state, count(*) AS commands,
       count(*) FILTER (WHERE requires_approval AND approved_by IS NULL) AS awaiting_approval
FROM commands WHERE state IN ('pending', 'sent') GROUP BY state ORDER BY state
"""

_OPEN_HOLDS = "SELECT count(*) FROM vee_holds WHERE resolved_at IS NULL"


@dataclass(frozen=True, slots=True)
class Overview:
    """The fleet today: per channel collection, meters not read with why, fee control."""

    collection: list[Row]
    not_read: list[Row]
    halted_by: str | None
    in_flight: list[Row]
    open_holds: int


async def overview(conn: asyncpg.Connection, start: datetime, end: datetime, limit: int = 200) -> Overview:
    """Collection in ``[start, end)`` (today, local) and the fee-control state now."""
    async with custom_plans(conn):
        rows = await conn.fetch(_TODAY, start, end, limit)
        halted = await halted_by(conn)
        in_flight = [dict(r) for r in await conn.fetch(_IN_FLIGHT)]
        holds = int(await conn.fetchval(_OPEN_HOLDS))
    return Overview(
        [{k: r[k] for k in _CHANNEL_COLUMNS} for r in rows if r["kind"] == 0],
        [{k: r[k] for k in _METER_COLUMNS} for r in rows if r["kind"] == 1],
        halted,
        in_flight,
        holds,
    )


# average demand between consecutive energy readings (kW), with the reading before the day for the first
# ($4: a day before $2, given as a value so that a plan for the parameters prunes the partitions or
# chunks outside the range; `$2 - interval` is only known when the statement runs)
_LOAD_CURVE = """
WITH r AS (
    SELECT ts, value, quality::text AS quality FROM readings
    WHERE meter_id = $1 AND quantity_id = (SELECT id FROM quantities WHERE name = 'energy_import_kwh')
      AND ts >= $4 AND ts < $3 AND value IS NOT NULL
), d AS (
    SELECT ts, value, quality,
           (value - lag(value) OVER w) / nullif(extract(epoch FROM ts - lag(ts) OVER w) / 3600, 0) AS kw
    FROM r WINDOW w AS (ORDER BY ts)
)
SELECT ts, value AS kwh, kw, quality FROM d WHERE ts >= $2 ORDER BY ts
"""


@dataclass(frozen=True, slots=True)
class CurveReading:
    """One stored energy reading: the register, the average demand since the reading before it (None
    for the first one ever) and its quality."""

    ts: datetime
    kwh: float
    kw: float | None
    quality: str


async def load_curve(
    conn: asyncpg.Connection, meter_id: int, start: datetime, end: datetime
) -> list[CurveReading]:
    """Each stored energy reading in ``[start, end)``, oldest first."""
    return [
        CurveReading(r["ts"], float(r["kwh"]), None if r["kw"] is None else float(r["kw"]), r["quality"])
        for r in await conn.fetch(_LOAD_CURVE, meter_id, start, end, start - timedelta(days=1))
    ]


# The energy register's growth per local day, week (from Monday) or month, from the hourly aggregate
# (TimescaleDB's continuous aggregate or its native twin): each period's last value less the last
# value of the period just before (None when that one has none). $2 is the start of the period before
# the first one shown, $3 the end of the last one; $4 the station's zone, $5 day | week | month.
_CONSUMPTION = """
WITH p AS (
    SELECT date_trunc($5, h.hour AT TIME ZONE $4) AS period,
           (array_agg(h.last_value ORDER BY h.hour DESC))[1] AS v
    FROM readings_hourly h
    WHERE h.meter_id = $1 AND h.quantity_id = (SELECT id FROM quantities WHERE name = 'energy_import_kwh')
      AND h.hour >= $2 AND h.hour < $3 AND h.last_value IS NOT NULL
    GROUP BY 1
)
SELECT period::date AS start,
       CASE WHEN lag(period) OVER w = period - ('1 ' || $5)::interval THEN v - lag(v) OVER w END AS kwh
FROM p WINDOW w AS (ORDER BY period) ORDER BY period
"""

PERIODS = ("day", "week", "month")


async def consumption(
    conn: asyncpg.Connection, meter_id: int, start: datetime, end: datetime, zone: str, period: str
) -> list[tuple[date, float | None]]:
    """Per local ``period`` (day, week or month) starting in ``[start, end)``: its first day and the
    energy register's growth over it; ``start`` is a period's first local midnight (the period before
    it is read too, for the first one's growth)."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    local = start.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    before = (local - _STEP[period]).replace(day=1) if period == "month" else local - _STEP[period]
    since = before.replace(tzinfo=ZoneInfo(zone))
    rows = await conn.fetch(_CONSUMPTION, meter_id, since, end, zone, period)
    first = local.date()
    return [(r["start"], None if r["kwh"] is None else float(r["kwh"])) for r in rows if r["start"] >= first]


_STEP = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=1)}


_COMMANDS = """
SELECT k.id, m.name AS meter, k.action, k.state::text AS state, k.cause, k.operator, k.approved_by,
       k.requires_approval, k.created_at, k.finished_at, k.last_error
FROM commands k JOIN meters m ON m.id = k.meter_id
WHERE ($1::text IS NULL OR k.state::text = $1) AND ($2::text IS NULL OR m.name = $2 OR m.address = $2)
ORDER BY k.id DESC LIMIT $3
"""


async def commands(
    conn: asyncpg.Connection, state: str | None, meter: str | None, limit: int = 200
) -> list[Row]:
    """Commands, newest first, optionally of one state and one meter (name or address)."""
    return [dict(r) for r in await conn.fetch(_COMMANDS, state, meter, limit)]


_COMMAND = """
SELECT k.id, m.name AS meter, m.address, k.action, k.state::text AS state, k.cause, k.operator,
       k.approved_by, k.requires_approval, k.created_at, k.sent_at, k.finished_at, k.attempts,
       k.last_error, k.evidence::text AS evidence
FROM commands k JOIN meters m ON m.id = k.meter_id WHERE k.id = $1
"""


async def command(conn: asyncpg.Connection, command_id: int) -> Row | None:
    """One command with its meter's name and its evidence (JSON text)."""
    row = await conn.fetchrow(_COMMAND, command_id)
    return None if row is None else dict(row)
