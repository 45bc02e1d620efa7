"""A meter's readings of one quantity over a time range, streamed from a server-side cursor: each
interval with its consumption, or each local day's last value and consumption (``headend readings``);
or one page of the intervals at a time (the console's export, which holds no connection between
pages)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg

_INTERVALS = """
SELECT ts, value, value - lag(value) OVER (ORDER BY ts) AS consumption, quality::text AS quality
FROM readings r JOIN quantities q ON q.id = r.quantity_id
WHERE r.meter_id = $1 AND q.name = $2 AND r.ts >= $3 AND r.ts < $4
ORDER BY ts
"""

_INTERVAL_PAGE = """
SELECT ts, value, value - lag(value, 1, $5::double precision) OVER (ORDER BY ts) AS consumption,
       quality::text AS quality
FROM readings r JOIN quantities q ON q.id = r.quantity_id
WHERE r.meter_id = $1 AND q.name = $2 AND r.ts >= $3 AND r.ts < $4
ORDER BY ts
LIMIT $6
"""

_DAYS = """
SELECT day, last_value AS value, last_value - lag(last_value) OVER (ORDER BY day) AS consumption,
       array_to_string(qualities, '+') AS quality, readings
FROM (
    SELECT (r.ts AT TIME ZONE $5)::date AS day,
           (array_agg(r.value ORDER BY r.ts DESC) FILTER (WHERE r.value IS NOT NULL))[1] AS last_value,
           array_agg(DISTINCT r.quality::text) AS qualities, count(*) AS readings
    FROM readings r JOIN quantities q ON q.id = r.quantity_id
    WHERE r.meter_id = $1 AND q.name = $2 AND r.ts >= $3::timestamptz - interval '1 day' AND r.ts < $4
    GROUP BY 1
) d
ORDER BY day
"""


async def stream_readings(
    conn: asyncpg.Connection,
    meter_id: int,
    quantity: str,
    start: datetime,
    end: datetime,
    *,
    daily_in: str | None = None,
) -> AsyncIterator[asyncpg.Record]:
    """Rows ``ts|day, value, consumption, quality`` in ``[start, end)``, fetched in batches; per day
    in the time zone ``daily_in`` when given (the day before ``start`` only gives the first day's
    consumption and is not yielded)."""
    first_day = None if daily_in is None else start.astimezone(ZoneInfo(daily_in)).date()
    async with conn.transaction():
        if daily_in is None:
            cursor = conn.cursor(_INTERVALS, meter_id, quantity, start, end, prefetch=1000)
        else:
            cursor = conn.cursor(_DAYS, meter_id, quantity, start, end, daily_in, prefetch=1000)
        async for row in cursor:
            if first_day is None or row["day"] >= first_day:
                yield row


async def readings_page(
    conn: asyncpg.Connection,
    meter_id: int,
    quantity: str,
    since: datetime,
    end: datetime,
    previous: float | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to ``limit`` rows ``ts, value, consumption, quality`` of ``[since, end)``, by time: one page
    of the intervals of ``stream_readings``. ``previous`` is the value of the row before ``since`` in
    the whole range (None for the first page, or when that row had none): the first row's consumption
    is taken from it, as the unpaged window would."""
    return list(await conn.fetch(_INTERVAL_PAGE, meter_id, quantity, since, end, previous, limit))
